"""An embedded synthetic language whose optimal loss is known: a copy language built on Theorem 1.

No files and no download: every example is generated on demand from
``(language_seed, split, index)``.
The language is designed so that predicting it well needs each query position to attend with
an arbitrary, position-dependent distribution over earlier positions (the context matrix P of
docs/paper.md, Theorem 1), which a head much smaller than n cannot represent in general, while
a head with d_p >= n always can. Its Bayes-optimal next-token loss is computed exactly for every example, so
training and evaluation can report the gap to the optimum.

The language (symbols as in docs/paper.md: n = ``seq_len``; V = ``vocab_size``)
--------------------------------------------------------------------------
A fixed context matrix A (n x n, row-stochastic on the rows that copy) is drawn once from
``language_seed``; 'train' and 'eval' share it and differ only in their examples.

* Memory. The first m = ``memory_len`` tokens x_0 .. x_{m-1} are independent and uniform over
  the V symbols (all V ids are symbols; none is reserved). Rows 0 .. m-1 of A are zero.
* Copies. Each later row i >= m of A puts its mass on ``support`` = k memory positions chosen
  at random (a different subset for every row), with weights drawn from a symmetric
  Dirichlet(``concentration``) over those k positions (``concentration=inf``: exactly 1/k
  each). So row i is a distribution over earlier positions j < m <= i, and A restricted to
  rows m.. and columns ..m is an arbitrary-looking (n - m) x m row-stochastic matrix.
* Token x_i for i >= m: with probability c = ``copy_prob`` it is a copy of x_j, j ~ A[i, :]
  (sources are always memory tokens, never earlier copies); otherwise it is uniform over V.

The Bayes-optimal predictor and its loss (exact)
------------------------------------------------
Given the prefix x_<i, the generating process of x_i is known in closed form:

    p_opt(x_i = s | x_<i) = 1 / V                                          for i < m,
    p_opt(x_i = s | x_<i) = (1 - c) / V + c * sum_{j < i} A[i, j] [x_j = s]  for i >= m,

and ``optimal_nll[i] = -log p_opt(x_i | x_<i)`` is returned with every example. Its mean over
positions 1 .. n-1 is the lowest loss any model can reach (in expectation) when logits[:, i]
predict token i + 1: a model's mean NLL minus the mean of ``optimal_nll[:, 1:]`` is its gap.

Why it shows the low-rank bottleneck
------------------------------------
To match p_opt at query position i (predicting x_{i+1}) attention must put weight A[i+1, j]
on memory position j: the (n - m) x m block of A, a different random k-subset of the memory
in every row, equal weights on it and (near) zero elsewhere. With position-only queries and
keys one head's logit matrix has rank <= d_p, so a single head reproduces such a block only
when d_p >= min(m, n - m) (Theorem 1 with n replaced by the size of the block; d_p = n always
suffices). Heads of the baseline size d / h < n have to split the pattern between them and in
practice learn it far more slowly: in a one-layer model their gap to the optimum stays about
ten times larger.

Measured with the repository's trainer by ``benchmarks/synthetic_head_size.py`` (table and
machine in docs/data.md): after the default 1500 steps the gap to the optimum falls from 0.36
nats at d_p = 2 through 0.051 at the baseline d_p = d / h = 8 to 0.008 at d_p = n = 32. Most
of it closes by d_p = 16 = min(m, n - m), the rank of the block, as the rank argument
predicts. Idealised position-only models (free per-position queries and keys, no tokens)
show that a mixture of 8 rank-8 heads can represent these blocks, so the baseline's deficit
here is mostly how slowly small heads learn them, not impossibility; a second layer narrows
it too.

Usage
-----
A random-access source, like an ArrayRecord/Grain data source::

    ds = SyntheticCopyLM(split='train', seq_len=32, vocab_size=32, copy_prob=0.95,
                         concentration=float('inf'), language_seed=0)
    ds[7]                    # {'tokens': int32 [n], 'optimal_nll': float32 [n]}
    ds.get_batch(range(64))  # the same, stacked: [64, n] each (vectorised)
    ds.context_matrix()      # A, float64 [n, n]

Randomness comes from a counter-based hash (SplitMix64) of (language_seed, split, index), so an
example depends on nothing else (no global state, no iteration order, no NumPy version).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np

from fixed_head.data import order
from fixed_head.errors import UsageError

SPLITS = ('train', 'eval')
_SPLIT_IDS = {'train': 1, 'eval': 2}
DEFAULT_NUM_EXAMPLES = {'train': order.ENDLESS, 'eval': 10_000}
_MATRIX_DOMAIN = 0xA11CE  # separates the stream that draws A from the per-example streams

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 1.0 / 2.0**53
_CHUNK = 1024  # rows generated at once by get_batch


def _mix64(z) -> np.ndarray:
  """SplitMix64's finaliser: a bijective, well-mixing map on uint64 (arrays or scalars)."""
  z = np.asarray(z, dtype=np.uint64)
  with np.errstate(over='ignore'):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
  return z ^ (z >> np.uint64(31))


def _combine(key, value) -> np.ndarray:
  """A new key from a key and an integer (or uint64 array of integers)."""
  with np.errstate(over='ignore'):
    return _mix64(np.asarray(key, np.uint64) + (np.asarray(value, np.uint64) + np.uint64(1))
                  * _GOLDEN)


def _uniforms(keys: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """keys [...] uint64 -> float64 uniforms in [0, 1), shape keys.shape + shape (SplitMix64)."""
  count = math.prod(shape)
  counters = np.arange(1, count + 1, dtype=np.uint64)
  with np.errstate(over='ignore'):
    bits = _mix64(keys[..., None] + counters * _GOLDEN)
  return (bits >> np.uint64(11)).astype(np.float64).reshape(keys.shape + shape) * _TWO_POW_M53


class _Stream:
  """A sequential stream of uniforms from one key (used once per language, to draw A)."""

  def __init__(self, key):
    self._key = np.uint64(key)
    self._counter = 0

  def uniform(self, size: int) -> np.ndarray:
    out = _uniforms(_combine(self._key, self._counter)[None], (size,))[0]
    self._counter += 1
    return out

  def gamma(self, alpha: float) -> float:
    """One Gamma(alpha, 1) draw (Marsaglia and Tsang, with the alpha < 1 boost)."""
    boost = 1.0
    if alpha < 1.0:
      boost = self.uniform(1)[0] ** (1.0 / alpha)
      alpha += 1.0
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
      u1, u2, u3 = self.uniform(3)
      z = math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)  # Box-Muller
      v = (1.0 + c * z) ** 3
      if v > 0 and math.log1p(-u3) < 0.5 * z * z + d - d * v + d * math.log(v):
        return d * v * boost


def context_matrix(*, seq_len: int, memory_len: int, support: int, concentration: float,
                   language_seed: int) -> np.ndarray:
  """The language's A (float64 [n, n]); see the module docstring. Depends only on its args."""
  n, m, k = seq_len, memory_len, support
  stream = _Stream(_combine(_mix64(np.uint64(language_seed % 2**64)), _MATRIX_DOMAIN))
  a = np.zeros((n, n))
  for i in range(m, n):
    cols = np.argsort(stream.uniform(m), kind='stable')[:k]  # a uniform random k-subset
    if math.isinf(concentration):
      weights = np.full(k, 1.0 / k)
    else:
      weights = np.array([stream.gamma(concentration) for _ in range(k)])
      if weights.sum() <= 0:  # every draw underflowed (tiny concentration): a point mass
        weights = np.eye(k)[int(stream.uniform(1)[0] * k)]
      weights = weights / weights.sum()
    a[i, cols] = weights
  return a


def _require(name: str, value, ok: bool, requirement: str) -> None:
  if not ok:
    raise UsageError(f'{name}={value!r}: {requirement}')


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class SyntheticCopyLM:
  """Random-access source of the copy language (module docstring): deterministic in
  (language_seed, split, index), each example independent of every other.

  Args:
    split: 'train' or 'eval' (same language, different examples).
    seq_len: n, tokens per example.
    vocab_size: V, the number of symbols; the model's vocab size must equal it.
    copy_prob: c, the probability that a token after the memory is a copy.
    concentration: of the symmetric Dirichlet over each row's support (> 0; ``inf`` for
      exactly uniform weights; small values make rows sharper).
    language_seed: chooses the language (the matrix A) and, with split and index, every
      example (``data.language_seed``).
    num_examples: ``len(source)``; default ``order.ENDLESS`` (2**31 - 1) for 'train', 10_000
      for 'eval'.
    memory_len: m, the uniform prefix that copies read from; default n // 2.
    support: k, memory positions each copying row draws from; default max(1, m // 2).
  """

  # What its rows hold, known without reading one (fixed_head/data/rows.py).
  ROWS = {'tokens': ('seq', np.int32), 'optimal_nll': ('seq', np.float32)}

  # An index iterator's state saved before order.STATE_VERSION reads the same rows here: the
  # train split is read in stored order, as it always was (data.IndexIterator.set_state).
  READS_V1_STATES = True

  def __init__(self, *, split: str, seq_len: int, vocab_size: int, copy_prob: float,
               concentration: float, language_seed: int, num_examples: int | None = None,
               memory_len: int | None = None, support: int | None = None):
    _require('split', split, split in SPLITS, f'must be one of {SPLITS}.')
    _require('seq_len', seq_len, _is_int(seq_len) and seq_len >= 2, 'must be an integer >= 2.')
    _require('vocab_size', vocab_size, _is_int(vocab_size) and vocab_size >= 2,
             'must be an integer >= 2.')
    _require('copy_prob', copy_prob, isinstance(copy_prob, numbers.Real)
             and not isinstance(copy_prob, bool) and 0.0 <= copy_prob <= 1.0,
             'must lie in [0, 1].')
    _require('concentration', concentration, isinstance(concentration, numbers.Real)
             and not isinstance(concentration, bool) and concentration > 0,
             "must be positive (float('inf') for uniform weights over each row's support).")
    _require('language_seed', language_seed, _is_int(language_seed), 'must be an integer.')
    _require('num_examples', num_examples,
             num_examples is None or (_is_int(num_examples) and num_examples >= 1),
             'must be a positive integer, or None for the split default.')
    memory_len = seq_len // 2 if memory_len is None else memory_len
    _require('memory_len', memory_len, _is_int(memory_len) and 1 <= memory_len < seq_len,
             f'must be an integer in [1, seq_len - 1] = [1, {seq_len - 1}] (None: seq_len // 2).')
    support = max(1, memory_len // 2) if support is None else support
    _require('support', support, _is_int(support) and 1 <= support <= memory_len,
             f'must be an integer in [1, memory_len] = [1, {memory_len}] (None: memory_len // 2).')

    self.split = split
    self.seq_len = int(seq_len)
    self.vocab_size = int(vocab_size)
    self.copy_prob = float(copy_prob)
    self.concentration = float(concentration)
    self.language_seed = int(language_seed)
    self.memory_len = int(memory_len)
    self.support = int(support)
    self.num_examples = DEFAULT_NUM_EXAMPLES[split] if num_examples is None else int(num_examples)

    self._matrix = context_matrix(seq_len=self.seq_len, memory_len=self.memory_len,
                                  support=self.support, concentration=self.concentration,
                                  language_seed=self.language_seed)
    self._matrix.setflags(write=False)
    # Inverse-CDF sampling of the source j ~ A[i, :] over the memory columns; the CDF is
    # forced to 1 from each row's last support column on, so rounding can never pick a
    # column outside the support.
    memory = self._matrix[:, :self.memory_len]
    cdf = np.cumsum(memory, axis=1)
    for i in range(self.memory_len, self.seq_len):
      cdf[i, np.flatnonzero(memory[i])[-1]:] = 1.0
    self._cdf = cdf[self.memory_len:]  # [n - m, m]
    self._key = _combine(_mix64(np.uint64(self.language_seed % 2**64)), _SPLIT_IDS[split])

  def __len__(self) -> int:
    return self.num_examples

  def __repr__(self) -> str:
    return (f'SyntheticCopyLM(split={self.split!r}, seq_len={self.seq_len}, '
            f'vocab_size={self.vocab_size}, copy_prob={self.copy_prob}, '
            f'concentration={self.concentration}, language_seed={self.language_seed}, '
            f'num_examples={self.num_examples}, memory_len={self.memory_len}, '
            f'support={self.support})')

  def context_matrix(self) -> np.ndarray:
    """A, float64 [n, n]: row i >= m is a distribution over memory positions j < m <= i;
    rows i < m (the uniform memory) are zero. Depends only on the language_seed and the shape
    knobs."""
    return self._matrix.copy()

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    """{'tokens': int32 [n], 'optimal_nll': float32 [n]} for one index in [0, len)."""
    if not _is_int(index):
      raise TypeError(f'index must be an integer, got {type(index).__name__}.')
    batch = self.get_batch([index])
    return {name: value[0] for name, value in batch.items()}

  def get_batch(self, indices: Iterable[int]) -> dict[str, np.ndarray]:
    """The examples at ``indices``, stacked: tokens int32 [B, n], optimal_nll float32 [B, n]."""
    idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
    idx = idx.reshape(-1)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
      raise TypeError(f'indices must be integers, got dtype {idx.dtype}.')
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= self.num_examples):
      bad = idx[(idx < 0) | (idx >= self.num_examples)][0]
      raise IndexError(f'index {bad} is out of range for {self.split!r} with '
                       f'{self.num_examples} examples.')
    if idx.size > _CHUNK:  # bounded temporaries: large batches stay in cache
      parts = [self._generate(idx[start:start + _CHUNK]) for start in range(0, idx.size, _CHUNK)]
      return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return self._generate(idx)

  def _generate(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    n, m, V = self.seq_len, self.memory_len, self.vocab_size
    u = _uniforms(_combine(self._key, idx.astype(np.uint64)), (3, n))  # [B, 3, n]
    fresh = np.minimum((u[:, 0] * V).astype(np.int32), V - 1)  # uniform symbols
    is_copy = u[:, 1, m:] < self.copy_prob  # [B, n - m]
    source = (u[:, 2, m:, None] >= self._cdf[None]).sum(-1)  # j ~ A[i, :], [B, n - m]
    tokens = fresh.copy()
    copied = np.take_along_axis(fresh[:, :m], source, axis=1)  # memory is never overwritten
    tokens[:, m:] = np.where(is_copy, copied, fresh[:, m:])
    return {'tokens': tokens, 'optimal_nll': self.optimal_nll(tokens)}

  def optimal_probs(self, tokens: np.ndarray) -> np.ndarray:
    """p_opt(x_i = s | x_<i) for every position and symbol: float64 [..., n, V]."""
    tokens = np.asarray(tokens)
    onehot = tokens[..., :, None] == np.arange(self.vocab_size)  # [..., n, V]
    copy = np.einsum('ij,...jv->...iv', self._matrix, onehot.astype(np.float64))
    probs = (1.0 - self.copy_prob) / self.vocab_size + self.copy_prob * copy
    probs[..., :self.memory_len, :] = 1.0 / self.vocab_size
    return probs

  def optimal_nll(self, tokens: np.ndarray) -> np.ndarray:
    """-log p_opt(x_i | x_<i) for given tokens [..., n]: float32 [..., n]."""
    tokens = np.asarray(tokens)
    same = tokens[..., :, None] == tokens[..., None, :]  # [..., n (i), n (j)]
    mass = np.einsum('ij,...ij->...i', self._matrix, same.astype(np.float64))
    probs = (1.0 - self.copy_prob) / self.vocab_size + self.copy_prob * mass
    probs[..., :self.memory_len] = 1.0 / self.vocab_size
    return (-np.log(probs)).astype(np.float32)
