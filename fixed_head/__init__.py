"""fixed_head: multi-head attention with a head size chosen on its own (Bhojanapalli et al., 2020).

Library: ``config`` (ModelConfig), ``attention`` (MultiHeadAttention, masks, the core
product), ``models`` (TransformerLM, BERT), ``accounting`` (parameters, FLOPs), ``theory``
(Theorem 1 and the low-rank witness as code), ``paper`` (the paper's setups).
Training: ``trainer`` (train_and_evaluate, evaluate), ``run_config`` (run config defaults
and validation), ``data``, ``sharding``, ``optim``, ``losses``, ``evaluators``,
``checkpoints``, ``metric_writer``, ``launch``.
"""

from fixed_head.config import ModelConfig

__all__ = ['ModelConfig']
