"""The one seeded order in which every source reads its train split, epoch after epoch.

A split of n examples is read for ever: row k of the train stream reads example
``perm_e[k mod n]`` of epoch e = k // n, where ``perm_e`` is
``np.random.default_rng([seed, e]).permutation(n)``, a new permutation each epoch. Row k is
a function of (seed, k) alone, so a reader resumes exactly from a saved row index. The
stream is ``ENDLESS`` rows long whatever n (an index iterator never runs out).

Who reads it: the index sources (``text``, ``bert_pretraining``, ``glue``, ``squad``) through
``IndexIterator``, global batch j holding rows [j B, (j + 1) B), each process its slice; the
pre-packed copy the same way (``prepacked.BatchIndices``); the streaming TFDS reader, process
p taking documents p, p + P, ... of the stream of records (``tfds_text``). Other splits are
read once in stored order (``StoredOrder``).

The seed words are (seed, epoch), no salt: the order ``text`` has always used, so the
Shakespeare results of RESULTS.md are read in it. (NumPy's SeedSequence treats trailing zero
words as absent: epoch 0 of seed s draws the stream of ``default_rng(s)``.)

``STATE_VERSION`` is saved in every train iterator's state since this order replaced the
sources' own (and one packer replaced two): a state without it was written by older code.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from fixed_head.errors import UsageError

ENDLESS = 2**31 - 1  # rows of a train split, whatever its number of examples
STATE_VERSION = 2  # of the train iterators' saved states; older ones carry no 'version'


def permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  """Epoch ``epoch``'s order of n examples: a permutation of range(n), int32 [n] (int64 from
  2**31 examples on), so that LM1B's 30M records hold 120 MB an epoch."""
  drawn = np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))
  return drawn.astype(np.int32) if n < 2**31 else drawn


class EpochOrder:
  """Train row k -> the example (of n) it reads, ``perm_{k // n}[k % n]``; ``len`` is
  ``ENDLESS``. A random-access source (``grain.MapDataset.source(order)`` reads it); the
  permutations of the last two epochs read are kept, so each is drawn once."""

  def __init__(self, n: int, seed: int):
    if int(n) < 1:
      raise ValueError(f'an order of {n} examples: there must be at least one.')
    self.n, self.seed = int(n), int(seed)
    self._permutation = functools.lru_cache(maxsize=2)(
        lambda epoch: permutation(self.n, self.seed, epoch))

  def __len__(self) -> int:
    return ENDLESS

  def take(self, rows) -> np.ndarray:
    """The examples that ``rows`` (int [k]) read: int64 [k]."""
    rows = np.asarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= ENDLESS):
      raise IndexError(f'row {rows[(rows < 0) | (rows >= ENDLESS)][0]} of a train stream of '
                       f'{ENDLESS} rows')
    epochs, offsets = np.divmod(rows, self.n)
    out = np.empty_like(rows)
    for epoch in np.unique(epochs):
      here = epochs == epoch
      out[here] = self._permutation(int(epoch))[offsets[here]]
    return out

  def __getitem__(self, row: int) -> int:  # one row at a time, as Grain reads (no arrays)
    row = int(row)
    if not 0 <= row < ENDLESS:
      raise IndexError(f'row {row} of a train stream of {ENDLESS} rows')
    epoch, offset = divmod(row, self.n)
    return int(self._permutation(epoch)[offset])


class StoredOrder:
  """Row i -> example i, for i < n: one pass in stored order (an eval split)."""

  def __init__(self, n: int):
    self.n = int(n)

  def __len__(self) -> int:
    return self.n

  def take(self, rows) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= self.n):
      raise IndexError(f'row {rows[(rows < 0) | (rows >= self.n)][0]} of a {self.n}-row source')
    return rows

  def __getitem__(self, row: int) -> int:
    return int(self.take([int(row)])[0])


def of_split(n: int, split: str, seed: int) -> EpochOrder | StoredOrder:
  """The order split ``split`` of n examples is read in: ``EpochOrder`` for 'train', else
  ``StoredOrder``."""
  return EpochOrder(n, seed) if split == 'train' else StoredOrder(n)


def check_state(state: Mapping[str, Any], reader: str) -> None:
  """Raises a one-line UsageError unless ``state`` was saved by a train iterator of this
  code (``STATE_VERSION``); ``reader`` names the iterator, for the message."""
  version = state.get('version') if isinstance(state, Mapping) else None
  if version != STATE_VERSION:
    saved = f'version {version}' if version is not None else 'version 1 (no version field)'
    raise UsageError(
        f"the checkpoint's data state ({reader}) is {saved}, this code reads version "
        f'{STATE_VERSION}: since then the train examples are read in another order '
        '(fixed_head/data/order.py) and packed by another packer, so the run cannot go on '
        'reading the data it was reading; start a new --workdir, or resume with the code '
        'that wrote the checkpoint.')
