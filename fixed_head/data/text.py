"""A local text corpus as a language-modelling source (``config.data.name = 'text'``).

A glob of UTF-8 files, one document per line or per file, is split deterministically
into 'train' and 'eval' documents, tokenised with the run's tokenizer (bytes, or a
SentencePiece model trained on ``train_texts``, the train documents, the first time), packed into rows of n tokens with
segment ids and positions (or padded, one document per row), and held in memory.

The train split repeats forever in a new seeded order each epoch (``order.EpochOrder``, seed
``data.shuffle_seed``): index k reads row perm_e[k mod R] of epoch e = k // R, so the batch
iterator's position (a row index) is all a checkpoint needs for an exact resume. The eval
split is one pass in file order. Meant for corpora that fit in memory; LM1B goes through
TFDS instead.
"""

from __future__ import annotations

import glob as glob_lib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from fixed_head.data import order, packing, rows, tokenizers
from fixed_head.data import shakespeare
from fixed_head.errors import UsageError

SPLITS = ('train', 'eval')


def read_documents(pattern: str, doc_per: str = 'line') -> list[str]:
  """Documents of the files matching ``pattern`` (sorted), one per non-empty line
  (``doc_per='line'``) or one per file ('file')."""
  if doc_per not in ('line', 'file'):
    raise UsageError(f"data.doc_per={doc_per!r}: must be 'line' or 'file'.")
  paths = sorted(p for p in glob_lib.glob(os.path.expanduser(pattern), recursive=True)
                 if os.path.isfile(p))
  if not paths:
    hint = shakespeare.fetch_hint(pattern) or ('; give a glob of UTF-8 text files, e.g. '
                                               '"~/corpus/*.txt"')
    raise UsageError(f'data.files={pattern!r} matches no file{hint}.')
  docs = []
  for path in paths:
    try:
      with open(path, encoding='utf-8') as f:
        text = f.read()
    except UnicodeDecodeError as e:
      raise UsageError(f'{path} is not valid UTF-8 (byte {e.start}: {e.reason}); convert it '
                       'or leave it out of data.files.') from None
    except OSError as e:
      raise UsageError(f'{path} cannot be read: {e.strerror}.') from None
    if doc_per == 'file':
      docs.append(text.strip())
    else:
      docs.extend(line.strip() for line in text.splitlines())
  docs = [d for d in docs if d]
  if not docs:
    raise UsageError(f'data.files={pattern!r}: the {len(paths)} file(s) hold no text.')
  return docs


def split_documents(docs: list[str], split: str, eval_fraction: float,
                    seed: int) -> list[str]:
  """Each document goes to 'eval' with probability ``eval_fraction`` (seeded, fixed for a
  given corpus), else to 'train'; at least one document lands in each."""
  if not 0.0 < eval_fraction < 1.0:
    raise UsageError(f'data.eval_fraction={eval_fraction}: must lie in (0, 1).')
  if len(docs) < 2:
    raise UsageError('data.files: at least 2 documents are needed for a train/eval split.')
  is_eval = np.random.default_rng(seed).random(len(docs)) < eval_fraction
  if is_eval.all() or not is_eval.any():
    is_eval[:] = False
    is_eval[-1] = True
  chosen = is_eval if split == 'eval' else ~is_eval
  return [d for d, keep in zip(docs, chosen) if keep]


def train_texts(options: Mapping[str, Any]) -> list[str]:
  """The train documents of a complete data config: what its SentencePiece model learns."""
  return split_documents(read_documents(options['files'], options['doc_per']), 'train',
                         options['eval_fraction'], options['split_seed'])


class TextFilesLM:
  """Random-access source of packed rows from local text files.

  Rows: {'tokens', 'segment_ids', 'positions'}: int32 [n] each (segment id 0 = padding).
  """

  # What its rows hold, known without reading one (fixed_head/data/rows.py).
  ROWS = rows.LM

  # An index iterator's state saved before order.STATE_VERSION reads the same rows here: the
  # one order is the one this source always had (data.IndexIterator.set_state).
  READS_V1_STATES = True
  # The config fields that choose the tokenizer (the run's resolver reads them, not the
  # source), with their defaults: bytes, or a SentencePiece model trained on at most
  # tokenizer_max_sentences train documents.
  TOKENIZER_FIELDS = {'tokenizer': 'byte', 'tokenizer_path': None, 'vocab_size': None,
                      'tokenizer_max_sentences': 100_000}

  def __init__(self, *, split: str, files: str, seq_len: int, tokenizer,
               doc_per: str = 'line', eval_fraction: float = 0.05, split_seed: int = 0,
               shuffle_seed: int = 0, packing_mode: str = 'pack', long_docs: str = 'split',
               num_examples: int | None = None, log=print):
    if split not in SPLITS:
      raise ValueError(f'split={split!r}: must be one of {SPLITS}.')
    if packing_mode not in ('pack', 'pad'):
      raise UsageError(f"data.packing_mode={packing_mode!r}: must be 'pack' or 'pad'.")
    docs = read_documents(files, doc_per)
    self.tokenizer = tokenizer
    self.split, self.seq_len, self.vocab_size = split, seq_len, tokenizer.vocab_size
    self.shuffle_seed = shuffle_seed
    mine = split_documents(docs, split, eval_fraction, split_seed)
    pack = packing.pack_documents if packing_mode == 'pack' else packing.pad_documents
    rows = pack(tokenizers.encode_documents(self.tokenizer, mine), seq_len,
                long_docs=long_docs)
    self._rows = packing.stack_rows(rows)
    self.stats = rows.stats
    self.num_rows = self.stats.rows
    log(f'data {split}: {self.stats.documents} documents -> {self.num_rows} rows of {seq_len} '
        f'tokens ({self.stats.fill:.0%} filled); {self.stats.split} split and '
        f'{self.stats.truncated} truncated documents, {self.stats.dropped_tokens} tokens '
        f'dropped, {self.stats.empty_documents} empty skipped.')
    self.order = order.of_split(self.num_rows, split, shuffle_seed)
    default = len(self.order)  # order.ENDLESS for 'train'
    self.num_examples = default if num_examples is None else min(num_examples, default)

  def __len__(self) -> int:
    return self.num_examples

  def row_index(self, indices: np.ndarray) -> np.ndarray:
    """Which stored row each example index reads (epoch-wise seeded order for 'train')."""
    return self.order.take(indices)

  def get_batch(self, indices: Iterable[int]) -> dict[str, np.ndarray]:
    rows = self.row_index(np.fromiter(indices, np.int64))
    return {key: value[rows] for key, value in self._rows.items()}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {key: value[0] for key, value in self.get_batch([index]).items()}
