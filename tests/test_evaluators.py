"""fixed_head/evaluators/common.py: the LM evaluator scores the whole split (or num_examples
rows of it), whatever its batch size, padding the last batch."""

import jax
import numpy as np

from fixed_head import evaluators, tasks
from fixed_head.config import ModelConfig
from fixed_head.tasks import losses

from test_train import tiny_config


def test_whole_split_is_scored_whatever_the_batch_size():
  data = tiny_config().data

  def logits(batch):  # a fixed predictor: the loss depends only on which tokens are scored
    return jax.nn.one_hot(batch['tokens'], 8) * 2.0

  def model_of(_):  # the LM task calls model(tokens, positions=..., segment_ids=..., ...)
    return lambda tokens, **_: logits({'tokens': tokens})

  task = tasks.build_task(tiny_config(), ModelConfig())

  def evaluate(batch_size, **spec):
    evaluator = evaluators.LMEvaluator(dict(type='lm', split='eval', batch_size=batch_size,
                                            **spec), data, task, model_of, lambda b: b)
    return evaluator(None), evaluator.source

  whole, source = evaluate(70, num_examples=70)
  assert whole['num_rows'] == 70 and whole['num_tokens'] == 70 * 7
  padded, _ = evaluate(16, num_examples=70)  # 4 whole batches and one of 6 rows, padded
  assert padded['num_rows'] == 70 and padded['num_tokens'] == whole['num_tokens']
  np.testing.assert_allclose(padded['loss'], whole['loss'], rtol=1e-5)  # f32 sums
  rows = source.get_batch(np.arange(70))
  expected = losses.next_token_stats(logits(rows), rows)
  np.testing.assert_allclose(whole['loss'], expected['nll_sum'] / expected['weight_sum'],
                             rtol=1e-6)
  everything, source = evaluate(2048)  # num_examples absent: the whole split
  assert everything['num_rows'] == len(source) == 10_000
