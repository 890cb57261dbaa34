"""Packing tokenized documents into fixed-length rows (pure NumPy).

A row of length n holds one or more document pieces back to back, then padding:

    tokens       int32 [n]  the pieces' tokens, 0 in the padding
    segment_ids  int32 [n]  1, 2, ... for the pieces in the row, 0 in the padding
    positions    int32 [n]  0, 1, ... restarting in every piece, 0 in the padding

the format ``fixed_head.nn`` expects (equal segment ids attend to each other). Documents
are used as given: the caller adds bos/eos if wanted. A document longer than n is split into
n-token pieces (``long_docs='split'``, each piece its own segment, positions restarting) or cut
to its first n tokens (``'truncate'``). Empty documents are skipped. Nothing is dropped
silently: every iterator returned here carries a ``PackingStats`` (``.stats``), complete once
the iterator is exhausted, with the counts of split and truncated documents and dropped tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from fixed_head.errors import UsageError

Row = dict[str, np.ndarray]

LONG_DOCS = ('split', 'truncate')


@dataclasses.dataclass
class PackingStats:
  """Counts over one pass; complete once the row iterator is exhausted."""

  documents: int = 0  # non-empty documents read
  empty_documents: int = 0  # empty documents skipped
  rows: int = 0  # rows yielded
  tokens: int = 0  # document tokens written into rows
  padding_tokens: int = 0  # padding positions in the rows
  split: int = 0  # documents longer than n, split into pieces
  truncated: int = 0  # documents longer than n, cut to n tokens
  dropped_tokens: int = 0  # tokens cut off by truncation

  @property
  def fill(self) -> float:
    """Fraction of row positions holding document tokens (1 = no padding)."""
    total = self.tokens + self.padding_tokens
    return self.tokens / total if total else 0.0


class PackedRows(Iterator[Row]):
  """An iterator of rows with the ``stats`` of what it has read and yielded so far."""

  def __init__(self, rows: Iterator[Row], stats: PackingStats):
    self._rows = rows
    self.stats = stats

  def __next__(self) -> Row:
    return next(self._rows)


def _check(seq_len: int, long_docs: str) -> None:
  if not isinstance(seq_len, (int, np.integer)) or seq_len <= 0:
    raise UsageError(f'seq_len={seq_len!r} must be a positive int (the row length n).')
  if long_docs not in LONG_DOCS:
    raise UsageError(f'long_docs={long_docs!r} is not one of {list(LONG_DOCS)}.')


def document_pieces(doc: Sequence[int], n: int, long_docs: str, stats: PackingStats, *,
                    index: int = 0, trusted: bool = False) -> list[np.ndarray]:
  """One document's pieces of 1..n tokens (int32 [k] each; none if it is empty), counted
  into ``stats``; ``index`` names the document in errors. ``trusted``: ``doc`` is already a
  1-D int32 array of ids >= 0 (as tokenizers make), so the checks are skipped."""
  tokens = doc if trusted else np.asarray(doc)
  if not trusted and tokens.ndim != 1:
    raise ValueError(f'Document {index} has shape {tokens.shape}: each document must be a '
                     '1-D sequence of token ids.')
  if tokens.size == 0:
    stats.empty_documents += 1
    return []
  if not trusted:
    if not np.issubdtype(tokens.dtype, np.integer):
      raise ValueError(f'Document {index} has dtype {tokens.dtype}: token ids must be ints.')
    if tokens.min() < 0 or tokens.max() > np.iinfo(np.int32).max:
      raise ValueError(f'Document {index} has token ids outside [0, 2**31): '
                       f'min {tokens.min()}, max {tokens.max()}.')
    tokens = tokens.astype(np.int32)
  stats.documents += 1
  if tokens.size <= n:
    return [tokens]
  if long_docs == 'truncate':
    stats.truncated += 1
    stats.dropped_tokens += tokens.size - n
    return [tokens[:n]]
  stats.split += 1
  return [tokens[start:start + n] for start in range(0, tokens.size, n)]


def _pieces(docs: Iterable[Sequence[int]], n: int, long_docs: str,
            stats: PackingStats) -> Iterator[np.ndarray]:
  """Each document's pieces of 1..n tokens (int32 [k]), counting into ``stats``."""
  for index, doc in enumerate(docs):
    yield from document_pieces(doc, n, long_docs, stats, index=index)


def make_row(pieces: Sequence[np.ndarray], n: int, stats: PackingStats) -> Row:
  """Pieces (at most n tokens in all) -> one row of int32 [n] arrays, counted into ``stats``."""
  row = {key: np.zeros((n,), np.int32) for key in ('tokens', 'segment_ids', 'positions')}
  start = 0
  for segment, piece in enumerate(pieces, start=1):
    end = start + piece.size
    row['tokens'][start:end] = piece
    row['segment_ids'][start:end] = segment
    row['positions'][start:end] = np.arange(piece.size, dtype=np.int32)
    start = end
  stats.rows += 1
  stats.tokens += start
  stats.padding_tokens += n - start
  return row


def pack_documents(docs: Iterable[Sequence[int]], seq_len: int, *, long_docs: str = 'split',
                   stats: PackingStats | None = None) -> PackedRows:
  """Greedily packs documents, in order, into rows {'tokens', 'segment_ids', 'positions'}
  of int32 [seq_len].

  Pieces (whole documents, or the n-token pieces of a long one) are appended to the current
  row while they fit; a piece that does not fit closes the row (padded with 0s) and starts
  the next. Deterministic; lazy (reads ``docs`` as rows are taken). Counts go to the
  returned iterator's ``.stats`` (``stats``, if given, is updated in place).
  """
  _check(seq_len, long_docs)
  stats = PackingStats() if stats is None else stats

  def rows() -> Iterator[Row]:
    current, used = [], 0
    for piece in _pieces(docs, seq_len, long_docs, stats):
      if used + piece.size > seq_len:
        yield make_row(current, seq_len, stats)
        current, used = [], 0
      current.append(piece)
      used += piece.size
    if current:
      yield make_row(current, seq_len, stats)

  return PackedRows(rows(), stats)


def pad_documents(docs: Iterable[Sequence[int]], seq_len: int, *, long_docs: str = 'split',
                  stats: PackingStats | None = None) -> PackedRows:
  """Packing off: one document piece per row (segment id 1), padded with 0s to int32
  [seq_len]; long documents are split or truncated as in ``pack_documents``."""
  _check(seq_len, long_docs)
  stats = PackingStats() if stats is None else stats
  rows = (make_row([piece], seq_len, stats)
          for piece in _pieces(docs, seq_len, long_docs, stats))
  return PackedRows(rows, stats)


def stack_rows(rows: Iterable[Row]) -> dict[str, np.ndarray]:
  """Rows -> one dict of arrays with a leading row axis (int32 [num_rows, n] for packed
  text; a row's scalars, such as a label, become [num_rows])."""
  rows = list(rows)
  if not rows:
    raise UsageError('stack_rows got no rows: check that the documents are not all empty.')
  return {key: np.stack([row[key] for row in rows]) for key in rows[0]}
