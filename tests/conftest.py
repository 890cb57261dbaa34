"""Every test process sees 8 CPU devices, so sharded meshes can be tested on one CPU.

The tests install libtpu (compile.py compiles for TPU slices), and JAX would then try to
open a TPU at start-up, in this process and every one it starts: JAX_PLATFORMS=cpu keeps
them on the CPU. ``tests/test_compile.py`` checks the entry points need no such setting.
"""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_num_cpu_devices', 8)
