"""BERT pre-training rows: masked LM + next-sentence prediction, as Google BERT's
``create_pretraining_data.py`` makes them, but built on demand by index.

Documents are lists of sentences: local text (``data.files``, Google's format: one sentence
per line, documents separated by blank lines) or TFDS datasets (``data.dataset``, e.g.
``'wikipedia/20230601.en'``, or a list of them, whose documents are concatenated; a record's
text is split into sentences at newlines, then by pysbd, ``data.sentence_splitter``:
``fixed_head.data.sentences``).
Sentences are WordPiece-tokenised with the run's vocabulary (``fixed_head.data.vocab``:
``data.vocab``, the vocabulary of the run given as ``init_from``, the workdir's, or one
trained on ``train_texts``, the first train documents).

The rows are Google's instances (``fixed_head.data.bert_instances``): ``data.dupe_factor``
walks of every train document (one of every eval document) by ``create_instances_from_document``
cut it into chunks, as many as its length gives (a stub gives one, a long article many; the
target length is drawn once per walk: ``seq_len - 3`` tokens, with probability
``short_seq_prob`` a random one in [2, seq_len - 3]). A chunk's A = its first sentences (a
random number of them), B = the rest (the actual next sentences, ``nsp_label`` 0) or, with
probability 1/2 or when the chunk is one sentence, sentences from a random other document
(``nsp_label`` 1, Google's ``is_random_next``); ``truncate_seq_pair``; [CLS] A [SEP] B [SEP];
then ``mask_tokens``.

Row k of the train split is a pure function of (``data.shuffle_seed``, split, k): epoch
e = k // N reads the N train instances in a seeded order new each epoch
(``order.EpochOrder``); instance i's pair is drawn by ``np.random.default_rng([shuffle_seed,
split_id, 2, i])``, its masks by ``[shuffle_seed, split_id, 3, i, e]`` (``data.masks=
'dynamic'``, the default: new masks each epoch, as RoBERTa found no worse) or ``[...,
3, i]`` (``'static'``: one set per instance, as Google's files written once, which repeat
``dupe_factor`` differently masked walks). A resumed run reads exactly the rows it would
have read; nothing is written to disk but, for TFDS, the instance counts (``data.index_dir``).
The train split is ``order.ENDLESS`` rows long; the eval split has one fixed row per eval
instance, in stored order, masks static.

Differences from Google (docs/bert.md lists them with the reasons): the random other
document is never the same one (unless only one holds text), the random replacement token is
never a special token, masks are dynamic by default, and whole-word masking is not done.

Row format (n = ``seq_len``, m = ``max_predictions_per_seq``):

  tokens            int32 [n]   [CLS] A [SEP] B [SEP], then [PAD]
  token_types       int32 [n]   0 for [CLS] A [SEP], 1 for B [SEP], 0 in the padding
  input_mask        int32 [n]   1 on real tokens, 0 in the padding
  masked_positions  int32 [m]   positions chosen for the masked LM (ascending), then 0
  masked_ids        int32 [m]   the original ids there, then 0
  masked_weights    float32 [m] 1 for a real prediction, 0 for padding
  nsp_label         int32 []    1: B is a random other document's; 0: B follows A
  weight            float32 []  1 (evaluation padding rows set it to 0)
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from fixed_head.data import bert_instances, order, packing, rows, sentences
from fixed_head.data import text as text_lib
from fixed_head.data import wordpiece
from fixed_head.errors import UsageError

SPLITS = ('train', 'eval')
SPLIT_IDS = {'train': 0, 'eval': 1}
MASKS = ('dynamic', 'static')
_PAIR, _MASKS = 2, 3  # seed words of an instance's pair and masks (1: the walks')
Row = dict[str, np.ndarray]


# Masking.

def mask_tokens(tokens: Sequence[int], rng: np.random.Generator, *, vocab_size: int,
                mask_id: int, special_ids: Sequence[int], masked_lm_prob: float = 0.15,
                max_predictions_per_seq: int, unmaskable_ids: Sequence[int] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Google BERT's ``create_masked_lm_predictions`` (no whole-word masking).

  ``tokens`` int [l] (the real tokens, [CLS] and [SEP] included, no padding) ->
  (masked tokens int32 [l], positions int32 [p] ascending, original ids int32 [p]) with
  p = min(max_predictions_per_seq, max(1, round(l * masked_lm_prob)), candidates): p
  candidate positions, those not holding ``unmaskable_ids`` (default ``special_ids``; BERT
  rows pass [CLS] and [SEP] only, as Google, so [UNK] is masked and predicted like any word),
  chosen uniformly; each becomes [MASK] with probability 0.8, a uniformly random id not in
  ``special_ids`` with probability 0.1, and stays with 0.1.
  """
  tokens = np.asarray(tokens, np.int32)
  special = np.unique(np.asarray(special_ids, np.int64))
  unmaskable = special if unmaskable_ids is None else np.asarray(unmaskable_ids, np.int64)
  candidates = np.flatnonzero(~np.isin(tokens, unmaskable))
  count = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))),
              len(candidates))
  positions = np.sort(rng.choice(candidates, count, replace=False)).astype(np.int32)
  original = tokens[positions]
  u = rng.random(count)
  # A random id among the vocab_size - len(special) non-special ones: draw r, then step past
  # each special id <= it (in ascending order).
  random_ids = rng.integers(0, vocab_size - len(special), count)
  for s in special:
    random_ids += random_ids >= s
  masked = tokens.copy()
  masked[positions] = np.where(u < 0.8, mask_id, np.where(u < 0.9, random_ids, original))
  return masked, positions, original


# Documents: D documents of sentences, each sentence int32 [k >= 1] token ids.

class Documents(Protocol):
  """Random access to tokenised documents."""

  def __len__(self) -> int:
    """D, the number of documents (some may hold no sentence)."""

  def num_sentences(self, doc: int) -> int:
    """Sentences in document ``doc`` (0 for an empty one)."""

  def sentence(self, doc: int, index: int) -> np.ndarray:
    """Sentence ``index`` of document ``doc``: int32 [k], k >= 1."""

  def sentence_lengths(self, doc: int) -> np.ndarray:
    """The tokens in each sentence of document ``doc``: int [S]."""

  def iter_sentence_lengths(self) -> Iterator[np.ndarray]:
    """``sentence_lengths`` of documents 0, 1, ..., D - 1 (one pass over the corpus)."""


class InMemoryDocuments:
  """Documents held as one flat int32 array of ids and offsets (all tokenised at once)."""

  def __init__(self, documents: Iterable[Iterable[Sequence[int]]]):
    ids, sentence_starts, doc_starts = [], [0], [0]
    for doc in documents:
      for sentence in doc:
        sentence = np.asarray(sentence, np.int32)
        if sentence.size:
          ids.append(sentence)
          sentence_starts.append(sentence_starts[-1] + sentence.size)
      doc_starts.append(len(sentence_starts) - 1)
    self.ids = np.concatenate(ids) if ids else np.zeros([0], np.int32)
    self.sentence_starts = np.asarray(sentence_starts, np.int64)
    self.doc_starts = np.asarray(doc_starts, np.int64)

  def __len__(self) -> int:
    return len(self.doc_starts) - 1

  @property
  def num_tokens(self) -> int:
    return int(self.ids.size)

  def num_sentences(self, doc: int) -> int:
    return int(self.doc_starts[doc + 1] - self.doc_starts[doc])

  def sentence(self, doc: int, index: int) -> np.ndarray:
    s = int(self.doc_starts[doc]) + index
    return self.ids[self.sentence_starts[s]:self.sentence_starts[s + 1]]

  def sentence_lengths(self, doc: int) -> np.ndarray:
    return np.diff(self.sentence_starts[self.doc_starts[doc]:self.doc_starts[doc + 1] + 1])

  def iter_sentence_lengths(self) -> Iterator[np.ndarray]:
    return (self.sentence_lengths(doc) for doc in range(len(self)))


def has_text(sentence: str) -> bool:
  """Whether BERT's basic tokenizer finds any token in ``sentence``."""
  return any(not (wordpiece.is_whitespace(c) or wordpiece.is_control(c) or
                  c in ('\x00', '\ufffd')) for c in sentence)


def split_sentences(text: str, splitter: str = 'pysbd') -> list[str]:
  """A record's text -> its sentences with a token (``sentences.split_sentences``: lines,
  then ``splitter``, pysbd unless 'regex')."""
  return [s for s in sentences.split_sentences(text, splitter) if has_text(s)]


class _LazyDocument:
  """One record's sentences as text, each tokenised the first time it is asked for."""

  def __init__(self, sentences: list[str]):
    self.texts = sentences
    self.ids: list[np.ndarray | None] = [None] * len(sentences)


class TfdsDocuments:
  """Records of TFDS splits (concatenated) as documents, read and tokenised on demand.

  ``parts``: (reader, first, stop) per split: ``reader.texts(indices)`` gives the texts of
  records [first, stop) (``tfds_text.ReadDocuments``). The last ``cache_documents``
  documents used are kept (their sentences tokenised as they are asked for).
  """

  def __init__(self, parts: Sequence[tuple], tokenizer, *, cache_documents: int = 8192,
               sentence_splitter: str = 'pysbd'):
    self.parts, self.sentence_splitter = list(parts), sentence_splitter
    self.tokenizer = tokenizer
    self.offsets = np.cumsum([0] + [stop - first for _, first, stop in self.parts])
    self._document = functools.lru_cache(maxsize=cache_documents)(self._read)

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def _read(self, doc: int) -> _LazyDocument:
    part = int(np.searchsorted(self.offsets, doc, side='right')) - 1
    reader, first, _ = self.parts[part]
    text = reader.texts([first + doc - int(self.offsets[part])])[0]
    return _LazyDocument(split_sentences(text, self.sentence_splitter))

  def num_sentences(self, doc: int) -> int:
    return len(self._document(doc).texts)

  def sentence(self, doc: int, index: int) -> np.ndarray:
    document = self._document(doc)
    if document.ids[index] is None:
      document.ids[index] = np.asarray(self.tokenizer.encode(document.texts[index]), np.int32)
    return document.ids[index]

  def sentence_lengths(self, doc: int) -> np.ndarray:
    return np.asarray([len(self.sentence(doc, i)) for i in range(self.num_sentences(doc))],
                      np.int64)

  def iter_sentence_lengths(self, block: int = 256) -> Iterator[np.ndarray]:
    """Reads the records ``block`` at a time (without keeping them: the pass is read once)."""
    for reader, first, stop in self.parts:
      for begin in range(first, stop, block):
        for text in reader.texts(range(begin, min(stop, begin + block))):
          texts = split_sentences(text, self.sentence_splitter)
          yield np.asarray([len(ids) for ids in self.tokenizer.encode_batch(texts)], np.int64)


# Instances.

def _non_empty(documents: Documents, doc: int, avoid: int | None = None) -> int:
  """``doc``, or the first document after it (cyclically) holding a sentence, not ``avoid``."""
  total = len(documents)
  for step in range(total):
    candidate = (doc + step) % total
    if candidate != avoid and documents.num_sentences(candidate):
      return candidate
  if avoid is not None and documents.num_sentences(avoid):
    return avoid  # the only document with text
  raise UsageError('data.files / data.dataset: none of the split\'s documents holds text.')


def truncate_seq_pair(tokens_a: np.ndarray, tokens_b: np.ndarray, max_num_tokens: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Google's ``truncate_seq_pair``, in closed form: one token at a time is removed from the
  longer of A and B (B on a tie), from its front or back with probability 1/2 each, until
  len(A) + len(B) <= ``max_num_tokens``."""
  la, lb = len(tokens_a), len(tokens_b)
  excess = la + lb - max_num_tokens
  if excess <= 0:
    return tokens_a, tokens_b
  first = min(excess, abs(la - lb))  # from the longer, down to the shorter's length
  rest = excess - first  # then alternately B, A, B, ...
  cut_a = (first if la > lb else 0) + rest // 2
  cut_b = (first if la <= lb else 0) + (rest + 1) // 2
  front_a, front_b = rng.binomial(cut_a, 0.5), rng.binomial(cut_b, 0.5)
  return tokens_a[front_a:la - (cut_a - front_a)], tokens_b[front_b:lb - (cut_b - front_b)]


def _gather(documents: Documents, doc: int, start: int, target: int) -> np.ndarray:
  """Sentences of ``doc`` from ``start`` on, until they hold ``target`` tokens or the document
  ends (at least one): int32 [l]."""
  pieces, length = [], 0
  for index in range(start, documents.num_sentences(doc)):
    pieces.append(documents.sentence(doc, index))
    length += len(pieces[-1])
    if length >= target:
      break
  return np.concatenate(pieces)


def pair_instance(documents: Documents, doc: int, chunk: bert_instances.Chunk,
                  rng: np.random.Generator, *, max_num_tokens: int
                  ) -> tuple[np.ndarray, np.ndarray, int, int]:
  """The (A, B) pair of ``chunk`` of document ``doc`` (``bert_instances.walk``): (tokens_a
  int32 [la >= 1], tokens_b int32 [lb >= 1], nsp_label, B's document), la + lb <=
  ``max_num_tokens``. A: sentences [start, a_end). B: [a_end, end) (nsp_label 0) or, for a
  random next, sentences of a random other document from a random start up to the target's
  remainder (nsp_label 1); then ``truncate_seq_pair``. The draws are ``rng``'s."""
  tokens_a = np.concatenate([documents.sentence(doc, j) for j in range(chunk.start, chunk.a_end)])
  if chunk.random_next:
    other = int(rng.integers(len(documents) - 1)) if len(documents) > 1 else 0
    other = _non_empty(documents, other + (other >= doc and len(documents) > 1), avoid=doc)
    start_b = int(rng.integers(documents.num_sentences(other)))
    tokens_b = _gather(documents, other, start_b, chunk.target - len(tokens_a))
    label, b_doc = 1, other
  else:
    tokens_b = np.concatenate([documents.sentence(doc, j) for j in range(chunk.a_end, chunk.end)])
    label, b_doc = 0, doc
  tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
  return tokens_a, tokens_b, label, b_doc


def make_row(tokens_a: np.ndarray, tokens_b: np.ndarray, nsp_label: int,
             rng: np.random.Generator, *, seq_len: int, max_predictions_per_seq: int,
             masked_lm_prob: float, tokenizer) -> Row:
  """[CLS] A [SEP] B [SEP], masked and padded: one row in the format of the module doc."""
  t = tokenizer
  real = np.concatenate([[t.cls_id], tokens_a, [t.sep_id], tokens_b, [t.sep_id]]).astype(np.int32)
  if len(real) > seq_len:
    raise ValueError(f'A and B hold {len(real) - 3} tokens, more than seq_len - 3 = '
                     f'{seq_len - 3}.')
  masked, positions, original = mask_tokens(
      real, rng, vocab_size=t.vocab_size, mask_id=t.mask_id, special_ids=t.special_ids,
      masked_lm_prob=masked_lm_prob, max_predictions_per_seq=max_predictions_per_seq,
      unmaskable_ids=(t.cls_id, t.sep_id))
  n, m, p = len(real), max_predictions_per_seq, len(positions)
  tokens = np.full([seq_len], t.pad_id, np.int32)
  tokens[:n] = masked
  token_types = np.zeros([seq_len], np.int32)
  token_types[len(tokens_a) + 2:n] = 1
  input_mask = np.zeros([seq_len], np.int32)
  input_mask[:n] = 1
  masked_positions, masked_ids = np.zeros([m], np.int32), np.zeros([m], np.int32)
  masked_weights = np.zeros([m], np.float32)
  masked_positions[:p], masked_ids[:p], masked_weights[:p] = positions, original, 1.0
  return {'tokens': tokens, 'token_types': token_types, 'input_mask': input_mask,
          'masked_positions': masked_positions, 'masked_ids': masked_ids,
          'masked_weights': masked_weights, 'nsp_label': np.array(nsp_label, np.int32),
          'weight': np.array(1.0, np.float32)}


# Reading the corpus.

def _as_list(value: str | Sequence[str]) -> list[str]:
  return [value] if isinstance(value, str) else list(value)


def read_sentence_documents(files: str | Sequence[str]) -> list[list[str]]:
  """Google's format from the files of one glob (or several): one sentence per line,
  documents separated by blank lines; sentences without a token and empty documents are
  dropped."""
  docs = []
  for pattern in _as_list(files):
    for file_text in text_lib.read_documents(pattern, 'file'):
      for block in re.split(r'\n[^\S\n]*\n', file_text):
        sentences = [line.strip() for line in block.splitlines() if has_text(line)]
        if sentences:
          docs.append(sentences)
  return docs


def _open_tfds(dataset: str, split: str, *, data_dir, feature: str, split_field: str):
  from fixed_head.data import tfds_text  # pylint: disable=g-import-not-at-top
  records = tfds_text.open_split(dataset, split, data_dir=data_dir, feature=feature,
                                 split_field=split_field)
  raw = tfds_text.open_raw(dataset, split, data_dir)
  return tfds_text.ReadDocuments(records, feature, raw=raw), len(records)


def _check_probability(name: str, value, low_open: bool) -> None:
  ok = isinstance(value, (int, float)) and (0 < value <= 1 if low_open else 0 <= value <= 1)
  if not ok:
    raise UsageError(f'data.{name}={value!r}: must be a probability in '
                     f'{"(0, 1]" if low_open else "[0, 1]"}.')


def _check_corpus(files, dataset) -> None:
  if (files is None) == (dataset is None):
    raise UsageError('data.files / data.dataset: give exactly one of them (a glob of text '
                     "files, or a TFDS dataset name such as 'wikipedia/20230601.en').")


def _check_options(*, seq_len, max_predictions_per_seq, masked_lm_prob, short_seq_prob,
                   eval_fraction, shuffle_seed, num_examples) -> None:
  """UsageError naming the first field of these that is out of range."""
  if not isinstance(seq_len, int) or seq_len < 8:
    raise UsageError(f'data.seq_len={seq_len!r}: must be an int >= 8 ([CLS] A [SEP] B [SEP] '
                     'needs room; BERT uses 128, then 512).')
  if (not isinstance(max_predictions_per_seq, int) or
      not 1 <= max_predictions_per_seq <= seq_len - 3):
    raise UsageError(f'data.max_predictions_per_seq={max_predictions_per_seq!r}: must be an '
                     f'int in [1, seq_len - 3 = {seq_len - 3}] (BERT: 20 for 128 tokens).')
  _check_probability('masked_lm_prob', masked_lm_prob, low_open=True)
  _check_probability('short_seq_prob', short_seq_prob, low_open=False)
  if not isinstance(eval_fraction, (int, float)) or not 0 < eval_fraction < 1:
    raise UsageError(f'data.eval_fraction={eval_fraction!r}: must lie in (0, 1).')
  if not isinstance(shuffle_seed, int) or shuffle_seed < 0:
    raise UsageError(f'data.shuffle_seed={shuffle_seed!r}: must be an int >= 0.')
  if num_examples is not None and (not isinstance(num_examples, int) or num_examples < 1):
    raise UsageError(f'num_examples={num_examples!r}: must be a positive int or None.')


def local_documents(files: str | Sequence[str], split: str, eval_fraction: float,
                    split_seed: int) -> list[list[str]]:
  """The documents of ``split`` of a local corpus (each one a list of sentences)."""
  return text_lib.split_documents(read_sentence_documents(files), split, eval_fraction,
                                  split_seed)


def tfds_parts(dataset: str | Sequence[str], split: str, *, data_dir, feature: str,
               train_split: str, eval_split: str | None, eval_fraction: float) -> list[tuple]:
  """(reader, first, stop) of each TFDS dataset for ``split``: 'train' reads ``train_split``
  but its last ``eval_fraction`` when ``eval_split`` is None, 'eval' that last part or all of
  ``eval_split``."""
  parts = []
  for name in _as_list(dataset):
    if split == 'eval' and eval_split is not None:
      reader, size = _open_tfds(name, eval_split, data_dir=data_dir, feature=feature,
                                split_field='data.eval_split')
      parts.append((reader, 0, size))
      continue
    reader, size = _open_tfds(name, train_split, data_dir=data_dir, feature=feature,
                              split_field='data.train_split')
    held_out = math.ceil(size * eval_fraction) if eval_split is None else 0
    if eval_split is None and size - held_out < 1:
      raise UsageError(f'data.eval_fraction={eval_fraction}: {name} {train_split!r} has '
                       f'{size} records, too few to hold some out; set data.eval_split.')
    parts.append((reader, 0, size - held_out) if split == 'train' else
                 (reader, size - held_out, size))
  return parts


def train_texts(options) -> Iterator[str]:
  """The first ``data.tokenizer_max_documents`` train documents of a complete data config
  (shared equally among its TFDS datasets), each as one text: what a new vocabulary learns."""
  max_documents = options['tokenizer_max_documents']
  if not isinstance(max_documents, int) or max_documents < 1:
    raise UsageError(f'data.tokenizer_max_documents={max_documents!r}: must be a '
                     'positive int.')
  _check_corpus(options['files'], options['dataset'])
  if options['files'] is not None:
    docs = local_documents(options['files'], 'train', options['eval_fraction'],
                           options['split_seed'])
    return ('\n'.join(d) for d in docs[:max_documents])
  parts = tfds_parts(options['dataset'], 'train', data_dir=options['data_dir'],
                     feature=options['feature'], train_split=options['train_split'],
                     eval_split=options['eval_split'], eval_fraction=options['eval_fraction'])
  share = math.ceil(max_documents / len(parts))
  return (text for reader, first, stop in parts
          for begin in range(first, min(stop, first + share), 256)
          for text in reader.texts(range(begin, min(stop, first + share, begin + 256))))


class BertPretrainingData:
  """Random-access source of BERT pre-training rows (format in the module doc).

  ``len``, ``[i]``, ``get_batch(indices)`` (the rows stacked; ``nsp_label`` and ``weight``
  become [b]), ``vocab_size``, ``seq_len``, ``tokenizer`` (the run's ``WordPieceTokenizer``).

  Local text (``files``): the documents go to 'eval' with probability ``eval_fraction``
  (seeded by ``split_seed``), else to 'train'; all are tokenised at once and held. TFDS
  (``dataset``): 'train' reads ``train_split`` of each dataset; 'eval' reads ``eval_split``,
  or, when that is None, the last ``eval_fraction`` of each ``train_split`` (which train then
  leaves out); records are read and tokenised on demand, the last ``cache_documents`` kept.
  """

  # What its rows hold, known without reading one (fixed_head/data/rows.py).
  ROWS = {**rows.BERT_INPUTS, 'masked_positions': ('predictions', np.int32),
          'masked_ids': ('predictions', np.int32),
          'masked_weights': ('predictions', np.float32), 'nsp_label': ('row', np.int32),
          **rows.WEIGHT}

  # The config fields that choose the vocabulary (the run's resolver reads them, not the
  # source), with their defaults; a new one is trained on the first tokenizer_max_documents
  # train documents (``train_texts``).
  TOKENIZER_FIELDS = {'vocab': None, 'vocab_size': 30522, 'lower_case': True,
                      'tokenizer_max_documents': 20_000}
  # Saved in the train iterator's state: a checkpoint of rows made another way is refused.
  ROWS_VERSION = 2
  ROWS_CHANGE = ("Google's instances, as many per document as its length gives; version 1 "
                 'made one row per document per epoch')

  def __init__(self, *, split: str, tokenizer, num_examples: int | None = None,
               seq_len: int = 128, max_predictions_per_seq: int = 20,
               masked_lm_prob: float = 0.15, short_seq_prob: float = 0.1, shuffle_seed: int = 0,
               files: str | Sequence[str] | None = None,
               dataset: str | Sequence[str] | None = None, data_dir: str | None = None,
               train_split: str = 'train', eval_split: str | None = None,
               eval_fraction: float = 0.01, split_seed: int = 0, feature: str = 'text',
               cache_documents: int = 8192, sentence_splitter: str = 'pysbd',
               dupe_factor: int = 10, masks: str = 'dynamic', index_dir: str | None = None,
               log: Callable[[str], None] = print):
    if split not in SPLITS:
      raise ValueError(f'split={split!r}: must be one of {SPLITS}.')
    _check_corpus(files, dataset)
    sentences.check_splitter(sentence_splitter)  # before anything is read
    _check_options(seq_len=seq_len, max_predictions_per_seq=max_predictions_per_seq,
                   masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob,
                   eval_fraction=eval_fraction, shuffle_seed=shuffle_seed,
                   num_examples=num_examples)
    if not isinstance(dupe_factor, int) or isinstance(dupe_factor, bool) or dupe_factor < 1:
      raise UsageError(f'data.dupe_factor={dupe_factor!r}: must be an int >= 1 (walks of each '
                       'train document; Google: 10).')
    if masks not in MASKS:
      raise UsageError(f'data.masks={masks!r}: not one of {list(MASKS)} (dynamic: drawn anew '
                       'each epoch; static: once per instance, as Google).')
    self.split, self.seq_len, self.shuffle_seed = split, seq_len, shuffle_seed
    self.masks = masks if split == 'train' else 'static'  # eval rows never change
    self.max_predictions_per_seq = max_predictions_per_seq
    self.masked_lm_prob, self.short_seq_prob = masked_lm_prob, short_seq_prob
    self.tokenizer = tokenizer
    if files is not None:
      mine = local_documents(files, split, eval_fraction, split_seed)
      self.documents = InMemoryDocuments([tokenizer.encode(s) for s in d] for d in mine)
      describe, detail = f'{_as_list(files)}', f', {self.documents.num_tokens} tokens'
      key = None  # tokenised whole at start-up: its index costs little more, and is not kept
    else:
      parts = tfds_parts(dataset, split, data_dir=data_dir, feature=feature,
                         train_split=train_split, eval_split=eval_split,
                         eval_fraction=eval_fraction)
      self.documents = TfdsDocuments(parts, tokenizer, cache_documents=cache_documents,
                                     sentence_splitter=sentence_splitter)
      if eval_split is not None:
        describe = f'{_as_list(dataset)} {train_split if split == "train" else eval_split!r}'
      else:
        describe = (f'{_as_list(dataset)} {train_split!r}, '
                    f'{"but" if split == "train" else "only"} its last {eval_fraction:g}')
      detail = ''
      key = bert_instances.digest(
          _as_list(dataset), split, train_split, eval_split, eval_fraction, data_dir, feature,
          sentence_splitter, bert_instances.vocab_digest(tokenizer),
          [(first, stop) for _, first, stop in parts])
    self.num_documents = len(self.documents)
    if self.num_documents < 1:
      raise UsageError(f'data.files / data.dataset: the {split} split holds no document.')
    self.dupe_factor = dupe_factor if split == 'train' else 1
    self.instances = bert_instances.Instances(
        self.documents, seed_words=(shuffle_seed, SPLIT_IDS[split]),
        dupe_factor=self.dupe_factor, max_num_tokens=seq_len - 3,
        short_seq_prob=short_seq_prob, index_dir=index_dir, fingerprint=key,
        describe=f'{split} {describe}', log=log)
    if not self.instances:
      raise UsageError(f'data.files / data.dataset: none of the {split} split\'s documents '
                       'holds text.')
    self.order = order.of_split(len(self.instances), split, shuffle_seed)
    default = len(self.order)  # order.ENDLESS for 'train'
    self.num_examples = default if num_examples is None else min(num_examples, default)
    walks = f' ({self.dupe_factor} walks each)' if self.dupe_factor > 1 else ''
    log(f'data {split} (BERT pre-training, {describe}): {self.num_documents} documents'
        f'{detail}, {len(self.instances)} instances{walks}; rows of {seq_len} tokens, up to '
        f'{max_predictions_per_seq} masked, {self.masks} masks.')

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def __len__(self) -> int:
    return self.num_examples

  def instance_of(self, index: int) -> tuple[int, int]:
    """(instance, epoch) row ``index`` reads: eval row i -> (i, 0); train row k -> (position
    k mod N of epoch e = k // N's seeded order of the N instances, e)."""
    return self.order[index], index // len(self.instances) if self.split == 'train' else 0

  def locate(self, index: int) -> tuple[int, int, bert_instances.Chunk]:
    """(walk, document, chunk) of the instance row ``index`` reads."""
    return self.instances.locate(self.instance_of(index)[0])

  def __getitem__(self, index: int) -> Row:
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(f'row {index} of the {self.split} split (0..{self.num_examples - 1}).')
    instance, epoch = self.instance_of(index)
    _, doc, chunk = self.instances.locate(instance)
    words = (self.shuffle_seed, SPLIT_IDS[self.split])
    tokens_a, tokens_b, label, _ = pair_instance(
        self.documents, doc, chunk, np.random.default_rng([*words, _PAIR, instance]),
        max_num_tokens=self.seq_len - 3)
    mask_words = [*words, _MASKS, instance] + ([epoch] if self.masks == 'dynamic' else [])
    return make_row(tokens_a, tokens_b, label, np.random.default_rng(mask_words),
                    seq_len=self.seq_len, max_predictions_per_seq=self.max_predictions_per_seq,
                    masked_lm_prob=self.masked_lm_prob, tokenizer=self.tokenizer)

  def get_batch(self, indices: Iterable[int]) -> dict[str, np.ndarray]:
    return packing.stack_rows(self[int(i)] for i in indices)

