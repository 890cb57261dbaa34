"""Evaluators chosen by the config, as in big_vision: ``config.evals = {name: {type, ...}}``.

The same evaluators run during training (every ``eval_every_steps``) and in ``eval.py``.
Each one is built once (its step is compiled once) and then called with parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax

from fixed_head import data as data_lib
from fixed_head import losses
from fixed_head.errors import UsageError


class LMEvaluator:
  """Next-token loss, perplexity and accuracy on one deterministic pass over a split; on
  the synthetic language also the optimal loss and the gap to it (loss - optimal_loss).

  Options: split ('eval'), num_examples (rows scored; None, the default, scores the whole
  split), batch_size (global; a last partial batch is padded with rows that count nothing).
  The result says how many tokens (``num_tokens``) in how many rows (``num_rows``) it scored.
  """

  OPTIONS = {'type': 'lm', 'split': 'eval', 'num_examples': None, 'batch_size': 64}

  @classmethod
  def check_options(cls, prefix: str, spec: Mapping[str, Any]) -> None:
    unknown = sorted(set(spec) - set(cls.OPTIONS))
    if unknown:
      raise UsageError(f'{prefix}: unknown option(s) {unknown}; known: {sorted(cls.OPTIONS)}.')
    for field in ('num_examples', 'batch_size'):
      value = spec.get(field, cls.OPTIONS[field])
      if field == 'num_examples' and value is None:
        continue
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f'{prefix}.{field}={value!r}: must be a positive integer'
                         + (' (or None: the whole split).' if field == 'num_examples' else '.'))

  def __init__(self, spec: Mapping[str, Any], data_config: Mapping[str, Any],
               logits_fn: Callable, put_batch: Callable, *, workdir: str | None = None,
               process_index: int = 0, process_count: int = 1):
    """logits_fn(params, batch) -> [b, n, V]; put_batch(local numpy batch) -> global arrays."""
    options = {**self.OPTIONS, **dict(spec)}
    self.split = options['split']
    self.batch_size = options['batch_size']
    self.num_examples = options['num_examples']
    self.source = data_lib.build_source(data_config, self.split,
                                        num_examples=self.num_examples, workdir=workdir)
    self.put_batch = put_batch
    self.process_index, self.process_count = process_index, process_count
    self._stats = jax.jit(lambda params, batch: losses.next_token_stats(
        logits_fn(params, batch), batch))

  def __call__(self, params) -> dict[str, float]:
    totals: dict[str, float] = {}
    for local in data_lib.eval_batches(self.source, self.batch_size, self.num_examples,
                                       process_index=self.process_index,
                                       process_count=self.process_count):
      stats = jax.device_get(self._stats(params, self.put_batch(local)))
      for key, value in stats.items():
        totals[key] = totals.get(key, 0.0) + float(value)
    if not totals:
      raise UsageError(f'evaluator on split {self.split!r}: the split holds no rows.')
    count = totals['weight_sum']
    loss = totals['nll_sum'] / count
    result = {
        'loss': loss,
        'perplexity': math.exp(min(loss, 700.0)),
        'accuracy': totals['correct_sum'] / count,
        'num_tokens': int(count),
        'num_rows': data_lib.num_eval_rows(self.source, self.num_examples),
    }
    if 'optimal_nll_sum' in totals:
      result['optimal_loss'] = totals['optimal_nll_sum'] / count
      result['gap_to_optimal'] = loss - result['optimal_loss']
    return result


EVALUATORS: dict[str, type] = {
    'lm': LMEvaluator,
}


def build_evaluators(config, logits_fn: Callable, put_batch: Callable, *,
                     workdir: str | None = None, process_index: int = 0,
                     process_count: int = 1) -> dict[str, Any]:
  """One evaluator per entry of ``config.evals``."""
  return {
      name: EVALUATORS[spec['type']](spec, config.data, logits_fn, put_batch, workdir=workdir,
                                     process_index=process_index, process_count=process_count)
      for name, spec in config.evals.items()
  }
