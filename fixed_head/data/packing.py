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

One packer (``Packer``) makes every packed row: the eval splits' and ``text``'s rows
(``pack_documents``, ``pad_documents``), and the streaming TFDS train rows, where it reads
chunks of documents from a Grain iterator and saves a small exact state (``get_state``).

Why not ``grain.experimental.FirstFitPackIterDataset``: compared row for row on the same
documents (tests/test_packing.py, ``test_grain_first_fit_packing_is_not_ours``), it (1) cuts a
document longer than n to n tokens, where ``long_docs='split'`` (the default) keeps every
token in n-token pieces; (2) with more than one bin places a document in the first open row
it fits, so rows no longer hold the documents in stream order; with one bin its rows match
ours on documents of at most n tokens; (3) writes ``tokens_segment_ids`` /
``tokens_positions`` instead of ``segment_ids`` / ``positions``, and counts nothing
(``PackingStats``); (4) its state is not this layout, which saved runs and unfinished
pre-packed copies hold.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

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


MODES = ('pack', 'pad')


def _check(seq_len: int, long_docs: str, mode: str = 'pack') -> None:
  if not isinstance(seq_len, (int, np.integer)) or seq_len <= 0:
    raise UsageError(f'seq_len={seq_len!r} must be a positive int (the row length n).')
  if long_docs not in LONG_DOCS:
    raise UsageError(f'long_docs={long_docs!r} is not one of {list(LONG_DOCS)}.')
  if mode not in MODES:
    raise UsageError(f'packing mode {mode!r} is not one of {list(MODES)}.')


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


class Packer(Iterator[Row]):
  """Greedy packing of a stream of documents into rows {'tokens', 'segment_ids',
  'positions'}: int32 [seq_len] each; ``stats`` counts what it has read and yielded.

  ``chunks`` yields sequences of documents (a chunk may hold one). Mode 'pack': pieces (whole
  documents, or the n-token pieces of a long one) are appended to the current row while they
  fit; a piece that does not fit closes the row (padded with 0s) and opens the next. Mode
  'pad': one piece per row. Deterministic; lazy (reads a chunk when a row needs it).
  ``trusted``: documents are int32 arrays of ids >= 0 already (``tokenizers`` makes them), so
  they are not checked.

  Checkpointable when ``chunks`` is (``get_state`` / ``set_state``, as a Grain iterator):
  state {'parent': the chunk iterator's state before the chunk being read (or its current
  state between chunks), 'next_doc': documents of that chunk already started, 'doc_piece':
  pieces of the last started one already in earlier rows (None: it is done), 'stats': the
  counts}. Restoring re-reads that one chunk.
  """

  def __init__(self, chunks: Iterator[Sequence[Sequence[int]]], seq_len: int, *,
               mode: str = 'pack', long_docs: str = 'split', trusted: bool = False,
               stats: PackingStats | None = None):
    _check(seq_len, long_docs, mode)
    self._parent, self._n, self._mode, self._long_docs = chunks, int(seq_len), mode, long_docs
    self._trusted = trusted
    self.stats = PackingStats() if stats is None else stats
    self._read = 0  # documents read, to name one in errors
    self._chunk = None  # [parent state before it, its documents, next document index]
    self._pieces = None  # [pieces of the document being placed, next piece index]

  def _next_piece(self) -> np.ndarray:
    """The next piece to place (left pending until ``_take``)."""
    while self._pieces is None:
      if self._chunk is None:
        state = (copy.deepcopy(self._parent.get_state()) if hasattr(self._parent, 'get_state')
                 else None)
        self._chunk = [state, list(next(self._parent)), 0]
      _, docs, index = self._chunk
      if index == len(docs):
        self._chunk = None
        continue
      self._chunk[2] += 1
      pieces = document_pieces(docs[index], self._n, self._long_docs, self.stats,
                               index=self._read, trusted=self._trusted)
      self._read += 1
      if pieces:
        self._pieces = [pieces, 0]
    return self._pieces[0][self._pieces[1]]

  def _take(self) -> None:
    self._pieces[1] += 1
    if self._pieces[1] == len(self._pieces[0]):
      self._pieces = None

  def __next__(self) -> Row:
    pieces, used = [], 0
    while used < self._n:
      try:
        piece = self._next_piece()
      except StopIteration:
        if pieces:
          break
        raise
      if pieces and used + piece.size > self._n:
        break  # the piece opens the next row
      pieces.append(piece)
      used += piece.size
      self._take()
      if self._mode == 'pad':
        break
    return make_row(pieces, self._n, self.stats)

  def get_state(self) -> dict[str, Any]:
    if self._chunk is None:
      return {'parent': self._parent.get_state(), 'next_doc': 0, 'doc_piece': None,
              'stats': dataclasses.asdict(self.stats)}
    return {'parent': self._chunk[0], 'next_doc': self._chunk[2],
            'doc_piece': None if self._pieces is None else self._pieces[1],
            'stats': dataclasses.asdict(self.stats)}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state['parent'])
    self.stats = PackingStats(**state['stats'])
    self._chunk, self._pieces = None, None
    next_doc = int(state['next_doc'])
    if next_doc or state['doc_piece'] is not None:  # re-read the chunk being placed
      self._chunk = [copy.deepcopy(state['parent']), list(next(self._parent)), next_doc]
    if state['doc_piece'] is not None:  # its last started document was counted already
      doc = self._chunk[1][next_doc - 1]
      self._pieces = [document_pieces(doc, self._n, self._long_docs, PackingStats(),
                                      trusted=self._trusted),
                      int(state['doc_piece'])]


def pack_documents(docs: Iterable[Sequence[int]], seq_len: int, *, long_docs: str = 'split',
                   stats: PackingStats | None = None) -> Packer:
  """Greedily packs documents, in order, into rows {'tokens', 'segment_ids', 'positions'}
  of int32 [seq_len] (``Packer``, mode 'pack'). Counts go to the returned iterator's
  ``.stats`` (``stats``, if given, is updated in place)."""
  return Packer(([doc] for doc in docs), seq_len, long_docs=long_docs, stats=stats)


def pad_documents(docs: Iterable[Sequence[int]], seq_len: int, *, long_docs: str = 'split',
                  stats: PackingStats | None = None) -> Packer:
  """Packing off: one document piece per row (segment id 1), padded with 0s to int32
  [seq_len]; long documents are split or truncated as in ``pack_documents``."""
  return Packer(([doc] for doc in docs), seq_len, mode='pad', long_docs=long_docs, stats=stats)


def stack_rows(rows: Iterable[Row]) -> dict[str, np.ndarray]:
  """Rows -> one dict of arrays with a leading row axis (int32 [num_rows, n] for packed
  text; a row's scalars, such as a label, become [num_rows])."""
  rows = list(rows)
  if not rows:
    raise UsageError('stack_rows got no rows: check that the documents are not all empty.')
  return {key: np.stack([row[key] for row in rows]) for key in rows[0]}
