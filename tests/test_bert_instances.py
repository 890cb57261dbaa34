"""Google's instance walk (``bert_instances``): the structure of every chunk against a
transcription of Google's ``create_instances_from_document`` driven by the same draws, the
distribution of instances against it driven by Python's ``random`` as Google runs it, and the
index from instance number to (walk, document, chunk), saved and read back."""

import math
import random

import numpy as np
import pytest

from fixed_head.data import bert_instances as bi
from fixed_head.data import bert_pretraining as bp
from fixed_head.errors import UsageError


def google_create_instances_from_document(all_documents, document_index, max_seq_length,
                                          short_seq_prob, rng, pair_rng=None):
  """Google BERT's ``create_instances_from_document`` (create_pretraining_data.py), line for
  line but for masking (tested in test_bert_pretraining_data) and two additions: each
  instance also records its chunk's (start, a_end, end, is_random_next, target), and the
  draws of B's document, B's start and the truncation may go to ``pair_rng`` (default: the
  one ``rng``, as Google). Documents are lists of sentences, a sentence a list of ids."""
  pair_rng = rng if pair_rng is None else pair_rng
  document = all_documents[document_index]
  max_num_tokens = max_seq_length - 3
  target_seq_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)
  instances = []
  current_chunk = []
  current_length = 0
  i = 0
  while i < len(document):
    segment = document[i]
    current_chunk.append(segment)
    current_length += len(segment)
    if i == len(document) - 1 or current_length >= target_seq_length:
      if current_chunk:
        chunk_start = i + 1 - len(current_chunk)  # added: the chunk's first sentence
        a_end = 1
        if len(current_chunk) >= 2:
          a_end = rng.randint(1, len(current_chunk) - 1)
        tokens_a = []
        for j in range(a_end):
          tokens_a.extend(current_chunk[j])
        tokens_b = []
        is_random_next = False
        if len(current_chunk) == 1 or rng.random() < 0.5:
          is_random_next = True
          target_b_length = target_seq_length - len(tokens_a)
          for _ in range(10):
            random_document_index = pair_rng.randint(0, len(all_documents) - 1)
            if random_document_index != document_index:
              break
          random_document = all_documents[random_document_index]
          random_start = pair_rng.randint(0, len(random_document) - 1)
          for j in range(random_start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
              break
          num_unused_segments = len(current_chunk) - a_end
          i -= num_unused_segments
        else:
          is_random_next = False
          for j in range(a_end, len(current_chunk)):
            tokens_b.extend(current_chunk[j])
        google_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, pair_rng)
        assert len(tokens_a) >= 1
        assert len(tokens_b) >= 1
        structure = (chunk_start, chunk_start + a_end, i + 1 if not is_random_next else
                     chunk_start + len(current_chunk), is_random_next, target_seq_length)
        instances.append((tokens_a, tokens_b, is_random_next, structure))
      current_chunk = []
      current_length = 0
    i += 1
  return instances


def google_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
  """Google's ``truncate_seq_pair``."""
  while True:
    total_length = len(tokens_a) + len(tokens_b)
    if total_length <= max_num_tokens:
      break
    trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    assert len(trunc_tokens) >= 1
    if rng.random() < 0.5:
      del trunc_tokens[0]
    else:
      trunc_tokens.pop()


class Draws:
  """One NumPy generator seen through both interfaces: Google's (``random``, ``randint``
  inclusive) and NumPy's (``random``, ``integers`` exclusive), so the two loops can be fed the
  same stream of draws."""

  def __init__(self, seed):
    self.rng = np.random.default_rng(seed)

  def random(self):
    return self.rng.random()

  def integers(self, low, high=None):
    return self.rng.integers(low, high)

  def randint(self, low, high):
    return int(self.rng.integers(low, high + 1))


def corpus(num_docs, seed, mean_sentence=25):
  """Documents of 1 to 60 sentences (a quarter of them stubs of 1-3), sentence lengths
  geometric around ``mean_sentence`` tokens: ids are distinct, so a piece of text names its
  place."""
  rng = np.random.default_rng(seed)
  docs, next_id = [], 0
  for _ in range(num_docs):
    count = int(rng.integers(1, 4)) if rng.random() < 0.25 else int(rng.integers(4, 61))
    doc = []
    for _ in range(count):
      length = int(min(rng.geometric(1 / mean_sentence), 200))
      doc.append(list(range(next_id, next_id + length)))
      next_id += length
    docs.append(doc)
  return docs


def as_structure(chunks):
  return [(c.start, c.a_end, c.end, c.random_next, c.target) for c in chunks]


@pytest.mark.parametrize('max_seq_length, short_seq_prob', [(128, 0.1), (32, 0.5), (512, 1.0)])
def test_walk_forms_google_chunks_from_the_same_draws(max_seq_length, short_seq_prob):
  docs = corpus(150, seed=max_seq_length)
  for d, doc in enumerate(docs):
    google = google_create_instances_from_document(
        docs, d, max_seq_length, short_seq_prob, Draws([d, 1]), pair_rng=Draws([d, 2]))
    ours = bi.walk([len(s) for s in doc], Draws([d, 1]), max_num_tokens=max_seq_length - 3,
                   short_seq_prob=short_seq_prob)
    assert as_structure(ours) == [g[3] for g in google]
    for chunk, (_, tokens_b, random_next, _) in zip(ours, google):
      if not random_next:  # an actual next before truncation: the chunk's sentences
        assert sum(map(len, doc[chunk.a_end:chunk.end])) >= len(tokens_b)


def test_a_walk_covers_its_document_and_random_nexts_walk_b_again():
  rng = np.random.default_rng(0)
  for _ in range(2000):
    lengths = rng.integers(1, 40, int(rng.integers(1, 30)))
    chunks = bi.walk(lengths, rng, max_num_tokens=61, short_seq_prob=0.1)
    position = 0
    for c in chunks:
      assert c.start == position and c.start < c.a_end <= c.end <= len(lengths)
      position = c.a_end if c.random_next else c.end
      if not c.random_next:
        assert c.a_end < c.end
    assert position == len(lengths)  # every sentence is in some A or actual-next B


def instance_stats(instances, max_num_tokens):
  """(share of random nexts, share of instances from a short-target walk)."""
  random_next = np.mean([s[3] for s in instances])
  short = np.mean([s[4] < max_num_tokens for s in instances])
  return random_next, short


def test_instances_follow_googles_distribution_under_pythons_random():
  """Google's loop with Python's random.Random (as create_pretraining_data.py runs it) and
  ours agree in distribution: instances per document (by document length), the share of
  random nexts and of short-target instances, the pair lengths."""
  docs, max_seq_length, walks = corpus(300, seed=5), 128, 6
  python_rng = random.Random(12345)
  google = {d: [] for d in range(len(docs))}
  for _ in range(walks):
    for d in range(len(docs)):
      google[d].extend(google_create_instances_from_document(docs, d, max_seq_length, 0.1,
                                                             python_rng))
  documents = bp.InMemoryDocuments(docs)
  index = bi.Instances(documents, seed_words=(3, 0), dupe_factor=walks,
                       max_num_tokens=max_seq_length - 3, short_seq_prob=0.1, log=print)
  ours = {d: [] for d in range(len(docs))}
  for i in range(len(index)):
    _, d, chunk = index.locate(i)
    ours[d].append(chunk)
  total_google = sum(map(len, google.values()))
  assert abs(len(index) - total_google) < 4 * math.sqrt(total_google)
  # Per document: a long one gives many, a stub one per walk.
  tokens = np.asarray([sum(map(len, doc)) for doc in docs])
  per_google = np.asarray([len(google[d]) for d in range(len(docs))]) / walks
  per_ours = np.asarray([len(ours[d]) for d in range(len(docs))]) / walks
  for low, high in [(0, 50), (50, 300), (300, 800), (800, 10**6)]:
    here = (tokens >= low) & (tokens < high)
    assert here.sum() > 10
    assert abs(per_ours[here].mean() - per_google[here].mean()) < 0.1 * per_google[here].mean()
  assert np.corrcoef(tokens, per_ours)[0, 1] > 0.95
  stub = np.asarray([len(doc) == 1 for doc in docs])
  assert np.all(per_ours[stub] == 1) and np.all(per_google[stub] == 1)
  # Shares of random next and of instances from a short target (the rule's ~18% at n = 128,
  # not short_seq_prob's 10%: a short target cuts its walk into more instances).
  g_structure = [s for d in google for *_, s in google[d]]
  o_structure = [as_structure([c])[0] for d in ours for c in ours[d]]
  g_random, g_short = instance_stats(g_structure, max_seq_length - 3)
  o_random, o_short = instance_stats(o_structure, max_seq_length - 3)
  assert abs(o_random - g_random) < 0.03 and abs(o_short - g_short) < 0.03
  assert 0.13 < o_short < 0.25 and 0.13 < g_short < 0.25


def test_index_locates_every_instance_walk_major():
  docs = corpus(40, seed=1)
  documents = bp.InMemoryDocuments(docs)
  index = bi.Instances(documents, seed_words=(0, 0), dupe_factor=3, max_num_tokens=45,
                       short_seq_prob=0.2)
  expected = []
  all_walks = [bi.walks([len(s) for s in doc], (0, 0), d, 3, max_num_tokens=45,
                        short_seq_prob=0.2) for d, doc in enumerate(docs)]
  for w in range(3):
    for d in range(len(docs)):
      expected.extend((w, d, c) for c in all_walks[d][w])
  assert [index.locate(i) for i in range(len(index))] == expected
  np.testing.assert_array_equal(index.counts, [[len(all_walks[d][w]) for d in range(40)]
                                               for w in range(3)])
  # Walk w of a document does not depend on how many walks are made.
  fewer = bi.Instances(documents, seed_words=(0, 0), dupe_factor=2, max_num_tokens=45,
                       short_seq_prob=0.2)
  assert [fewer.locate(i) for i in range(len(fewer))] == expected[:len(fewer)]
  other_seed = bi.Instances(documents, seed_words=(1, 0), dupe_factor=3, max_num_tokens=45,
                            short_seq_prob=0.2)
  assert [other_seed.locate(i) for i in range(len(other_seed))] != expected
  with pytest.raises(IndexError):
    index.locate(len(index))


class CountingDocuments(bp.InMemoryDocuments):
  passes = 0

  def iter_sentence_lengths(self):
    CountingDocuments.passes += 1
    return super().iter_sentence_lengths()


def test_index_dir_keeps_the_counts_and_refuses_a_changed_corpus(tmp_path):
  docs = corpus(30, seed=2)
  lines = []
  kw = dict(seed_words=(0, 0), dupe_factor=2, max_num_tokens=61, short_seq_prob=0.1,
            index_dir=str(tmp_path / 'index'), fingerprint='corpus-a', log=lines.append)
  first = bi.Instances(CountingDocuments(docs), **kw)
  (saved,) = list((tmp_path / 'index').iterdir())
  assert any(str(saved) in line and 'saved' in line for line in lines)
  again = bi.Instances(CountingDocuments(docs), **kw)
  assert CountingDocuments.passes == 1  # read back, not counted again
  assert any('read from' in line for line in lines)
  np.testing.assert_array_equal(again.counts, first.counts)
  assert [again.locate(i) for i in range(len(again))] == [
      first.locate(i) for i in range(len(first))]
  # Another fingerprint or option is another file; the first is left as it was.
  before = saved.read_bytes()
  bi.Instances(CountingDocuments(docs), **{**kw, 'fingerprint': 'corpus-b'})
  bi.Instances(CountingDocuments(docs), **{**kw, 'max_num_tokens': 29})
  assert len(list((tmp_path / 'index').iterdir())) == 3 and saved.read_bytes() == before
  # The same fingerprint over a changed corpus: refused when an instance is looked up.
  changed = [[s + s for s in doc] for doc in docs]
  stale = bi.Instances(CountingDocuments(changed), **kw)
  with pytest.raises(UsageError, match='^data.index_dir: document'):
    for i in range(len(stale)):
      stale.locate(i)
  with pytest.raises(UsageError, match='^data.index_dir: .* holds counts of shape'):
    bi.Instances(CountingDocuments(docs[:10]), **kw)
