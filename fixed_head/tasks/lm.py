"""Language modelling: next-token cross entropy (the paper's LM1B task, and the embedded
synthetic language, whose rows also carry the Bayes-optimal loss)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from flax import nnx

from fixed_head.nn import TransformerLM
from fixed_head.tasks import losses
from fixed_head.tasks.base import Array, Task, safe_count


class LanguageModelling(Task):
  """Batch: tokens [b, n] (and optionally segment_ids, positions, optimal_nll [b, n]).

  Trains on the (label-smoothed, with ``config.label_smoothing``) next-token cross entropy;
  reports the plain nll as ``loss``, ``accuracy``, and on the synthetic language
  ``gap_to_optimal`` (loss - the optimal loss of the same targets).
  """

  NAME = 'lm'
  MODEL_TYPE = 'lm'
  PROGRESS = ('loss', 'gap_to_optimal')

  def __init__(self, options, model_config, *, label_smoothing: float = 0.0):
    super().__init__(options, model_config)
    self.label_smoothing = label_smoothing

  def build_model(self, rngs: nnx.Rngs) -> TransformerLM:
    return TransformerLM(self.model_config, rngs=rngs)

  def stats(self, model, batch, *, deterministic=True, rngs=None):
    logits = model(batch['tokens'], positions=batch.get('positions'),
                   segment_ids=batch.get('segment_ids'), deterministic=deterministic, rngs=rngs)
    smoothing = 0.0 if deterministic else self.label_smoothing
    return losses.next_token_stats(logits, batch, label_smoothing=smoothing)

  def objective(self, stats):
    return stats.get('smoothed_sum', stats['nll_sum']) / safe_count(stats['weight_sum'])

  def metrics(self, stats: Mapping[str, Array]) -> dict[str, Array]:
    count = safe_count(stats['weight_sum'])
    loss = stats['nll_sum'] / count  # the plain nll, comparable with every evaluation
    metrics = {'loss': loss, 'accuracy': stats['correct_sum'] / count}
    if 'optimal_nll_sum' in stats:
      metrics['gap_to_optimal'] = loss - stats['optimal_nll_sum'] / count
    return metrics

  def eval_metrics(self, totals):
    count = totals['weight_sum']
    loss = totals['nll_sum'] / count
    result = {'loss': loss, 'perplexity': math.exp(min(loss, 700.0)),
              'accuracy': totals['correct_sum'] / count, 'num_tokens': int(count)}
    if 'optimal_nll_sum' in totals:
      result['optimal_loss'] = totals['optimal_nll_sum'] / count
      result['gap_to_optimal'] = loss - result['optimal_loss']
    return result

  def predict(self, model, batch):
    return {'logits': model(batch['tokens'], positions=batch.get('positions'),
                            segment_ids=batch.get('segment_ids'))}
