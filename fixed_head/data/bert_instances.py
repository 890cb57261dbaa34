"""Which (A, B) instances a BERT corpus holds: Google's ``create_instances_from_document``
walk over each document, and an index from instance number to (walk, document, chunk).

Google's ``create_pretraining_data.py`` walks every document ``dupe_factor`` times. A walk
draws its target length once (``max_num_tokens``, or with probability ``short_seq_prob`` a
random one in [2, max_num_tokens]), then gathers sentences into a chunk until the chunk
reaches the target or the document ends; each chunk is one instance: A = its first ``a_end``
sentences (random, at least one), B = the rest (the actual next) or, with probability 1/2 or
when the chunk is one sentence, text from another document, in which case the sentences B
did not use are walked again. A long document gives many instances, a stub one; a short
target splits a document into more of them.

Here a walk's structure is drawn apart from its pairing: ``walk`` makes the draws that fix
where each chunk starts and ends (target, ``a_end``, random next), from the document's
sentence lengths alone and the generator ``rng([shuffle_seed, split_id, 1, doc])`` (walks
0, 1, ... of a document drawn one after another from it); ``bert_pretraining.pair_instance``
makes the rest (B's document and start, the truncation) from the instance's own generator.
In Google's loop the two kinds of draw interleave on one generator; they do not depend on
each other, so the instances have the same distribution.

``Instances`` walks every document once at start-up to count its instances and keeps the
counts, int32 [dupe_factor, D] (instances are numbered walk-major: walk 0 of every document,
then walk 1, ...); instance i is found by binary search over their running sums and one walk
of its document again. That start-up pass reads and tokenises every document: a local corpus
is tokenised at start-up anyway; a TFDS corpus is read whole once (English Wikipedia's ~6.6M
articles: hours, mostly sentence splitting, ``fixed_head.data.sentences``), which
``index_dir`` keeps: the counts are saved there and read back by the next run with the same
corpus, vocabulary and options (a resumed run, stage 2). Memory: 4 bytes per document per
walk for the counts and 8 for the sums (Wikipedia at dupe_factor 10: ~0.8 GB).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from fixed_head import files
from fixed_head.errors import UsageError

_STRUCTURE = 1  # the seed word of the walks' draws (2: an instance's pair, 3: its masks)
INDEX_VERSION = 1  # of the saved counts (a change of ``walk`` must raise it)


class Chunk(NamedTuple):
  """One instance's place in its document: sentences [start, a_end) are A; when
  ``random_next`` is False, [a_end, end) are B; ``target`` is its walk's target length."""
  start: int
  a_end: int
  end: int
  random_next: bool
  target: int


def walk(lengths: Sequence[int], rng: np.random.Generator, *, max_num_tokens: int,
         short_seq_prob: float) -> list[Chunk]:
  """One walk of a document with sentences of ``lengths`` (tokens, int [S]): its chunks, in
  order, as Google's ``create_instances_from_document`` forms them (its draws of target,
  ``a_end`` and random next, in its order: ``randint(a, b)`` is ``integers(a, b + 1)``)."""
  target = max_num_tokens
  if rng.random() < short_seq_prob:
    target = int(rng.integers(2, max_num_tokens + 1))
  chunks, start, length, i, num_sentences = [], 0, 0, 0, len(lengths)
  while i < num_sentences:
    length += int(lengths[i])
    if i == num_sentences - 1 or length >= target:
      size = i + 1 - start
      a_end = start + (int(rng.integers(1, size)) if size >= 2 else 1)
      random_next = size == 1 or bool(rng.random() < 0.5)
      chunks.append(Chunk(start, a_end, i + 1, random_next, target))
      if random_next:  # B comes from elsewhere: walk the sentences after A again
        i = a_end - 1
      start, length = i + 1, 0
    i += 1
  return chunks


def walks(lengths: Sequence[int], seed_words: Sequence[int], doc: int, dupe_factor: int, *,
          max_num_tokens: int, short_seq_prob: float) -> list[list[Chunk]]:
  """Walks 0 .. dupe_factor - 1 of document ``doc`` (sentence lengths ``lengths``), drawn in
  turn from ``rng([*seed_words, 1, doc])``: walk w does not depend on ``dupe_factor``."""
  rng = np.random.default_rng([*seed_words, _STRUCTURE, doc])
  return [walk(lengths, rng, max_num_tokens=max_num_tokens, short_seq_prob=short_seq_prob)
          for _ in range(dupe_factor)]


class Instances:
  """The instances of ``dupe_factor`` walks of every document of ``documents``.

  ``len`` is N, their number; ``locate(i)`` -> (walk, document, ``Chunk``) of instance i
  (walk-major: the instances of walk 0 of documents 0, 1, ..., then walk 1, ...).
  ``documents`` gives ``len``, ``sentence_lengths(doc)`` (int [S]) and
  ``iter_sentence_lengths()`` (each document's, in order: the start-up pass).
  ``seed_words``: (shuffle_seed, split_id). ``index_dir`` / ``fingerprint``: where the
  counts are saved and what identifies the corpus and its tokenisation (see the module doc).
  """

  def __init__(self, documents, *, seed_words: Sequence[int], dupe_factor: int,
               max_num_tokens: int, short_seq_prob: float, index_dir: str | None = None,
               fingerprint: str | None = None, describe: str = 'documents',
               log: Callable[[str], None] = print, cache_documents: int = 4096):
    self.documents, self.seed_words = documents, tuple(int(w) for w in seed_words)
    self.dupe_factor = dupe_factor
    self.options = dict(max_num_tokens=max_num_tokens, short_seq_prob=short_seq_prob)
    self._walks = functools.lru_cache(maxsize=cache_documents)(self._walks_of)
    path = None
    if index_dir is not None and fingerprint is not None:
      name = digest(INDEX_VERSION, fingerprint, self.seed_words, dupe_factor,
                    max_num_tokens, short_seq_prob)[:16]
      path = files.join(index_dir, f'bert_instances-{name}.npy')
    if path is not None and files.exists(path):
      self.counts = np.load(io.BytesIO(files.read_bytes(path)))
      if self.counts.shape != (dupe_factor, len(documents)):
        raise UsageError(f'data.index_dir: {path} holds counts of shape {self.counts.shape}, not '
                         f'{(dupe_factor, len(documents))}: the file is not this index.')
      log(f'data: instance index read from {path}.')
    else:
      self.counts = self._count(describe, log)
      if path is not None:
        buffer = io.BytesIO()
        np.save(buffer, self.counts)
        files.make_dirs(index_dir)
        files.write_atomically(path, buffer.getvalue())
        log(f'data: instance index saved to {path}.')
    self.ends = np.cumsum(self.counts.ravel(), dtype=np.int64)

  def _walks_of(self, doc: int, lengths: Sequence[int] | None = None) -> list[list[Chunk]]:
    """Document ``doc``'s walks (``lengths``: its sentence lengths, if already known)."""
    if lengths is None:
      lengths = self.documents.sentence_lengths(doc)
    return walks(lengths, self.seed_words, doc, self.dupe_factor, **self.options)

  def _count(self, describe: str, log: Callable[[str], None]) -> np.ndarray:
    """int32 [dupe_factor, D]: instances per walk and document (one pass over the corpus)."""
    total = len(self.documents)
    counts = np.zeros([self.dupe_factor, total], np.int32)
    started = last = time.monotonic()
    for doc, lengths in enumerate(self.documents.iter_sentence_lengths()):
      counts[:, doc] = [len(w) for w in self._walks_of(doc, lengths)]
      now = time.monotonic()
      if now - last >= 30 and doc + 1 < total:
        last, rate = now, (doc + 1) / (now - started)
        log(f'data: indexing instances of {describe}: {doc + 1}/{total} documents, '
            f'{rate:.0f}/s, ~{(total - doc - 1) / rate / 60:.0f} min left.')
    return counts

  def __len__(self) -> int:
    return int(self.ends[-1]) if self.ends.size else 0

  def locate(self, i: int) -> tuple[int, int, Chunk]:
    """Instance ``i`` -> (walk, document, its ``Chunk``)."""
    if not 0 <= i < len(self):
      raise IndexError(f'instance {i} of {len(self)}')
    pair = int(np.searchsorted(self.ends, i, side='right'))
    w, doc = divmod(pair, self.counts.shape[1])
    chunks = self._walks(doc)[w]
    offset = i - (int(self.ends[pair - 1]) if pair else 0)
    if len(chunks) != self.counts[w, doc]:
      raise UsageError(f'data.index_dir: document {doc} gives {len(chunks)} instances in walk '
                       f'{w}, the saved index {self.counts[w, doc]}: the corpus changed since '
                       'it was saved; give another data.index_dir to index it again.')
    return w, doc, chunks[offset]


def digest(*parts) -> str:
  """The sha256 (hex) of ``parts`` as JSON: what names a corpus and its tokens, or a saved
  index."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def vocab_digest(tokenizer) -> str:
  """A digest of a WordPiece tokenizer's vocabulary and casing."""
  return digest(tokenizer.vocab, tokenizer.lower_case)[:16]

