"""fixed_head: multi-head attention with a head size chosen on its own (Bhojanapalli et al., 2020).

The paper's library: ``config`` (ModelConfig), ``nn`` (attention with a free head size d_p,
the LM1B Transformer, the BERT encoder and heads), ``accounting`` (parameters, FLOPs),
``theory`` (Theorem 1, the witnesses, the expressivity probe), ``paper`` (the paper's setups),
``metrics``, ``sampling`` (greedy / temperature sampling from the LM).
Around it: ``tasks``, ``evaluators``, ``data``, ``train`` (trainer, run configs, checkpoints,
sharding, ...) and ``experiments`` (sweeps, the report, the theory figures).
"""

__all__ = ['ModelConfig']


def __getattr__(name: str):
  # Imported on first use, so that ``fixed_head.host`` can run before JAX is imported.
  if name == 'ModelConfig':
    from fixed_head.config import ModelConfig  # pylint: disable=g-import-not-at-top
    return ModelConfig
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
