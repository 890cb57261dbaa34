"""Packing documents into rows: format, no token lost or duplicated, counts, model equivalence."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head.config import ModelConfig
from fixed_head.data.packing import (PackingStats, pack_documents, pad_documents, stack_rows)
from fixed_head.nn import TransformerLM


def _docs(num, max_len, seed=0, vocab=50):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, vocab, size=rng.integers(0, max_len + 1)).tolist()
          for _ in range(num)]


def _segments(rows):
  """Every (row, segment) piece's tokens and positions, in order."""
  pieces = []
  for row in rows:
    for segment in range(1, row['segment_ids'].max() + 1):
      mask = row['segment_ids'] == segment
      pieces.append((row['tokens'][mask], row['positions'][mask]))
  return pieces


def _check_format(row, n):
  assert set(row) == {'tokens', 'segment_ids', 'positions'}
  for value in row.values():
    assert value.dtype == np.int32 and value.shape == (n,)
  seg = row['segment_ids']
  used = int(np.sum(seg > 0))
  # Segments are 1, 2, ... contiguous from the start, then only padding.
  assert np.all(seg[:used] > 0) and np.all(seg[used:] == 0)
  assert np.all(np.diff(seg[:used]) >= 0) and np.all(np.diff(seg[:used]) <= 1)
  assert used == 0 or seg[0] == 1
  assert np.all(row['tokens'][used:] == 0) and np.all(row['positions'][used:] == 0)


def test_packs_in_order_with_segments_positions_and_padding():
  rows = list(pack_documents([[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]], 6))
  np.testing.assert_array_equal(
      stack_rows(rows)['tokens'], [[5, 6, 7, 8, 9, 0], [10, 11, 12, 13, 14, 0]])
  np.testing.assert_array_equal(
      stack_rows(rows)['segment_ids'], [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 2, 0]])
  np.testing.assert_array_equal(
      stack_rows(rows)['positions'], [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]])


@pytest.mark.parametrize('packer', [pack_documents, pad_documents])
def test_split_loses_and_duplicates_no_token(packer):
  n = 16
  docs = _docs(300, 3 * n, seed=1)
  rows = packer(docs, n, long_docs='split')
  materialized = list(rows)
  for row in materialized:
    _check_format(row, n)
  pieces = _segments(materialized)
  for tokens, positions in pieces:
    np.testing.assert_array_equal(positions, np.arange(tokens.size))
  # Rejoin each document's pieces: a long one is cut at multiples of n.
  rejoined, queue = [], list(pieces)
  for doc in docs:
    if not doc:
      continue
    got = []
    for _ in range(-(-len(doc) // n)):
      got.extend(queue.pop(0)[0].tolist())
    rejoined.append(got)
  assert not queue
  assert rejoined == [doc for doc in docs if doc]
  stats = rows.stats
  total = sum(len(d) for d in docs)
  assert stats.tokens == total and stats.dropped_tokens == 0 and stats.truncated == 0
  assert stats.split == sum(len(d) > n for d in docs) > 0
  assert stats.empty_documents == sum(not d for d in docs) > 0
  assert stats.documents == len(docs) - stats.empty_documents
  assert stats.rows == len(materialized)
  assert stats.padding_tokens == stats.rows * n - total
  if packer is pad_documents:
    assert all(row['segment_ids'].max() == 1 for row in materialized)
  else:  # Packing needs fewer rows than one piece per row.
    assert stats.rows < len(pieces) and stats.fill > 0.8


@pytest.mark.parametrize('packer', [pack_documents, pad_documents])
def test_truncation_is_counted(packer):
  docs = [list(range(1, 11)), [], [7, 8], list(range(20, 27))]
  rows = packer(docs, 4, long_docs='truncate')
  pieces = [t.tolist() for t, _ in _segments(list(rows))]
  assert pieces == [[1, 2, 3, 4], [7, 8], [20, 21, 22, 23]]
  assert rows.stats == PackingStats(
      documents=3, empty_documents=1, rows=3, tokens=10, padding_tokens=2, split=0,
      truncated=2, dropped_tokens=6 + 3)


def test_empty_documents_only_give_no_rows():
  stats = PackingStats()
  assert not list(pack_documents([[], np.zeros((0,), np.int32)], 8, stats=stats))
  assert stats.empty_documents == 2 and stats.rows == 0 and stats.fill == 0.0


def test_deterministic_and_lazy():
  docs = _docs(50, 20, seed=3)
  a = stack_rows(pack_documents(docs, 12))
  b = stack_rows(pack_documents(iter(docs), 12))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  consumed = []

  def stream():
    for i, doc in enumerate(docs):
      consumed.append(i)
      yield doc

  rows = pack_documents(stream(), 12)
  assert not consumed
  next(rows)
  assert 0 < len(consumed) < len(docs)


@pytest.mark.parametrize('kwargs, match', [
    (dict(seq_len=0), 'seq_len=0 must be a positive int'),
    (dict(seq_len=4, long_docs='drop'), "long_docs='drop' is not one of"),
])
def test_bad_arguments_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pack_documents([[1]], **kwargs)


def test_bad_documents_are_refused():
  with pytest.raises(ValueError, match='Document 1 has shape'):
    list(pack_documents([[1], [[1, 2]]], 4))
  with pytest.raises(ValueError, match='Document 0 has token ids outside'):
    list(pack_documents([[-1]], 4))
  with pytest.raises(ValueError, match='Document 0 has dtype float'):
    list(pack_documents([[1.5]], 4))


@pytest.mark.slow
def test_lm_on_packed_row_equals_separate_documents():
  config = ModelConfig(model_type='lm', vocab_size=30, emb_dim=16, num_heads=2, head_size=8,
                       num_layers=1, mlp_dim=16, max_len=12, dropout_rate=0.0,
                       attention_dropout_rate=0.0)
  model = TransformerLM(config, rngs=nnx.Rngs(0))
  docs = [[1, 5, 9, 13, 2], [1, 7, 2], [1, 3, 4, 6, 8, 10, 2]]
  rows = list(pack_documents(docs, 12))
  assert len(rows) == 2  # [doc 0, doc 1, pad x4], [doc 2, pad x5]
  batch = {k: jnp.asarray(v) for k, v in stack_rows(rows).items()}
  out = model(batch['tokens'], segment_ids=batch['segment_ids'], positions=batch['positions'])
  assert np.all(np.isfinite(out))
  # Each document alone (padded after its end, which a causal LM cannot see), in one call.
  alone = model(jnp.asarray(stack_rows(pad_documents(docs, 12))['tokens']))
  for i, ((row, start), doc) in enumerate(zip([(0, 0), (0, 5), (1, 0)], docs)):
    np.testing.assert_allclose(out[row, start:start + len(doc)], alone[i, :len(doc)], atol=1e-5)


def test_grain_first_fit_packing_is_not_ours():
  """grain.experimental.FirstFitPackIterDataset against ``pack_documents``, row for row: with
  one bin it packs documents of at most n tokens as we do; it refuses a longer one (ours
  splits it), and with two bins its rows no longer hold the documents in stream order."""
  import grain  # pylint: disable=g-import-not-at-top
  docs = [np.arange(1, 4), np.arange(10, 12), np.arange(20, 25), np.arange(30, 31),
          np.arange(40, 46), np.arange(50, 53)]
  ours = stack_rows(pack_documents(docs, 6))

  def first_fit(documents, bins):
    parent = grain.MapDataset.source([{'tokens': d.astype(np.int32)} for d in documents])
    rows = list(grain.experimental.FirstFitPackIterDataset(
        parent.to_iter_dataset(), length_struct={'tokens': 6}, num_packing_bins=bins,
        shuffle_bins=False))
    return {'tokens': np.stack([r['tokens'] for r in rows]),
            'segment_ids': np.stack([r['tokens_segment_ids'] for r in rows]),
            'positions': np.stack([r['tokens_positions'] for r in rows])}

  one_bin = first_fit(docs, 1)
  for key in ours:
    np.testing.assert_array_equal(one_bin[key], ours[key])
  assert one_bin['tokens'][0].tolist() == [1, 2, 3, 10, 11, 0]
  assert first_fit(docs, 2)['tokens'][0].tolist() == [1, 2, 3, 10, 11, 30]  # out of order
  with pytest.raises(ValueError, match='truncated to max length'):
    first_fit([np.arange(1, 10)], 1)
  assert stack_rows(pack_documents([np.arange(1, 10)], 6))['tokens'].tolist() == [
      [1, 2, 3, 4, 5, 6], [7, 8, 9, 0, 0, 0]]


@pytest.mark.parametrize('mode', ['pack', 'pad'])
def test_the_packer_resumes_exactly_from_each_state(mode):
  import grain  # pylint: disable=g-import-not-at-top
  from fixed_head.data.packing import Packer  # pylint: disable=g-import-not-at-top
  docs = [np.asarray(d, np.int32) for d in _docs(40, 20, seed=5)]
  chunks = grain.MapDataset.source(docs).batch(3, batch_fn=list).to_iter_dataset()

  def packer():
    return Packer(iter(chunks), 8, mode=mode, trusted=True)

  whole, states, rows = packer(), [], []
  for row in whole:
    states.append(whole.get_state())
    rows.append(row)
  want = stack_rows(pack_documents(docs, 8) if mode == 'pack' else pad_documents(docs, 8))
  np.testing.assert_array_equal(np.stack([r['tokens'] for r in rows]), want['tokens'])
  assert any(s['doc_piece'] is not None for s in states)  # some fall inside a document
  for k in range(0, len(rows) - 1, 3):
    resumed = packer()
    resumed.set_state(states[k])
    for want_row, got in zip(rows[k + 1:], resumed):
      for key in want_row:
        np.testing.assert_array_equal(got[key], want_row[key])
    assert resumed.stats == whole.stats
