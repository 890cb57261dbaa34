"""Every test process sees 8 CPU devices, so sharded meshes can be tested on one CPU."""

import jax

jax.config.update('jax_num_cpu_devices', 8)
