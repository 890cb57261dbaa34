"""Reading a split of N examples for ever, in a new seeded order each epoch: train row k
reads example perm_e[k mod N] of epoch e = k // N. Row k is a function of (seed, k), so a
random-access source resumes exactly from a saved row index."""

from __future__ import annotations

import functools

import numpy as np

TRAIN_EPOCHS = 1000  # a train split is this many epochs long, so an index iterator keeps going
_ORDER_STREAM = 0x0DE5  # a seed word for epoch orders, apart from any stream of the rows


@functools.lru_cache(maxsize=4)  # rows are read in order: this epoch's and the last few
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, _ORDER_STREAM, epoch]).permutation(n)


def epoch_example(index: int, n: int, seed: int) -> int:
  """The example (of n) that train row ``index`` reads: ``perm_e[index % n]``, e = index // n,
  perm_e a permutation of range(n) seeded by (seed, e)."""
  epoch, k = divmod(int(index), n)
  return int(_permutation(n, int(seed), epoch)[k])


def num_rows(n: int, split: str) -> int:
  """Rows of a source of n examples: ``TRAIN_EPOCHS`` epochs for 'train', one pass else."""
  return n * (TRAIN_EPOCHS if split == 'train' else 1)


def example_of_row(index: int, n: int, split: str, seed: int) -> int:
  """The example (of n) that row ``index`` reads: train rows follow each epoch's order
  (``epoch_example``); other splits are read in stored order."""
  if not 0 <= index < num_rows(n, split):
    raise IndexError(f'row {index} of a {num_rows(n, split)}-row source')
  return epoch_example(index, n, seed) if split == 'train' else int(index)
