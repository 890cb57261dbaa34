"""The low-rank bottleneck of one attention head, as runnable code.

Convention (the paper's): X is d x n, one column per token. One head with
W_q, W_k of shape (d_p, d) has the context matrix

  P = Softmax[(W_k X)^T (W_q X) / sqrt(d_p)]            (n x n),

the softmax taken over each column, so P is column-stochastic (every column
sums to 1).

Theorem 1 (representation). If d_p >= n, then for every X of full column rank
(so d >= n) and every positive column-stochastic n x n matrix P there are
W_q, W_k that produce exactly P. Constructively, with X+ = (X^T X)^{-1} X^T
and any positive diagonal D0,

  W_k^T W_q = sqrt(d_p) (X+)^T log(P D0) X+        (d x d),

because X+ X = I_n turns the scores into log(P D0) = log P + (column
constants), and the column softmax removes the column constants. The rank of
that d x d matrix is the rank of log(P D0), and it factors into W_k, W_q of
d_p rows whenever d_p is at least that rank (:func:`construct_representation`).

d_p >= n is sufficient, not tight. Scaling column j of P by 1 / P[i, j] (D0 =
diag(1 / P[i, :]) for a fixed row i) makes row i of log(P D0) zero, so its
rank is at most n - 1: d_p = n - 1 already suffices for full-rank X. The
exact threshold is r = rank(log P - 1 log P[i, :]) (:func:`min_head_size`):
a head's scores have rank <= d_p, so no head with d_p < r produces P, for any
X; r = n - 1 for almost every P and is smaller only for special ones.

The witnesses. :func:`low_rank_witness` is the paper's: d = d_p = 1, n = 2,
X = [[1, 0]]. Its second token is the zero vector, so the second column of
every producible P is [0.5, 0.5] and P = [[0.5, 0.75], [0.5, 0.25]] is out
of reach (max-abs error >= 0.25, :func:`low_rank_witness_min_error`). That
is a defect of X, not of d_p: X is not of full column rank, no d_p helps, and
on X = I_2 a head with d_p = 1 = n - 1 reaches the same P.
:func:`full_rank_witness` shows the bottleneck itself: X = I_3 and P = the
column softmax of 2 I_3 need d_p = 2 = n - 1 (reached exactly), and every
d_p = 1 head misses by at least (e^2 - 1) / (2 (e^2 + 2)) ~ 0.34
(:func:`full_rank_witness_min_error`).

The probe (:func:`fit_context_matrix`) asks gradient descent how close a head
of a given d_p gets to a target P, so the gap between d_p >= n and d_p < n can
be measured on random targets.

Exact constructions use numpy float64. The probe uses jax + optax, in float64
inside a scoped ``jax.enable_x64(True)`` context (the global setting is left
untouched).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
  "FitResult",
  "construct_representation",
  "context_matrix",
  "fit_context_matrix",
  "full_rank_witness",
  "full_rank_witness_min_error",
  "low_rank_witness",
  "low_rank_witness_min_error",
  "max_abs_error",
  "min_head_size",
  "random_column_stochastic",
]

# Columns of P must sum to 1 within this tolerance.
COLUMN_SUM_TOL = 1e-8


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _as_matrix(name: str, A: Any) -> np.ndarray:
  """Return A as a float64 2-D numpy array, or raise a ValueError naming it."""
  A = np.asarray(A, dtype=np.float64)
  if A.ndim != 2:
    raise ValueError(
      f"{name} must be a 2-D matrix, got an array of shape {A.shape}; "
      f"pass {name} with one column per token"
      + (" (X is d x n)" if name == "X" else "")
      + "."
    )
  if not np.all(np.isfinite(A)):
    raise ValueError(f"{name} contains NaN or infinite entries; pass finite values.")
  return A


def _check_weights(X: np.ndarray, W_q: Any, W_k: Any) -> tuple[np.ndarray, np.ndarray]:
  """Check W_q, W_k are both (d_p, d) with d = X.shape[0]."""
  W_q = _as_matrix("W_q", W_q)
  W_k = _as_matrix("W_k", W_k)
  d = X.shape[0]
  if W_q.shape != W_k.shape or W_q.shape[1] != d:
    raise ValueError(
      f"W_q and W_k must both have shape (d_p, d) with d = {d} (the rows of X); "
      f"got W_q {W_q.shape} and W_k {W_k.shape}."
    )
  return W_q, W_k


def _check_context(P: Any, n: int, *, strictly_positive: bool) -> np.ndarray:
  """Check P is an n x n column-stochastic matrix (positive if asked)."""
  P = _as_matrix("P", P)
  if P.shape != (n, n):
    raise ValueError(
      f"P must be n x n with n = {n} (the columns of X), got shape {P.shape}."
    )
  if strictly_positive and not np.all(P > 0):
    raise ValueError(
      "P must be strictly positive (log P is taken element-wise in Theorem 1); "
      f"its smallest entry is {P.min():.3g}. Mix in a little uniform mass, "
      "e.g. P = (1 - eps) P + eps / n."
    )
  if not strictly_positive and not np.all(P >= 0):
    raise ValueError(f"P must be non-negative; its smallest entry is {P.min():.3g}.")
  sums = P.sum(axis=0)
  worst = float(np.max(np.abs(sums - 1.0)))
  if worst > COLUMN_SUM_TOL:
    raise ValueError(
      "P must be column-stochastic: each column must sum to 1 "
      f"(worst column is off by {worst:.3g}, tolerance {COLUMN_SUM_TOL:g}); "
      "normalise with P / P.sum(axis=0, keepdims=True). Note the paper's "
      "softmax is over columns, not rows; pass P.T if you built a row-stochastic matrix."
    )
  return P


def _check_positive_int(value: Any, name: str = "head_size (d_p)") -> int:
  """Check value (head_size = d_p by default) is a positive integer."""
  try:
    ok = not isinstance(value, bool) and int(value) == value and value >= 1
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"{name} must be a positive integer, got {value!r}.")
  return int(value)


# ---------------------------------------------------------------------------
# The head and Theorem 1
# ---------------------------------------------------------------------------


def context_matrix(X: Any, W_q: Any, W_k: Any) -> np.ndarray:
  """P = Softmax[(W_k X)^T (W_q X) / sqrt(d_p)], softmax over each column.

  X is d x n, W_q and W_k are (d_p, d). Returns the n x n column-stochastic P
  (float64), with entry P[i, j] the weight token j puts on token i.
  """
  X = _as_matrix("X", X)
  W_q, W_k = _check_weights(X, W_q, W_k)
  d_p = W_q.shape[0]
  S = (W_k @ X).T @ (W_q @ X) / math.sqrt(d_p)
  S = S - S.max(axis=0, keepdims=True)
  E = np.exp(S)
  return E / E.sum(axis=0, keepdims=True)


def max_abs_error(P_produced: Any, P_target: Any) -> float:
  """max_{i,j} |P_produced - P_target| for two n x n matrices."""
  A = np.asarray(P_produced, dtype=np.float64)
  B = np.asarray(P_target, dtype=np.float64)
  if A.shape != B.shape:
    raise ValueError(f"shapes differ: {A.shape} vs {B.shape}.")
  return float(np.max(np.abs(A - B)))


def _diag_D0(D0: Any, n: int) -> np.ndarray:
  """The diagonal of D0 as a length-n vector (D0 may be a vector or n x n diagonal)."""
  if D0 is None:
    return np.ones(n)
  D0 = np.asarray(D0, dtype=np.float64)
  if D0.ndim == 2:
    if D0.shape != (n, n) or np.any(D0 != np.diag(np.diag(D0))):
      raise ValueError(
        f"D0 must be a positive diagonal n x n matrix (n = {n}) or the "
        f"length-n vector of its diagonal; got a {D0.shape} matrix that is not diagonal "
        "or not n x n."
      )
    D0 = np.diag(D0)
  if D0.shape != (n,):
    raise ValueError(
      f"D0 must be a positive diagonal n x n matrix or a length-n vector (n = {n}), "
      f"got shape {D0.shape}."
    )
  if not np.all(np.isfinite(D0)) or not np.all(D0 > 0):
    raise ValueError(
      "D0 must be positive (its diagonal enters log(P D0)); "
      f"smallest entry is {D0.min():.3g}."
    )
  return D0


def _rank(A: np.ndarray) -> int:
  """Numerical rank of A: singular values above max(A.shape) * eps * the largest."""
  s = np.linalg.svd(A, compute_uv=False)
  if s[0] == 0:
    return 0
  return int(np.sum(s > s[0] * max(A.shape) * np.finfo(np.float64).eps))


def _centred_log(P: np.ndarray) -> np.ndarray:
  """log(P D0) with D0 = diag(1 / P[0, :]): log P less its row 0 (row 0 exactly 0)."""
  log_P = np.log(P)
  return log_P - log_P[0][None, :]


def min_head_size(P: Any) -> int:
  """Smallest d_p of a head producing the n x n P: r = rank(log P - 1 log P[0, :]).

  P is positive and column-stochastic. A head produces P iff its scores are
  log P + 1 c^T for some c (the column softmax drops column constants); the
  scores have rank <= d_p, and the least rank of log P + 1 c^T is r, the
  dimension of the affine hull of the rows of log P, reached at
  c = -log P[0, :]. So no head with d_p < r produces P, for any X, and
  construct_representation reaches it with any d_p >= max(r, 1) on every X
  of full column rank. r <= n - 1, with equality for almost every P; r = 0
  for the uniform P.
  """
  P = _as_matrix("P", P)
  P = _check_context(P, P.shape[0], strictly_positive=True)
  return min(_rank(_centred_log(P)), P.shape[0] - 1)


def _check_full_column_rank(X: np.ndarray) -> None:
  """Raise unless the d x n X has rank n."""
  d, n = X.shape
  if d < n:
    raise ValueError(
      f"X must have full column rank, which needs d >= n; X is d x n = {d} x {n}. "
      "Use a wider embedding (d >= n) or fewer tokens."
    )
  s = np.linalg.svd(X, compute_uv=False)
  tol = s[0] * max(d, n) * np.finfo(np.float64).eps
  if s[-1] <= tol:
    raise ValueError(
      "X must have full column rank (rank n = "
      f"{n}); its smallest singular value is {s[-1]:.3g} (largest {s[0]:.3g}). "
      "Remove repeated or linearly dependent token columns."
    )


def _log_scores(P: np.ndarray, d_p: int, D0: Any) -> np.ndarray:
  """log(P D0), the scores the construction reproduces; raise if rank > d_p.

  With D0 None: D0 = I when d_p >= n, else D0 = diag(1 / P[0, :]) (rank <= n - 1).
  """
  n = P.shape[0]
  if D0 is None:
    L = np.log(P) if d_p >= n else _centred_log(P)
  else:
    # log(P D0) = log P + log diag(D0) added to each column (no under/overflow in P D0).
    L = np.log(P) + np.log(_diag_D0(D0, n))[None, :]
  if d_p >= n:
    return L
  rank = _rank(L)
  if D0 is None:
    rank = min(rank, n - 1)  # row 0 of L is exactly zero
    if d_p < rank:
      raise ValueError(
        f"head_size (d_p) = {d_p} is smaller than r = {rank}, the rank of log P once its "
        f"column constants are removed (min_head_size(P); r = n - 1 = {n - 1} for almost "
        "every P). A head's scores have rank <= d_p, so no head with d_p < r produces this "
        "P, for any X. See full_rank_witness() for such a pair, and fit_context_matrix() "
        "to measure how close a smaller head gets."
      )
  elif d_p < rank:
    raise ValueError(
      f"head_size (d_p) = {d_p} is smaller than rank(log(P D0)) = {rank} for the D0 given, "
      "so W_k^T W_q cannot be factored into d_p rows. Pass D0=None (the construction then "
      f"makes a row of log(P D0) zero, and d_p = n - 1 = {n - 1} suffices) or a D0 with "
      f"rank(log(P D0)) <= d_p; no D0 allows d_p < min_head_size(P) = {min_head_size(P)}."
    )
  return L


def construct_representation(
  X: Any, P: Any, head_size: int, D0: Any = None
) -> tuple[np.ndarray, np.ndarray]:
  """Theorem 1: W_q, W_k of shape (head_size, d) whose head produces exactly P.

  X is d x n of full column rank (d >= n), P a positive column-stochastic
  n x n matrix, head_size = d_p, D0 an optional positive diagonal (n x n
  matrix or length-n vector). Builds M = sqrt(d_p) (X+)^T log(P D0) X+
  (d x d, rank = rank of log(P D0) <= n) with X+ = (X^T X)^{-1} X^T, and
  factors M = W_k^T W_q by SVD, keeping min(d_p, n) singular values and
  zero-padding to d_p rows. Then context_matrix(X, W_q, W_k) == P up to
  float64 round-off.

  The paper's d_p >= n is sufficient, not tight. Without D0, d_p >= n uses
  D0 = I, and d_p < n uses D0 = diag(1 / P[0, :]), which makes row 0 of
  log(P D0) zero: M then has rank <= n - 1, so d_p = n - 1 always works, and
  d_p down to min_head_size(P) (below n - 1 only for special P). A caller's
  D0 with d_p < n must give rank(log(P D0)) <= d_p. Anything else raises a
  ValueError saying why.
  """
  X = _as_matrix("X", X)
  d, n = X.shape
  P = _check_context(P, n, strictly_positive=True)
  d_p = _check_positive_int(head_size)
  _check_full_column_rank(X)
  L = _log_scores(P, d_p, D0)

  # X+ = (X^T X)^{-1} X^T, via least squares (stable, no explicit normal equations).
  X_pinv = np.linalg.lstsq(X, np.eye(d), rcond=None)[0]  # n x d
  M = math.sqrt(d_p) * X_pinv.T @ L @ X_pinv  # d x d, rank = rank(L) <= min(d_p, n)

  U, sv, Vt = np.linalg.svd(M)
  r = min(d_p, n)
  root = np.sqrt(sv[:r])
  W_k = np.zeros((d_p, d))
  W_q = np.zeros((d_p, d))
  W_k[:r] = root[:, None] * U[:, :r].T  # W_k^T = U_r S_r^{1/2}
  W_q[:r] = root[:, None] * Vt[:r]  # W_q = S_r^{1/2} V_r^T
  return W_q, W_k


# ---------------------------------------------------------------------------
# Random targets
# ---------------------------------------------------------------------------


def _numpy_rng(key_or_seed: Any) -> np.random.Generator:
  """A numpy Generator from an int seed, a Generator, or a jax PRNG key."""
  if isinstance(key_or_seed, np.random.Generator):
    return key_or_seed
  if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
    return np.random.default_rng(int(key_or_seed))
  if isinstance(key_or_seed, jax.Array):
    data = np.asarray(jax.random.key_data(key_or_seed), dtype=np.uint32).ravel()
    return np.random.default_rng([int(v) for v in data])
  raise ValueError(
    "key_or_seed must be an int seed, a numpy Generator or a jax PRNG key, "
    f"got {type(key_or_seed).__name__}."
  )


def random_column_stochastic(
  n: int, key_or_seed: Any, concentration: float = 1.0
) -> np.ndarray:
  """A random positive column-stochastic n x n P (float64).

  Each column is drawn from Dirichlet(concentration * 1_n): concentration 1
  is uniform on the simplex, small values (e.g. 0.1) give sharp, nearly
  one-hot columns, large values columns near uniform. Entries are floored at
  the smallest normal float64 and renormalised, so P is strictly positive.
  """
  n = _check_positive_int(n, "n")
  if not concentration > 0:
    raise ValueError(f"concentration must be positive, got {concentration!r}.")
  rng = _numpy_rng(key_or_seed)
  P = rng.dirichlet(np.full(n, float(concentration)), size=n).T  # column j ~ Dirichlet
  P = np.maximum(P, np.finfo(np.float64).tiny)
  return P / P.sum(axis=0, keepdims=True)


# ---------------------------------------------------------------------------
# The d_p < n witness
# ---------------------------------------------------------------------------


def low_rank_witness() -> tuple[np.ndarray, np.ndarray]:
  """The paper's d_p < n witness: (X, P) with d = d_p = 1, n = 2.

  X = [[1, 0]] (1 x 2), P = [[0.5, 0.75], [0.5, 0.25]]. For any 1 x 1 W_q,
  W_k with product m the scores are [[m, 0], [0, 0]] (over sqrt(d_p) = 1):
  column 1 of the produced P is [s, 1 - s] with s = sigmoid(m), which can
  match [0.5, 0.5]; column 2 is always exactly [0.5, 0.5] because token 2
  is the zero vector, so it never matches [0.75, 0.25]: the max-abs error
  of every head is at least 0.25.

  What it does not show: a low-rank bottleneck. The obstacle is the zero
  column of X (X is not of full column rank), which no d_p removes, while
  min_head_size(P) = 1: on X = I_2 a d_p = 1 head produces this P exactly.
  For a witness with full-rank X, see :func:`full_rank_witness`.
  """
  X = np.array([[1.0, 0.0]])
  P = np.array([[0.5, 0.75], [0.5, 0.25]])
  return X, P


def low_rank_witness_min_error(P: Any = None) -> float:
  """Best max-abs error any d_p = 1 head reaches on X = [[1, 0]] and target P.

  P is a positive column-stochastic 2 x 2 target (default: the witness's).
  Column 1 of the produced P is [s, 1 - s] for any s in (0, 1) and so is
  matched exactly; column 2 is fixed at [0.5, 0.5]. The infimum of the
  max-abs error is therefore |P[0, 1] - 0.5| (0.25 for the witness), and it
  is attained.
  """
  if P is None:
    P = low_rank_witness()[1]
  P = _check_context(P, 2, strictly_positive=True)
  return float(abs(P[0, 1] - 0.5))


def full_rank_witness() -> tuple[np.ndarray, np.ndarray]:
  """A witness of the bottleneck on full-rank X: (X, P) with d = n = 3.

  X = I_3, P = the column softmax of 2 I_3: e^2 / (e^2 + 2) on the diagonal,
  1 / (e^2 + 2) elsewhere. min_head_size(P) = 2 = n - 1, so
  construct_representation reaches P exactly with d_p = 2 and refuses
  d_p = 1. No d_p = 1 head comes close: its scores are k q^T (k = W_k,
  q = W_q as 3-vectors), so column j of its P is softmax(q_j k), and the
  token holding the median entry of k never gets the most weight in any
  column, while in P every token has the most weight in its own column
  (see :func:`full_rank_witness_min_error`).
  """
  X = np.eye(3)
  E = np.exp(2.0 * np.eye(3))
  return X, E / E.sum(axis=0, keepdims=True)


def full_rank_witness_min_error() -> float:
  """Best max-abs error any d_p = 1 head reaches on the full-rank witness.

  It is (e^2 - 1) / (2 (e^2 + 2)) ~ 0.340, half the gap between P's
  diagonal and off-diagonal entries. Lower bound: let c index the median
  entry of k; then q_c k_c <= q_c k_x for the x != c holding the largest
  (q_c >= 0) or smallest (q_c < 0) entry of k, so Q[c, c] <= Q[x, c] for the
  head's Q while P[c, c] - P[x, c] is that gap; one of the two entries is
  off by at least half of it. Attained by k = (0, 0, -1), q = (t, t, -2)
  with t = log((e^2 + 1) / 2): columns 1 and 2 put their mean top weight on
  tokens 1 and 2 and the exact 1 / (e^2 + 2) on token 3; column 3 is exact.
  """
  e2 = math.exp(2.0)
  return (e2 - 1.0) / (2.0 * (e2 + 2.0))


# ---------------------------------------------------------------------------
# The expressivity probe
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FitResult:
  """Outcome of :func:`fit_context_matrix`.

  max_abs_error: smallest max |produced P - target P| over all iterates.
  W_q, W_k: the (d_p, d) iterate that reached it, so
    max_abs_error == max|context_matrix(X, W_q, W_k) - P| (up to round-off).
  loss: sum over columns of KL(target column || produced column) at the
    final iterate (0 exactly when the final head produces P).
  best_step: the step index of the returned iterate (num_steps = final one).
  num_steps: number of optimiser steps taken.
  """

  max_abs_error: float
  loss: float
  W_q: np.ndarray
  W_k: np.ndarray
  best_step: int
  num_steps: int


def _probe_stats(params, X, P):
  """Cross-entropy sum_j H(P_:j, Q_:j) and max|Q - P| for the head's Q."""
  W_q, W_k = params
  d_p = W_q.shape[0]
  S = (W_k @ X).T @ (W_q @ X) / math.sqrt(d_p)
  log_Q = jax.nn.log_softmax(S, axis=0)  # column softmax
  cross_entropy = -jnp.sum(P * log_Q)
  err = jnp.max(jnp.abs(jnp.exp(log_Q) - P))
  return cross_entropy, err


@jax.jit
def _fit_loop(X, P, W_q0, W_k0, num_steps, learning_rate):
  """Run num_steps Adam steps on the cross-entropy in one compiled loop."""

  def schedule(count):
    # Cosine decay from learning_rate to learning_rate / 100 over the run.
    frac = jnp.minimum(count / jnp.maximum(num_steps, 1), 1.0)
    return learning_rate * (0.01 + 0.99 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))

  opt = optax.adam(schedule)
  params0 = (W_q0, W_k0)
  grad_fn = jax.value_and_grad(_probe_stats, has_aux=True)

  def body(step, carry):
    params, opt_state, best_err, best_params, best_step = carry
    (_, err), grads = grad_fn(params, X, P)
    better = err < best_err
    best_err = jnp.where(better, err, best_err)
    best_params = jax.tree.map(lambda a, b: jnp.where(better, a, b), params, best_params)
    best_step = jnp.where(better, step, best_step)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, best_err, best_params, best_step

  inf = jnp.asarray(jnp.inf, X.dtype)
  carry = (params0, opt.init(params0), inf, params0, jnp.asarray(0, jnp.int32))
  params, _, best_err, best_params, best_step = jax.lax.fori_loop(0, num_steps, body, carry)
  final_ce, final_err = _probe_stats(params, X, P)
  better = final_err < best_err
  best_err = jnp.where(better, final_err, best_err)
  best_params = jax.tree.map(lambda a, b: jnp.where(better, a, b), params, best_params)
  best_step = jnp.where(better, num_steps, best_step)
  return best_err, final_ce, best_params, best_step


def fit_context_matrix(
  X: Any,
  P: Any,
  head_size: int,
  *,
  num_steps: int = 10000,
  learning_rate: float = 0.05,
  init_scale: float = 0.1,
  seed: int = 0,
) -> FitResult:
  """Expressivity probe: how close can a head with d_p = head_size get to P?

  X is d x n, P an n x n column-stochastic target (non-negative), W_q and W_k
  of shape (head_size, d) start at init_scale * N(0, 1/d) (seeded) and are
  trained with Adam (cosine-decayed from learning_rate to learning_rate / 100)
  to minimise sum_j KL(P_:j || Q_:j), Q the head's context matrix; the
  minimum (0) is at Q = P. A small error shows P is reachable; a large one is
  evidence, not proof, that it is not (gradient descent gives no lower
  bound). The whole run is one jitted ``fori_loop`` in float64 (scoped
  ``jax.enable_x64``, the global setting is untouched). Returns the best
  max-abs error seen; see :class:`FitResult`.
  """
  X = _as_matrix("X", X)
  d, n = X.shape
  P = _check_context(P, n, strictly_positive=False)
  d_p = _check_positive_int(head_size)
  num_steps = int(num_steps)
  if num_steps < 0:
    raise ValueError(f"num_steps must be >= 0, got {num_steps}.")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")

  # Entropy of the target columns: KL = cross-entropy - entropy.
  nz = P > 0
  entropy = float(-np.sum(P[nz] * np.log(P[nz])))

  with jax.enable_x64(True):
    k_q, k_k = jax.random.split(jax.random.key(seed))
    std = init_scale / math.sqrt(d)
    W_q0 = std * jax.random.normal(k_q, (d_p, d), dtype=jnp.float64)
    W_k0 = std * jax.random.normal(k_k, (d_p, d), dtype=jnp.float64)
    best_err, final_ce, (W_q, W_k), best_step = _fit_loop(
      jnp.asarray(X),
      jnp.asarray(P),
      W_q0,
      W_k0,
      jnp.asarray(num_steps, dtype=jnp.int32),
      jnp.asarray(learning_rate, dtype=jnp.float64),
    )
    return FitResult(
      max_abs_error=float(best_err),
      loss=float(final_ce) - entropy,
      W_q=np.asarray(W_q, dtype=np.float64),
      W_k=np.asarray(W_k, dtype=np.float64),
      best_step=int(best_step),
      num_steps=num_steps,
    )
