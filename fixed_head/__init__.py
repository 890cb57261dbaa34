"""fixed_head: multi-head attention with a head size chosen on its own (Bhojanapalli et al., 2020).

The paper's library: ``config`` (ModelConfig), ``nn`` (attention with a free head size d_p,
the LM1B Transformer, the BERT encoder and heads), ``accounting`` (parameters, FLOPs),
``theory`` (Theorem 1, the witnesses, the expressivity probe), ``paper`` (the paper's setups),
``metrics``, ``sampling`` (greedy / temperature sampling from the LM).
Around it: ``tasks``, ``evaluators``, ``data``, ``train`` (trainer, run configs, checkpoints,
sharding, ...) and ``experiments`` (sweeps, the report, the theory figures).
"""

from fixed_head import platforms
from fixed_head.config import ModelConfig

# libtpu installed (for compiling to TPU slices) but no TPU here: JAX stays on the CPU
# instead of printing libtpu's errors. A platform the user chose is never overridden.
platforms.skip_absent_tpu()

__all__ = ['ModelConfig']
