"""SQuAD v1.1 exact match and F1: answers extracted from the model's start/end logits over
every window of every question, scored with the official normalisation."""

from __future__ import annotations

import jax
import numpy as np

from fixed_head.data import squad as squad_data
from fixed_head.errors import UsageError
from fixed_head.evaluators.common import TaskEvaluator, add_sums, on_mesh


class SquadEvaluator(TaskEvaluator):
  """Options (besides the common ones): max_answer_length (30 tokens), n_best (20 start
  and end candidates per window), as Google BERT's run_squad.py. ``num_examples`` counts
  windows (features), so leave it None to score whole questions.

  Result: exact_match and f1 (percent, ``fixed_head.metrics.squad_v1_scores``), loss (the
  span cross entropy where the answer lies in the window), num_questions.
  """

  TASKS = ('span_qa',)
  OPTIONS = {**TaskEvaluator.OPTIONS, 'type': 'squad', 'max_answer_length': 30, 'n_best': 20}

  @classmethod
  def check_options(cls, prefix, spec, task_name):
    super().check_options(prefix, spec, task_name)
    for field in ('max_answer_length', 'n_best'):
      value = spec.get(field, cls.OPTIONS[field])
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f'{prefix}.{field}={value!r}: must be a positive integer.')

  def __init__(self, spec, data_config, task, model_of, put_batch, **kwargs):
    super().__init__(spec, data_config, task, model_of, put_batch, **kwargs)
    if not hasattr(self.source, 'examples'):
      raise UsageError(f'evaluator type squad reads data.name={data_config.get("name")!r}, '
                       "which keeps no questions and answers; use data.name='squad'.")

    def predict(params, batch):
      """Logits, the span loss sums from them, and the rows' weight and feature_index."""
      out = task.predict(model_of(params), batch)
      return {**out, 'weight': batch['weight'], 'feature_index': batch['feature_index'],
              'stats': task.span_stats(out['start_logits'], out['end_logits'], batch)}

    # Every array comes back whole to every process (replicated), which extracts answers.
    self._predict = jax.jit(on_mesh(predict, self.mesh), out_shardings=self.replicated)

  def __call__(self, params):
    starts, ends, features, totals = [], [], [], {}
    for local in self.batches():
      out = self._predict(params, self.put_batch(local))
      add_sums(totals, out.pop('stats'))
      out = jax.device_get(out)
      keep = out['weight'] > 0  # not the copies that pad a last batch
      starts.append(out['start_logits'][keep])
      ends.append(out['end_logits'][keep])
      features.append(out['feature_index'][keep])
    if not features:
      raise UsageError(f'evaluator on split {self.split!r}: the split holds no rows.')
    features = np.concatenate(features)
    result = squad_data.squad_scores(
        self.source, np.concatenate(starts), np.concatenate(ends), features,
        max_answer_length=self.options['max_answer_length'], n_best=self.options['n_best'])
    result['loss'] = self.task.eval_metrics(totals)['loss']
    result['num_questions'] = len(self.source.gold_answers(features))
    result['num_rows'] = len(features)
    return result
