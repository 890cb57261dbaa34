"""Language modelling: next-token cross entropy (the paper's LM1B task, and the embedded
synthetic language, whose rows also carry the Bayes-optimal loss)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from flax import nnx

from fixed_head.errors import UsageError
from fixed_head.nn import TransformerLM
from fixed_head.tasks import losses
from fixed_head.tasks.base import Array, Task, safe_count


class LanguageModelling(Task):
  """Batch: tokens [b, n] (and optionally segment_ids, positions, optimal_nll [b, n]).

  Option ``label_smoothing`` (``config.task.label_smoothing``; tensor2tensor: 0.1): the
  objective training minimises is the cross entropy against targets smoothed by that much,
  logged as ``objective``. What is reported, in training and every evaluation, is the plain
  nll as ``loss``, ``accuracy``, and on the synthetic language ``gap_to_optimal`` (loss -
  the optimal loss of the same targets).
  """

  NAME = 'lm'
  MODEL_TYPE = 'lm'
  OPTIONS = {'label_smoothing': 0.0}
  PROGRESS = ('loss', 'gap_to_optimal')

  @classmethod
  def check_options(cls, options):
    super().check_options(options)
    smoothing = options.get('label_smoothing', cls.OPTIONS['label_smoothing'])
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not (
        0.0 <= smoothing < 1.0):
      raise UsageError(f'config.task.label_smoothing={smoothing!r}: must lie in [0, 1).')

  def build_model(self, rngs: nnx.Rngs) -> TransformerLM:
    return TransformerLM(self.model_config, rngs=rngs, attention_op=self.attention_op)

  def stats(self, model, batch, *, deterministic=True, rngs=None, position_edges=None):
    """The sums of ``losses.next_token_stats``; with ``position_edges`` also per
    target-position bin (what the LM evaluator reports)."""
    logits = model(batch['tokens'], positions=batch.get('positions'),
                   segment_ids=batch.get('segment_ids'), deterministic=deterministic, rngs=rngs)
    return losses.next_token_stats(logits, batch,
                                   label_smoothing=self.options['label_smoothing'],
                                   position_edges=position_edges)

  def objective(self, stats):
    """The smoothed cross entropy (``smoothed_sum``, present when label_smoothing > 0), else
    the nll, per counted token."""
    return stats.get('smoothed_sum', stats['nll_sum']) / safe_count(stats['weight_sum'])

  def metrics(self, stats: Mapping[str, Array]) -> dict[str, Array]:
    count = safe_count(stats['weight_sum'])
    loss = stats['nll_sum'] / count  # the plain nll, comparable with every evaluation
    metrics = {'loss': loss, 'accuracy': stats['correct_sum'] / count}
    if 'smoothed_sum' in stats:  # what is minimised, when it is not the loss
      metrics['objective'] = self.objective(stats)
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
