"""What a task gives the trainer: its model, the sums a batch contributes, and the numbers
reported from those sums.

One trainer runs every task (``fixed_head.train.trainer``). A task object, built from
``config.task`` and ``config.model``, supplies:

  build_model(rngs)                    the nnx module (its encoder, if any, under ``encoder``),
                                       its attention calling ``attention_op`` if one is given
  stats(model, batch, deterministic, rngs) -> {name: sum over the batch}   (jit-able)
  objective(stats)                     the scalar training minimises (weight decay is the
                                       optimizer's, ``fixed_head.train.optim``)
  metrics(stats)                       what is logged for a training step
  eval_metrics(totals)                 what an evaluation reports from stats summed over a split

Stats are sums, never means, so an evaluation adds them over batches (and processes) and
divides once. Rows a task must not count carry zero weight: ``weight`` 0 (BERT rows) or
``segment_ids`` 0 (LM rows), which is how ``fixed_head.data.eval_batches`` pads a last
partial batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
from flax import nnx

from fixed_head.config import ModelConfig
from fixed_head.errors import UsageError
from fixed_head.nn.attention_op import AttentionOp

Array = jax.Array


class Task:
  """Base class; see the module docstring. Subclasses set the class attributes."""

  NAME: ClassVar[str]
  MODEL_TYPE: ClassVar[str]  # config.model.model_type this task trains
  OPTIONS: ClassVar[dict[str, Any]] = {}  # config.task options (besides 'name') and defaults
  # Parameter subtrees that --config.init_from loads from a pre-trained run; None = all.
  PRETRAINED: ClassVar[tuple[str, ...] | None] = None
  BATCH_KEYS: ClassVar[tuple[str, ...]] = ('tokens',)  # a batch must hold these
  PROGRESS: ClassVar[tuple[str, ...]] = ('loss',)  # train metrics on the progress line

  def __init__(self, options: Mapping[str, Any], model_config: ModelConfig,
               attention_op: AttentionOp | None = None):
    self.options = {**self.OPTIONS, **{k: v for k, v in options.items() if k != 'name'}}
    self.model_config = model_config
    self.attention_op = attention_op  # None: each model makes its own from model_config

  @classmethod
  def check_options(cls, options: Mapping[str, Any]) -> None:
    """Raises UsageError naming ``config.task.<field>`` for an unknown or bad option."""
    unknown = sorted(set(options) - set(cls.OPTIONS) - {'name'})
    if unknown:
      raise UsageError(f'config.task: unknown option(s) {unknown} for task {cls.NAME!r}; '
                       f'known: {sorted(cls.OPTIONS) or "none"}.')

  def check_source(self, source, where: str = 'config.data') -> None:
    """Raises UsageError when ``source`` (a data source) cannot feed this task; reads no
    rows (see ``check_batch`` for the keys of the first batch)."""

  def check_batch(self, batch: Mapping[str, Any], where: str = 'config.data') -> None:
    """Raises UsageError when a batch lacks what this task reads."""
    missing = [k for k in self.BATCH_KEYS if k not in batch]
    if missing:
      raise UsageError(f'{where} gives rows without {missing}, which task {self.NAME!r} '
                       f'needs (they have {sorted(batch)}); choose a data source made for '
                       'this task.')

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    raise NotImplementedError

  def stats(self, model: nnx.Module, batch: Mapping[str, Array], *, deterministic: bool = True,
            rngs: nnx.Rngs | None = None) -> dict[str, Array]:
    raise NotImplementedError

  def objective(self, stats: Mapping[str, Array]) -> Array:
    raise NotImplementedError

  def metrics(self, stats: Mapping[str, Array]) -> dict[str, Array]:
    raise NotImplementedError

  def eval_metrics(self, totals: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in self.metrics(totals).items()}

  def predict(self, model: nnx.Module, batch: Mapping[str, Array]) -> dict[str, Array]:
    """The model's outputs an evaluator post-processes (deterministic)."""
    raise NotImplementedError(f'task {self.NAME!r} has no predict function.')


def safe_count(weight_sum):
  """A denominator that is never 0 (a batch that counts nothing reports 0, not NaN)."""
  return jax.numpy.maximum(weight_sum, 1.0)
