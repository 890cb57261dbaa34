"""The embedded copy language: determinism, the matrix A, exact optimal loss, statistics, errors."""

import math

import numpy as np
import pytest

from fixed_head.data.synthetic import SyntheticCopyLM

N, V, M, K = 32, 32, 16, 8


def make(split='train', **kw):
  args = dict(split=split, seq_len=N, vocab_size=V, copy_prob=0.95, concentration=math.inf,
              language_seed=0, memory_len=M, support=K)
  args.update(kw)
  return SyntheticCopyLM(**args)


def brute_force_nll(tokens, a, copy_prob, vocab_size, memory_len):
  """-log p_opt(x_i | x_<i), one position and one earlier token at a time."""
  out = []
  for i, token in enumerate(tokens):
    if i < memory_len:
      p = 1.0 / vocab_size
    else:
      copy_mass = sum(a[i, j] for j in range(i) if tokens[j] == token)
      p = (1.0 - copy_prob) / vocab_size + copy_prob * copy_mass
    out.append(-math.log(p))
  return np.array(out)


def next_token_nll(probs_of_next, tokens):
  """Cross-entropy the way an LM is scored: probs_of_next[:, i] predict tokens[:, i + 1]."""
  picked = np.take_along_axis(probs_of_next[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
  return -np.log(picked)


def test_examples_are_deterministic_and_independent_of_other_indices():
  ds, again = make(), make()
  for index in (0, 1, 12345, 2**31 - 2):
    a, b = ds[index], again[index]
    np.testing.assert_array_equal(a['tokens'], b['tokens'])
    np.testing.assert_array_equal(a['optimal_nll'], b['optimal_nll'])
  batch = ds.get_batch([7, 3, 7, 10**9])
  np.testing.assert_array_equal(batch['tokens'][0], batch['tokens'][2])
  for row, index in enumerate([7, 3, 7, 10**9]):
    np.testing.assert_array_equal(batch['tokens'][row], ds[index]['tokens'])
    np.testing.assert_array_equal(batch['optimal_nll'][row], ds[index]['optimal_nll'])
  assert not np.array_equal(ds[0]['tokens'], ds[1]['tokens'])


def test_seeds_and_splits_differ_but_splits_share_the_language():
  train, evals, other = make('train'), make('eval'), make('train', language_seed=1)
  tokens = lambda ds: ds.get_batch(range(64))['tokens']
  assert np.mean(tokens(train) != tokens(evals)) > 0.5
  assert np.mean(tokens(train) != tokens(other)) > 0.5
  np.testing.assert_array_equal(train.context_matrix(), evals.context_matrix())
  assert not np.array_equal(train.context_matrix(), other.context_matrix())
  # num_examples does not change the language or the examples.
  small = make('eval', num_examples=10)
  np.testing.assert_array_equal(small.get_batch(range(10))['tokens'],
                                evals.get_batch(range(10))['tokens'])


def test_shapes_dtypes_ranges_and_lengths():
  ds = make()
  example = ds[5]
  assert set(example) == {'tokens', 'optimal_nll'}
  assert example['tokens'].shape == (N,) and example['tokens'].dtype == np.int32
  assert example['optimal_nll'].shape == (N,) and example['optimal_nll'].dtype == np.float32
  batch = ds.get_batch(np.arange(100))
  assert batch['tokens'].shape == (100, N) and batch['tokens'].dtype == np.int32
  assert batch['optimal_nll'].shape == (100, N) and batch['optimal_nll'].dtype == np.float32
  assert batch['tokens'].min() == 0 and batch['tokens'].max() == V - 1  # every id is a symbol
  np.testing.assert_allclose(batch['optimal_nll'][:, 0], math.log(V), rtol=1e-6)
  assert (ds.seq_len, ds.vocab_size) == (N, V)
  assert len(ds) == 2**31 - 1 and len(make('eval')) == 10_000
  assert len(make('eval', num_examples=7)) == 7
  defaults = SyntheticCopyLM(split='train', seq_len=20, vocab_size=8, copy_prob=0.9,
                             concentration=1.0, language_seed=3)
  assert (defaults.memory_len, defaults.support) == (10, 5)


@pytest.mark.parametrize('concentration', [math.inf, 1.0, 0.05])
def test_rows_of_a_are_distributions_over_earlier_memory_positions(concentration):
  a = make(concentration=concentration, language_seed=4).context_matrix()
  assert a.shape == (N, N) and a.dtype == np.float64
  assert np.all(a >= 0)
  np.testing.assert_array_equal(a[:M], 0.0)  # the memory is uniform, copies nothing
  np.testing.assert_allclose(a[M:].sum(axis=1), 1.0, atol=1e-12)
  np.testing.assert_array_equal(np.triu(a), 0.0)  # only earlier positions j < i
  np.testing.assert_array_equal(a[:, M:], 0.0)  # and only memory positions j < m
  support = (a[M:] > 0).sum(axis=1)
  assert np.all(support <= K) and np.all(support >= 1)
  if math.isinf(concentration):
    np.testing.assert_array_equal(support, K)
    np.testing.assert_allclose(a[M:][a[M:] > 0], 1.0 / K)
  # Different rows read different subsets (an arbitrary matrix, not one shared pattern).
  assert len({tuple(np.flatnonzero(row)) for row in a[M:]}) > (N - M) // 2
  if concentration == 0.05:  # small concentration: sharp rows
    assert np.median(a[M:].max(axis=1)) > 0.6


def test_optimal_nll_matches_brute_force_from_a():
  for kw in (dict(), dict(concentration=0.5, copy_prob=0.7, language_seed=9, vocab_size=5)):
    ds = make(**kw)
    a = ds.context_matrix()
    batch = ds.get_batch([0, 1, 2, 99, 4242])
    for tokens, nll in zip(batch['tokens'], batch['optimal_nll']):
      expected = brute_force_nll(tokens.tolist(), a, ds.copy_prob, ds.vocab_size, ds.memory_len)
      np.testing.assert_allclose(nll, expected, rtol=1e-6)
    probs = ds.optimal_probs(batch['tokens'])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-12)
    picked = np.take_along_axis(probs, batch['tokens'][..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(-np.log(picked), batch['optimal_nll'], rtol=1e-6)


@pytest.mark.parametrize('copy_prob', [0.95, 0.6])
def test_copy_statistics_match_copy_prob_and_a(copy_prob):
  """P(x_i = x_j) = c A[i, j] + (1 - c A[i, j]) / V for a copy row i and a memory position j."""
  ds = make(copy_prob=copy_prob, concentration=1.0, language_seed=2)
  a = ds.context_matrix()[M:, :M]
  tokens = ds.get_batch(range(20_000))['tokens']
  freq = (tokens[:, M:, None] == tokens[:, None, :M]).mean(axis=0)  # [n - m, m]
  expected = copy_prob * a + (1.0 - copy_prob * a) / V
  z = (freq - expected) / np.sqrt(expected * (1.0 - expected) / len(tokens))
  assert np.abs(z).max() < 5.0
  # The copy rate itself, estimated from all pairs at once.
  copy_rate = ((freq - 1.0 / V) * a).sum() / ((a * a) * (1.0 - 1.0 / V)).sum()
  assert abs(copy_rate - copy_prob) < 0.01
  # Memory tokens are uniform and independent of each other.
  counts = np.bincount(tokens[:, :M].ravel(), minlength=V) / tokens[:, :M].size
  np.testing.assert_allclose(counts, 1.0 / V, atol=0.003)
  assert abs((tokens[:, 0] == tokens[:, 1]).mean() - 1.0 / V) < 0.006


def test_language_is_learnable_and_the_bayes_predictor_reaches_the_optimum():
  ds = make('eval')
  a = ds.context_matrix()
  batch = ds.get_batch(range(2000))
  tokens, optimal = batch['tokens'], batch['optimal_nll'].astype(np.float64)

  def predictor(matrix):
    """Next-token probabilities from a context matrix, in the LM's shifted convention."""
    onehot = np.eye(V)[tokens]  # [B, n, V]
    copy = np.einsum('ij,bjv->biv', matrix, onehot)
    probs = (1.0 - ds.copy_prob) / V + ds.copy_prob * copy
    probs[:, :M] = 1.0 / V
    return np.concatenate([probs[:, 1:], np.full_like(probs[:, :1], 1.0 / V)], axis=1)

  bayes = next_token_nll(predictor(a), tokens)
  np.testing.assert_allclose(bayes.mean(), optimal[:, 1:].mean(), rtol=1e-6)
  # Well below log V: a copy position is about as uncertain as a choice among K symbols.
  assert optimal[:, 1:].mean() < math.log(V) - 0.5
  assert optimal[:, M:].mean() < math.log(K) + 0.1 < math.log(V) - 1.0
  # The gap metric discriminates: knowing which memory positions a row reads is what counts.
  uniform_memory = np.zeros_like(a)
  uniform_memory[M:, :M] = 1.0 / M
  other_language = make('eval', language_seed=1).context_matrix()
  for wrong in (uniform_memory, other_language):
    assert next_token_nll(predictor(wrong), tokens).mean() - optimal[:, 1:].mean() > 0.2


@pytest.mark.parametrize('kw, message', [
    (dict(split='test'), "split='test'"),
    (dict(seq_len=1), 'seq_len=1'),
    (dict(seq_len=32.0), 'seq_len=32.0'),
    (dict(vocab_size=1), 'vocab_size=1'),
    (dict(copy_prob=1.5), r'copy_prob=1.5: must lie in \[0, 1\]'),
    (dict(copy_prob=-0.1), 'copy_prob=-0.1'),
    (dict(concentration=0.0), 'concentration=0.0'),
    (dict(concentration=float('nan')), 'concentration=nan'),
    (dict(language_seed=1.5), 'language_seed=1.5'),
    (dict(num_examples=0), 'num_examples=0'),
    (dict(memory_len=0), 'memory_len=0'),
    (dict(memory_len=N), f'memory_len={N}'),
    (dict(support=0), 'support=0'),
    (dict(support=M + 1), f'support={M + 1}'),
])
def test_invalid_arguments_name_the_argument(kw, message):
  with pytest.raises(ValueError, match=message):
    make(**kw)


def test_out_of_range_indices():
  ds = make('eval', num_examples=5)
  ds[4]
  for bad in (5, -1):
    with pytest.raises(IndexError, match=str(bad)):
      ds[bad]
  with pytest.raises(IndexError):
    ds.get_batch([0, 5])
  with pytest.raises(TypeError):
    ds[1.0]
