"""Tests for fixed_head.theory: Theorem 1 (and d_p = n - 1), the witnesses and the probe."""

import itertools

import jax
import numpy as np
import pytest

from fixed_head.theory import (
  FitResult,
  construct_representation,
  context_matrix,
  fit_context_matrix,
  full_rank_witness,
  full_rank_witness_min_error,
  low_rank_witness,
  low_rank_witness_min_error,
  max_abs_error,
  min_head_size,
  random_column_stochastic,
)

# Dirichlet concentration of the probe targets: small, so columns are sharp and
# a rank-1 or rank-2 score matrix cannot fit them.
SHARP = 0.1


def _gaussian_X(d, n, seed):
  return np.random.default_rng(seed).standard_normal((d, n))


# ---------------------------------------------------------------------------
# context_matrix
# ---------------------------------------------------------------------------


def test_context_matrix_is_column_softmax():
  rng = np.random.default_rng(0)
  d, n, d_p = 5, 4, 3
  X = rng.standard_normal((d, n))
  W_q = rng.standard_normal((d_p, d))
  W_k = rng.standard_normal((d_p, d))
  P = context_matrix(X, W_q, W_k)
  S = (W_k @ X).T @ (W_q @ X) / np.sqrt(d_p)
  expected = np.exp(S) / np.exp(S).sum(axis=0, keepdims=True)
  assert P.shape == (n, n)
  np.testing.assert_allclose(P, expected, rtol=1e-12, atol=0)
  np.testing.assert_allclose(P.sum(axis=0), 1.0, rtol=0, atol=1e-12)
  # Columns, not rows: the rows of this P do not sum to 1.
  assert np.max(np.abs(P.sum(axis=1) - 1.0)) > 1e-3


def test_context_matrix_is_stable_for_huge_scores():
  rng = np.random.default_rng(1)
  X = rng.standard_normal((4, 4))
  W = 1e3 * rng.standard_normal((4, 4))
  P = context_matrix(X, W, W.copy())
  assert np.all(np.isfinite(P))
  np.testing.assert_allclose(P.sum(axis=0), 1.0, rtol=0, atol=1e-12)


def test_context_matrix_rejects_mismatched_weights():
  X = np.ones((3, 2))
  with pytest.raises(ValueError, match=r"W_q and W_k must both have shape \(d_p, d\)"):
    context_matrix(X, np.ones((2, 3)), np.ones((2, 4)))


# ---------------------------------------------------------------------------
# Theorem 1
# ---------------------------------------------------------------------------

THEOREM_CASES = [
  # (d, n, d_p)
  (4, 4, 4),  # square X, d_p == n
  (8, 5, 5),  # d_p == n < d
  (6, 4, 10),  # d_p > d
  (16, 16, 16),
  (32, 16, 24),
  (12, 7, 40),  # d_p >> d
]


@pytest.mark.parametrize("d, n, d_p", THEOREM_CASES)
@pytest.mark.parametrize("concentration", [1.0, SHARP])
def test_theorem1_reproduces_P(d, n, d_p, concentration):
  seed = 10 * d + n + d_p
  X = _gaussian_X(d, n, seed)
  P = random_column_stochastic(n, seed, concentration=concentration)
  W_q, W_k = construct_representation(X, P, d_p)
  assert W_q.shape == (d_p, d) and W_k.shape == (d_p, d)
  err = max_abs_error(context_matrix(X, W_q, W_k), P)
  assert err < 1e-5, err
  # Only n rows carry the factorisation; the padding rows are zero.
  assert np.all(W_q[n:] == 0) and np.all(W_k[n:] == 0)
  assert np.linalg.matrix_rank(W_k.T @ W_q) <= n


def test_theorem1_with_non_identity_D0():
  d, n, d_p = 10, 6, 8
  X = _gaussian_X(d, n, 3)
  P = random_column_stochastic(n, 3, concentration=0.5)
  D0 = np.exp(np.random.default_rng(4).normal(scale=3.0, size=n))
  W_q, W_k = construct_representation(X, P, d_p, D0=D0)
  assert max_abs_error(context_matrix(X, W_q, W_k), P) < 1e-5
  # D0 changes the product W_k^T W_q (column constants) but not P.
  W_q1, W_k1 = construct_representation(X, P, d_p)
  assert np.max(np.abs(W_k.T @ W_q - W_k1.T @ W_q1)) > 1e-2
  # D0 as a diagonal matrix is the same as its diagonal vector.
  W_q2, W_k2 = construct_representation(X, P, d_p, D0=np.diag(D0))
  np.testing.assert_allclose(W_k2.T @ W_q2, W_k.T @ W_q, rtol=1e-10, atol=1e-10)


def test_theorem1_product_matches_formula():
  d, n, d_p = 7, 4, 5
  X = _gaussian_X(d, n, 5)
  P = random_column_stochastic(n, 5)
  W_q, W_k = construct_representation(X, P, d_p)
  X_pinv = np.linalg.inv(X.T @ X) @ X.T
  M = np.sqrt(d_p) * X_pinv.T @ np.log(P) @ X_pinv
  np.testing.assert_allclose(W_k.T @ W_q, M, rtol=1e-9, atol=1e-9)
  # The scores reproduce log P exactly (D0 = I, so no column constants).
  S = (W_k @ X).T @ (W_q @ X) / np.sqrt(d_p)
  np.testing.assert_allclose(S, np.log(P), rtol=0, atol=1e-9)


def test_construction_depends_on_target():
  d, n, d_p = 8, 6, 6
  X = _gaussian_X(d, n, 6)
  P1 = random_column_stochastic(n, 1)
  P2 = random_column_stochastic(n, 2)
  assert max_abs_error(P1, P2) > 1e-2
  W_q1, W_k1 = construct_representation(X, P1, d_p)
  W_q2, W_k2 = construct_representation(X, P2, d_p)
  assert np.max(np.abs(W_k1.T @ W_q1 - W_k2.T @ W_q2)) > 1e-2
  # Each head produces its own target, not the other one.
  assert max_abs_error(context_matrix(X, W_q1, W_k1), P2) > 1e-2
  assert max_abs_error(context_matrix(X, W_q2, W_k2), P1) > 1e-2


@pytest.mark.parametrize("n", [4, 5, 6])
@pytest.mark.parametrize("concentration", [1.0, 0.3])
def test_head_size_n_minus_1_suffices(n, concentration):
  seed = 20 * n + int(10 * concentration)
  d = n + seed % 3
  X = _gaussian_X(d, n, seed)
  P = random_column_stochastic(n, seed, concentration=concentration)
  W_q, W_k = construct_representation(X, P, n - 1)
  assert W_q.shape == (n - 1, d) and W_k.shape == (n - 1, d)
  assert max_abs_error(context_matrix(X, W_q, W_k), P) < 1e-10
  # Row 0 of log(P D0) is zero: the scores are log P less its row 0.
  S = (W_k @ X).T @ (W_q @ X) / np.sqrt(n - 1)
  np.testing.assert_allclose(S, np.log(P) - np.log(P[0]), rtol=0, atol=1e-9)
  # n - 1 is also necessary for a generic P, whatever X.
  assert min_head_size(P) == n - 1
  with pytest.raises(ValueError, match=rf"head_size \(d_p\) = {n - 2} is smaller than r = {n - 1}"):
    construct_representation(X, P, n - 2)


def test_head_size_below_min_is_refused_with_reason():
  X = _gaussian_X(8, 6, 7)
  P = random_column_stochastic(6, 7)
  for head_size in (1, 4):
    with pytest.raises(ValueError, match=r"no head with d_p < r produces this P, for any X"):
      construct_representation(X, P, head_size)
  construct_representation(X, P, 5)


def test_low_rank_target_needs_only_its_rank():
  # P made by a d_p = 2 head on n = 6 tokens: any X of full rank reaches it with d_p = 2.
  n = 6
  rng = np.random.default_rng(11)
  X0 = rng.standard_normal((5, n))
  P = context_matrix(X0, rng.standard_normal((2, 5)), rng.standard_normal((2, 5)))
  assert min_head_size(P) == 2
  X = _gaussian_X(7, n, 12)
  W_q, W_k = construct_representation(X, P, 2)
  assert max_abs_error(context_matrix(X, W_q, W_k), P) < 1e-10
  with pytest.raises(ValueError, match=r"smaller than r = 2"):
    construct_representation(X, P, 1)
  # The uniform P needs no rank at all.
  uniform = np.full((n, n), 1.0 / n)
  assert min_head_size(uniform) == 0
  W_q, W_k = construct_representation(X, uniform, 1)
  assert max_abs_error(context_matrix(X, W_q, W_k), uniform) < 1e-12


def test_caller_D0_must_fit_head_size():
  n = 5
  X = _gaussian_X(6, n, 13)
  P = random_column_stochastic(n, 13)
  # D0 = I leaves log P of full rank n: it does not factor into n - 1 rows.
  with pytest.raises(ValueError, match=r"rank\(log\(P D0\)\) = 5 for the D0 given"):
    construct_representation(X, P, n - 1, D0=np.ones(n))
  # D0 = diag(1 / P[2, :]) zeroes row 2 instead of row 0: fits n - 1 rows.
  W_q, W_k = construct_representation(X, P, n - 1, D0=1.0 / P[2])
  assert max_abs_error(context_matrix(X, W_q, W_k), P) < 1e-10
  S = (W_k @ X).T @ (W_q @ X) / np.sqrt(n - 1)
  np.testing.assert_allclose(S[2], 0.0, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------
# Validation messages
# ---------------------------------------------------------------------------


# Column-stochastic but with zeros: log P would be -inf.
_TRIANGULAR_P = np.array([[1.0, 0.5, 0.2], [0.0, 0.5, 0.3], [0.0, 0.0, 0.5]])


def _valid_inputs():
  X = _gaussian_X(5, 3, 8)
  P = random_column_stochastic(3, 8)
  return X, P


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda X, P: (X[0], P, 3, None), r"X must be a 2-D matrix"),
    (lambda X, P: (X, P[:2], 3, None), r"P must be n x n with n = 3"),
    (lambda X, P: (X, np.ones((4, 4)) / 4, 3, None), r"P must be n x n with n = 3"),
    (lambda X, P: (X, _TRIANGULAR_P, 3, None), r"P must be strictly positive"),
    (lambda X, P: (X, P * 1.01, 3, None), r"column-stochastic"),
    (lambda X, P: (X, P + 1e-7, 3, None), r"column-stochastic"),
    (lambda X, P: (X, np.nan * P, 3, None), r"P contains NaN"),
    (lambda X, P: (X[:2], P, 3, None), r"full column rank, which needs d >= n"),
    (
      lambda X, P: (np.column_stack([X[:, 0], X[:, 1], X[:, 0] + X[:, 1]]), P, 3, None),
      r"X must have full column rank",
    ),
    (lambda X, P: (X, P, 1, None), r"head_size \(d_p\) = 1 is smaller than r = 2"),
    (lambda X, P: (X, P, 0, None), r"head_size \(d_p\) must be a positive integer"),
    (lambda X, P: (X, P, 3.5, None), r"head_size \(d_p\) must be a positive integer"),
    (lambda X, P: (X, P, 3, np.array([1.0, -1.0, 2.0])), r"D0 must be positive"),
    (lambda X, P: (X, P, 3, np.zeros(3)), r"D0 must be positive"),
    (lambda X, P: (X, P, 3, np.ones((3, 3))), r"D0 must be a positive diagonal"),
    (lambda X, P: (X, P, 3, np.ones(4)), r"D0 must be a positive diagonal"),
  ],
)
def test_validation_errors(make, match):
  X, P = _valid_inputs()
  # The untouched inputs are valid.
  construct_representation(X, P, 3)
  args = make(X, P)
  with pytest.raises(ValueError, match=match):
    construct_representation(*args[:3], D0=args[3])


def test_row_stochastic_P_is_rejected():
  n = 4
  P = random_column_stochastic(n, 9).T  # rows sum to 1, columns do not
  assert np.max(np.abs(P.sum(axis=0) - 1)) > 1e-3
  with pytest.raises(ValueError, match=r"softmax is over columns"):
    construct_representation(_gaussian_X(6, n, 9), P, n)


# ---------------------------------------------------------------------------
# random_column_stochastic
# ---------------------------------------------------------------------------


def test_random_column_stochastic():
  P = random_column_stochastic(16, 0, concentration=SHARP)
  assert P.shape == (16, 16)
  assert np.all(P > 0)
  np.testing.assert_allclose(P.sum(axis=0), 1.0, rtol=0, atol=1e-12)
  # Small concentration: sharp columns; large concentration: near uniform.
  assert np.mean(P.max(axis=0)) > 0.4
  flat = random_column_stochastic(16, 0, concentration=100.0)
  assert np.mean(flat.max(axis=0)) < 0.15
  # Deterministic in the seed, different across seeds; jax keys work too.
  np.testing.assert_array_equal(P, random_column_stochastic(16, 0, concentration=SHARP))
  assert max_abs_error(P, random_column_stochastic(16, 1, concentration=SHARP)) > 0.1
  Pk = random_column_stochastic(5, jax.random.key(3))
  np.testing.assert_array_equal(Pk, random_column_stochastic(5, jax.random.key(3)))
  np.testing.assert_allclose(Pk.sum(axis=0), 1.0, rtol=0, atol=1e-12)
  with pytest.raises(ValueError, match=r"concentration must be positive"):
    random_column_stochastic(4, 0, concentration=0.0)


# ---------------------------------------------------------------------------
# The d_p < n witness
# ---------------------------------------------------------------------------


def test_witness_second_column_is_always_uniform():
  X, P = low_rank_witness()
  assert X.shape == (1, 2) and P.shape == (2, 2)
  np.testing.assert_array_equal(P, [[0.5, 0.75], [0.5, 0.25]])
  values = [0.0, 1e-3, -0.5, 1.0, 3.0, -7.0, 1e3, -1e6, 1e150]
  rng = np.random.default_rng(10)
  values += list(rng.standard_normal(20) * 10.0 ** rng.integers(-3, 6, size=20))
  for w_q, w_k in itertools.product(values, repeat=2):
    Q = context_matrix(X, [[w_q]], [[w_k]])
    assert np.all(np.isfinite(Q))
    np.testing.assert_array_equal(Q[:, 1], [0.5, 0.5])
    assert max_abs_error(Q, P) >= 0.25
  # Column 1 is reachable: W_q W_k = 0 gives [0.5, 0.5]; the bound is attained.
  Q = context_matrix(X, [[0.0]], [[0.0]])
  assert max_abs_error(Q, P) == 0.25
  assert low_rank_witness_min_error() == 0.25


def test_witness_min_error_formula():
  X, _ = low_rank_witness()
  P = np.array([[0.2, 0.9], [0.8, 0.1]])
  assert low_rank_witness_min_error(P) == pytest.approx(0.4)
  # Attained: pick W_q W_k = logit(0.2) so column 1 matches.
  m = np.log(0.2 / 0.8)
  assert max_abs_error(context_matrix(X, [[m]], [[1.0]]), P) == pytest.approx(0.4, abs=1e-12)


def test_witness_is_refused_by_theorem1():
  X, P = low_rank_witness()
  for head_size in (1, 2):
    with pytest.raises(ValueError, match=r"needs d >= n"):
      construct_representation(X, P, head_size)


def test_witness_is_not_a_rank_witness():
  # The obstacle is X's zero column: on X = I_2 a d_p = 1 head reaches the same P.
  _, P = low_rank_witness()
  assert min_head_size(P) == 1
  W_q, W_k = construct_representation(np.eye(2), P, 1)
  assert W_q.shape == (1, 2)
  assert max_abs_error(context_matrix(np.eye(2), W_q, W_k), P) < 1e-12


def test_witness_probe_cannot_beat_quarter():
  X, P = low_rank_witness()
  res = fit_context_matrix(X, P, head_size=1, num_steps=2000)
  assert isinstance(res, FitResult)
  assert res.W_q.shape == (1, 1) and res.W_k.shape == (1, 1)
  assert res.max_abs_error >= 0.25 - 1e-6
  assert res.max_abs_error <= 0.25 + 1e-6  # column 1 is matched
  Q = context_matrix(X, res.W_q, res.W_k)
  assert abs(Q[0, 0] - 0.5) <= 0.25
  np.testing.assert_array_equal(Q[:, 1], [0.5, 0.5])
  # The final KL is the unavoidable column-2 term KL([.75, .25] || [.5, .5]).
  kl_col2 = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
  assert res.loss == pytest.approx(kl_col2, abs=1e-6)


# ---------------------------------------------------------------------------
# The full-rank witness
# ---------------------------------------------------------------------------


def _witness_best_head():
  """The d_p = 1 head that attains full_rank_witness_min_error()."""
  t = np.log((np.exp(2.0) + 1.0) / 2.0)
  return np.array([[t, t, -2.0]]), np.array([[0.0, 0.0, -1.0]])  # W_q, W_k


def test_full_rank_witness_needs_n_minus_1():
  X, P = full_rank_witness()
  np.testing.assert_array_equal(X, np.eye(3))
  big, small = np.exp(2.0) / (np.exp(2.0) + 2.0), 1.0 / (np.exp(2.0) + 2.0)
  np.testing.assert_allclose(P, np.where(np.eye(3) > 0, big, small), rtol=1e-15, atol=0)
  assert min_head_size(P) == 2
  W_q, W_k = construct_representation(X, P, 2)
  assert max_abs_error(context_matrix(X, W_q, W_k), P) < 1e-12
  with pytest.raises(ValueError, match=r"head_size \(d_p\) = 1 is smaller than r = 2"):
    construct_representation(X, P, 1)


def test_full_rank_witness_min_error_is_attained_and_never_beaten():
  X, P = full_rank_witness()
  bound = full_rank_witness_min_error()
  e2 = np.exp(2.0)
  assert bound == pytest.approx((e2 - 1) / (2 * (e2 + 2)), rel=1e-15)
  assert bound == pytest.approx(0.3402395, abs=1e-7)
  W_q, W_k = _witness_best_head()
  assert max_abs_error(context_matrix(X, W_q, W_k), P) == pytest.approx(bound, abs=1e-15)
  # Random d_p = 1 heads over many scales, ties in k included.
  rng = np.random.default_rng(14)
  for scale in (0.1, 1.0, 3.0, 10.0, 100.0):
    for _ in range(400):
      W_q = scale * rng.standard_normal((1, 3))
      W_k = scale * rng.standard_normal((1, 3))
      if rng.random() < 0.25:
        W_k[0, 1] = W_k[0, 0]
      assert max_abs_error(context_matrix(X, W_q, W_k), P) >= bound - 1e-12


def test_full_rank_witness_probe():
  X, P = full_rank_witness()
  bound = full_rank_witness_min_error()
  losses = []
  for seed in range(3):
    res = fit_context_matrix(X, P, head_size=1, num_steps=2000, seed=seed)
    assert bound - 1e-9 <= res.max_abs_error < 0.4  # near the bound, never past it
    losses.append(res.loss)
  # Every start settles at the same KL, far from 0.
  assert min(losses) > 0.5
  assert max(losses) - min(losses) < 1e-6
  res = fit_context_matrix(X, P, head_size=2, num_steps=2000, seed=0)
  assert res.max_abs_error < 1e-6


# ---------------------------------------------------------------------------
# The expressivity probe on random targets
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("d", [16, 32])
def test_probe_shows_low_rank_gap(d):
  n = 16
  X = _gaussian_X(d, n, 100 + d)
  P = random_column_stochastic(n, 200 + d, concentration=SHARP)
  errors = {}
  for head_size in (1, 2, 16, 32):
    res = fit_context_matrix(X, P, head_size, seed=0)
    assert res.W_q.shape == (head_size, d) and res.W_k.shape == (head_size, d)
    # The reported error is the returned head's error.
    err = max_abs_error(context_matrix(X, res.W_q, res.W_k), P)
    assert err == pytest.approx(res.max_abs_error, abs=1e-9)
    errors[head_size] = res.max_abs_error
  print(f"d={d}, n={n}: best max-abs error by d_p: {errors}")
  full = max(errors[16], errors[32])
  assert full < 1e-2, errors
  for head_size in (1, 2):
    assert errors[head_size] > 0.05, errors
    assert errors[head_size] > 5 * full, errors


def test_probe_leaves_x64_setting_alone():
  before = jax.config.jax_enable_x64
  X, P = low_rank_witness()
  fit_context_matrix(X, P, head_size=1, num_steps=10)
  assert jax.config.jax_enable_x64 == before


def test_probe_validates_inputs():
  X, P = low_rank_witness()
  with pytest.raises(ValueError, match=r"P must be n x n with n = 2"):
    fit_context_matrix(X, np.eye(3), 1)
  with pytest.raises(ValueError, match=r"column-stochastic"):
    fit_context_matrix(X, 2 * P, 1)
  with pytest.raises(ValueError, match=r"head_size \(d_p\) must be a positive integer"):
    fit_context_matrix(X, P, 0)
  with pytest.raises(ValueError, match=r"head_size \(d_p\) must be a positive integer"):
    fit_context_matrix(X, P, None)
