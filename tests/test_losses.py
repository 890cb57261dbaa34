"""fixed_head/tasks/losses.py: the target-position bins, the LM evaluator's loss by position
against a float64 NumPy count over the same rows, tensor2tensor's label smoothing, and
is_argmax (accuracy without an argmax), equal to argmax with ties included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixed_head import errors, evaluators, tasks
from fixed_head.config import ModelConfig
from fixed_head.tasks import losses
from fixed_head.train import run_config

import repo_configs


def test_default_bins_are_powers_of_two_up_to_the_last_target():
  assert losses.position_bins(64) == (1, 2, 4, 8, 16, 32)
  assert losses.position_bin_labels((1, 2, 4, 8, 16, 32), 64) == (
      '1', '2-3', '4-7', '8-15', '16-31', '32-63')
  assert losses.position_bins(9) == (1, 2, 4, 8)  # t = 1 ... 8: the last bin is '8'
  assert losses.position_bin_labels((1, 2, 4, 8), 9)[-1] == '8'
  assert losses.position_bin_labels((1, 8, 32), 64) == ('1-7', '8-31', '32-63')


@pytest.mark.parametrize('edges', [(), (0, 4), (2, 4), (1, 4, 4), (1, 64), (1, 2.5), (True,)])
def test_bad_bins_are_refused(edges):
  with pytest.raises(ValueError, match='lower edges'):
    losses.position_bins(64, edges)


def test_position_sums_bin_each_target_by_the_keys_its_query_sees():
  """Packed rows: a target's position is its position in its document, not in the row."""
  positions = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5]])
  batch = {'tokens': np.zeros((1, 10), np.int32), 'positions': positions}
  t = losses.target_positions(batch)
  np.testing.assert_array_equal(t, [[1, 2, 3, 0, 1, 2, 3, 4, 5]])
  nll = np.arange(1.0, 10.0)[None]
  weights = (t > 0).astype(np.float32)  # the document boundary counts nothing
  sums = losses.position_sums(nll, weights, t, (1, 2, 4))
  # bins 1 (t = 1: nll 1, 5), 2-3 (t = 2, 3: nll 2, 3, 6, 7), 4+ (t = 4, 5: nll 8, 9)
  np.testing.assert_allclose(sums['nll_by_position'], [6.0, 18.0, 17.0])
  np.testing.assert_allclose(sums['weight_by_position'], [2.0, 4.0, 2.0])
  unpacked = losses.target_positions({'tokens': np.zeros((2, 4), np.int32)})
  np.testing.assert_array_equal(unpacked, [[1, 2, 3]] * 2)


def text_config(tmp_path):
  """A byte-level LM config on three short files, one document a line, packed rows of 16."""
  lines = ['the cat sat on the mat', 'a dog', 'to be or not to be, that is the question',
           'ab', 'we few, we happy few']
  for i in range(3):
    (tmp_path / f'{i}.txt').write_text('\n'.join(lines[i:] + lines[:i]) + '\n')
  config = repo_configs.load('shakespeare').get_config()
  config.data.update(dict(files=str(tmp_path / '*.txt'), doc_per='line', seq_len=16,
                          eval_fraction=0.34))
  return config


def test_lm_evaluator_reports_the_loss_by_position_of_the_same_targets(tmp_path):
  config = text_config(tmp_path)
  task = tasks.build_task(config, ModelConfig(vocab_size=259))
  rng = np.random.default_rng(0)
  table = rng.normal(size=(259, 259)).astype(np.float32)  # logits: a fixed bigram predictor

  def model_of(_):
    return lambda tokens, **_: jax.numpy.asarray(table)[tokens]

  evaluator = evaluators.LMEvaluator(
      dict(type='lm', split='eval', batch_size=4, position_bins=[1, 2, 4, 8]), config.data,
      task, model_of, lambda b: b)
  result = evaluator(None)
  rows = evaluator.source.get_batch(np.arange(len(evaluator.source)))
  assert 'positions' in rows and np.any(rows['positions'][:, 1:] == 0)  # packed documents
  log_probs = table.astype(np.float64) - np.log(np.exp(table.astype(np.float64)).sum(
      -1, keepdims=True))
  sums, counts = np.zeros(4), np.zeros(4)
  for r in range(len(rows['tokens'])):
    tok, seg, pos = rows['tokens'][r], rows['segment_ids'][r], rows['positions'][r]
    for i in range(1, 16):
      if seg[i] > 0 and seg[i] == seg[i - 1]:
        k = 3 if pos[i] >= 8 else 2 if pos[i] >= 4 else 1 if pos[i] >= 2 else 0
        sums[k] -= log_probs[tok[i - 1], tok[i]]
        counts[k] += 1
  labels = ('1', '2-3', '4-7', '8-15')
  assert [result[f'tokens_by_position/{b}'] for b in labels] == list(counts)
  np.testing.assert_allclose([result[f'loss_by_position/{b}'] for b in labels], sums / counts,
                             rtol=1e-5)
  assert sum(counts) == result['num_tokens']
  np.testing.assert_allclose(result['loss'], sums.sum() / counts.sum(), rtol=1e-5)


@pytest.mark.parametrize('bins', ['powers', [0, 4], [1, 1], 3])
def test_a_bad_position_bins_option_is_one_line_naming_the_field(bins):
  config = run_config.defaults()
  config.evals.valid = dict(type='lm', split='eval', num_examples=8, position_bins=bins)
  with pytest.raises(errors.UsageError, match=r'^config\.evals\.valid\.position_bins='):
    run_config.validate(config)


def test_bins_past_the_row_are_refused_when_the_evaluator_is_built(tmp_path):
  config = text_config(tmp_path)
  task = tasks.build_task(config, ModelConfig(vocab_size=259))
  with pytest.raises(errors.UsageError, match='stay below the row length 16'):
    evaluators.LMEvaluator(dict(type='lm', split='eval', position_bins=[1, 16]), config.data,
                           task, lambda _: None, lambda b: b)


def test_label_smoothing_is_tensor2tensors():
  log_probs = jax.nn.log_softmax(jnp.array([[0.5, -1.0, 2.0, 0.0]]))
  got = losses.smoothed_cross_entropy(log_probs, jnp.array([2]), 0.1)
  lp = np.asarray(log_probs[0], np.float64)
  expected = -(0.9 * lp[2] + 0.1 / 3 * (lp[0] + lp[1] + lp[3]))
  assert float(got[0]) == pytest.approx(expected, rel=1e-6)


def test_is_argmax_equals_argmax_including_ties():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 50)).astype(np.float32)
  logits[:8] = 0.0  # all tied: only label 0 is the argmax
  logits[8:16, 3] = logits[8:16, 7] = 9.0  # a tie for the max between 3 and 7: 3 wins
  labels = rng.integers(0, 50, 64)
  labels[:4] = 0
  labels[8:12], labels[12:16] = 3, 7
  labels[16:32] = np.argmax(logits[16:32], -1)  # right by construction
  got = np.asarray(losses.is_argmax(jnp.asarray(logits), jnp.asarray(labels)))
  np.testing.assert_array_equal(got, np.argmax(logits, -1) == labels)
  assert got[:4].all() and not got[4:8].any() and got[8:12].all() and not got[12:16].any()
  assert got[16:32].all()


def test_is_argmax_keeps_leading_axes():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 11))
  labels = jnp.argmax(logits, -1).at[0, 0].set(0)
  np.testing.assert_array_equal(losses.is_argmax(logits, labels),
                                jnp.argmax(logits, -1) == labels)
