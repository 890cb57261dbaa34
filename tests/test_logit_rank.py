"""fixed_head.experiments.logit_rank: the logits' spectrum and the rank-r cut against a float64
NumPy forward pass on a tiny random LM (post- and pre-LN), heads of rank 2, and the ranks flag.
What analyze.py does with a trained run is tested in test_analyze.py (its trained run)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head.errors import UsageError
from fixed_head.experiments import logit_rank
from fixed_head.tasks import losses
import numpy_reference  # a tiny LM: n = 7, h = 3, d_p = 5

# Two documents and padding; one document; ids 4 and 7, the longer second; all padding.
SEGMENTS = np.asarray([[1, 1, 1, 2, 2, 0, 0], [1] * 7, [4, 4, 7, 7, 7, 7, 0], [0] * 7], np.int32)
POSITIONS = np.asarray([[0, 1, 2, 0, 1, 0, 0], list(range(7)), [0, 1, 0, 1, 2, 3, 0], [0] * 7],
                       np.int32)
EDGES = losses.position_bins(7)  # target positions 1, 2-3, 4-6


def _batch():
  tokens = np.asarray(jax.random.randint(jax.random.key(2), (4, 7), 0, 13), np.int32)
  return {'tokens': tokens, 'positions': POSITIONS, 'segment_ids': SEGMENTS}


def _documents(row):
  """A row's documents' positions, by first position."""
  ids = [s for s in dict.fromkeys(row.tolist()) if s > 0]
  return [np.flatnonzero(row == s) for s in ids]


def _numpy_forward(model, batch, rank=None):
  """Float64: the output logits [b, n, V] and every layer's S [b, h, n, n] (uncut); with
  ``rank`` each document's [m, m] block of S is replaced by its truncated SVD before the
  causal, within-document mask."""
  seg = batch['segment_ids']

  def cut(s):
    for b in range(s.shape[0]):
      for idx in _documents(seg[b]):
        u, sigma, vt = np.linalg.svd(s[b][:, idx[:, None], idx])
        s[b][:, idx[:, None], idx] = (u[..., :rank] * sigma[..., None, :rank]) @ vt[
            ..., :rank, :]

  out = numpy_reference.forward(model, batch['tokens'], seg, batch['positions'],
                                cut=None if rank is None else cut)
  return out['output'], out['logits']


def _numpy_loss(logits, batch):
  """The next-token nll per counted target, overall and per bin of EDGES."""
  seg = batch['segment_ids']
  z = logits[:, :-1] - logits[:, :-1].max(-1, keepdims=True)
  log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, batch['tokens'][:, 1:, None], -1)[..., 0]
  weights = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
  bins = np.searchsorted(EDGES, batch['positions'][:, 1:], side='right') - 1
  return nll[weights].mean(), [nll[weights & (bins == k)].mean() for k in range(len(EDGES))]


def _numpy_spectrum(s, seg, k):
  """Over rows with a document: the mean erank, rank90, rank99 [h] and sigma_i / sigma_1
  [h, k] of each head's block of the row's longest document (the first of equal ones)."""
  stats = []
  for b in range(s.shape[0]):
    docs = _documents(seg[b])
    if not docs:
      continue
    idx = max(docs, key=len)  # max keeps the first of equal ones
    sigma = np.linalg.svd(s[b][:, idx[:, None], idx], compute_uv=False)  # [h, m]
    sigma = np.pad(sigma, ((0, 0), (0, max(k - sigma.shape[1], 0))))[:, :k]
    p = sigma / sigma.sum(-1, keepdims=True)
    erank = np.exp(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1))
    energy = np.cumsum(sigma**2, -1) / np.sum(sigma**2, -1, keepdims=True)
    rank = lambda share: 1 + np.argmax(energy >= share, -1)
    stats.append((erank, rank(0.9), rank(0.99), sigma / sigma[:, :1]))
  return [np.mean(column, axis=0) for column in zip(*stats)]


@functools.lru_cache
def _jitted(graphdef):
  """(uncut, cut, outputs): batch_sums uncut and cut (vmapped over the ranks) as measure
  jits them, and (forward's logits and S, the model's logits); compiled once per layout."""
  sums = lambda state, b, r: logit_rank.batch_sums(nnx.merge(graphdef, state), b, r, EDGES)

  def outputs(state, b):
    model = nnx.merge(graphdef, state)
    return (*logit_rank.forward(model, b), model(b['tokens'], positions=b['positions'],
                                                 segment_ids=b['segment_ids']))

  return (jax.jit(lambda state, b: sums(state, b, None)),
          jax.jit(jax.vmap(sums, in_axes=(None, None, 0))), jax.jit(outputs))


def _sums(model, batch, *ranks):
  """[uncut batch_sums, batch_sums of each of ``ranks``]."""
  graphdef, state = nnx.split(model)
  uncut, cut, _ = _jitted(graphdef)
  cuts = jax.device_get(cut(state, batch, np.asarray(ranks, np.int32)))
  return [jax.device_get(uncut(state, batch)),
          *({k: v[i] for k, v in cuts.items()} for i in range(len(ranks)))]


@pytest.mark.parametrize('norm, scan_layers', [('post', False), ('pre', True)])
def test_spectrum_and_cut_match_float64_numpy(norm, scan_layers):
  model = numpy_reference.random_model(norm, scan_layers)
  batch = _batch()
  want_logits, want_s = _numpy_forward(model, batch)
  graphdef, state = nnx.split(model)
  got_logits, got_s, model_logits = jax.device_get(_jitted(graphdef)[2](state, batch))
  for layer, (g, w) in enumerate(zip(got_s, want_s)):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4, err_msg=f'S, {layer}')
  np.testing.assert_allclose(np.asarray(got_logits), want_logits, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_logits, model_logits, atol=1e-5)  # uncut: the model itself

  sums, *cuts = _sums(model, batch, 2, 3)
  assert sums['rows'] == 3 and sums['len'] == 3 + 7 + 4
  k = 5  # min(n, d_p)
  for layer, s in enumerate(want_s):
    erank, rank90, rank99, spectrum = _numpy_spectrum(s, SEGMENTS, k)
    got = {key: sums[key][layer] / sums['rows'] for key in ('erank', 'rank90', 'rank99',
                                                              'spectrum')}
    np.testing.assert_allclose(got['erank'], erank, rtol=1e-4, err_msg=f'layer {layer}')
    np.testing.assert_allclose(got['rank90'], rank90, err_msg=f'layer {layer}')
    np.testing.assert_allclose(got['rank99'], rank99, err_msg=f'layer {layer}')
    np.testing.assert_allclose(got['spectrum'], spectrum, rtol=1e-4, atol=1e-5)
  loss, by_position = _numpy_loss(want_logits, batch)
  assert sums['nll_sum'] / sums['weight_sum'] == pytest.approx(loss, rel=1e-5)

  for rank, sums in zip((2, 3), cuts):  # below d_p = 5: a real cut, the same in float64
    cut_logits, _ = _numpy_forward(model, batch, rank)
    loss, by_position = _numpy_loss(cut_logits, batch)
    assert sums['nll_sum'] / sums['weight_sum'] == pytest.approx(loss, rel=1e-4), rank
    np.testing.assert_allclose(sums['nll_by_position'] / sums['weight_by_position'],
                               by_position, rtol=1e-4, err_msg=f'r = {rank}')
    assert abs(loss - _numpy_loss(want_logits, batch)[0]) > 1e-3  # the cut matters here


def test_heads_of_rank_two_use_two_dimensions_and_lose_nothing_above():
  model = numpy_reference.random_model('post', False)
  # W_q's and b_q's last d_p - 2 columns zero in every head: Q K^T has rank <= 2.
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree_util.tree_map_with_path(
      lambda path, a: a.at[..., 2:].set(0) if 'query' in str(path) else a, state))
  batch = jax.tree.map(jnp.asarray, _batch())
  uncut, *cuts = _sums(model, batch, 2, 4)  # the shapes of the test above: compiled there
  rows = uncut['rows']
  assert np.all(uncut['rank99'] / rows <= 2) and np.all(uncut['erank'] / rows <= 2 + 1e-4)
  assert np.all(uncut['spectrum'][..., 2:] / rows < 1e-4)
  loss = uncut['nll_sum'] / uncut['weight_sum']
  for rank, cut in zip((2, 4), cuts):
    assert cut['nll_sum'] / cut['weight_sum'] == pytest.approx(loss, abs=1e-5), rank
  # The output itself: unchanged from r = 2 on; at r = 1, one dimension short, not.
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, r: logit_rank.forward(nnx.merge(graphdef, state), batch, r)[0])
  outputs = {r: np.asarray(forward(state, r)) for r in (None, 1, 2)}
  np.testing.assert_allclose(outputs[2], outputs[None], atol=1e-5)
  assert np.max(np.abs(outputs[1] - outputs[None])) > 1e-2


def test_segments_number_documents_and_find_the_longest():
  ordinal, longest = jax.device_get(jax.jit(logit_rank.segments)(SEGMENTS))
  np.testing.assert_array_equal(ordinal, [[0, 0, 0, 1, 1, -1, -1], [0] * 7,
                                          [0, 0, 1, 1, 1, 1, -1], [-1] * 7])
  np.testing.assert_array_equal(longest, [[1, 1, 1, 0, 0, 0, 0], [1] * 7, [0, 0, 1, 1, 1, 1, 0],
                                          [0] * 7])
  _, first = jax.jit(logit_rank.segments)(np.asarray([[1, 1, 2, 2, 0]]))  # equal: the first
  np.testing.assert_array_equal(np.asarray(first), [[1, 1, 0, 0, 0]])


def test_rank_stats_of_known_spectra():
  got = jax.device_get(logit_rank.rank_stats(jnp.asarray([[1.0, 1, 1, 1], [3, 1, 0, 0]])))
  np.testing.assert_allclose(got['erank'], [4, np.exp(-0.75 * np.log(0.75) - 0.25 * np.log(0.25))],
                             rtol=1e-6)
  np.testing.assert_array_equal(got['rank90'], [4, 1])  # 9 / 10 of the energy in sigma_1
  np.testing.assert_array_equal(got['rank99'], [4, 2])
  np.testing.assert_allclose(got['spectrum'][1], [1, 1 / 3, 0, 0], rtol=1e-6)


def test_ranks_flag():
  assert logit_rank.default_ranks(64) == (4, 8, 16, 32, 64)
  assert logit_rank.default_ranks(16) == (4, 8, 16) and logit_rank.default_ranks(5) == (4, 5)
  assert logit_rank.default_ranks(4) == (4,) and logit_rank.default_ranks(2) == (2,)
  assert logit_rank.parse_ranks(None) is None and logit_rank.parse_ranks('') is None
  assert logit_rank.resolve_ranks(logit_rank.parse_ranks('8,2,8'), 16) == (2, 8, 16)
  for bad in ('x', '4,,8', '0', '-4', '4.5', '4;8'):
    with pytest.raises(UsageError, match=f'--ablation_ranks={bad}: must be positive'):
      logit_rank.parse_ranks(bad)
  with pytest.raises(UsageError, match='--ablation_ranks=4,32: ranks above d_p = 16'):
    logit_rank.resolve_ranks((4, 32), 16)


def test_own_headers_are_recognised_and_others_not():
  spectrum = ','.join(logit_rank.spectrum_columns(3)).encode() + b'\n0,0'
  ablation = ','.join(logit_rank.ablation_columns(['1', '2-3'])).encode() + b'\n4,1.0'
  assert logit_rank._is_spectrum_csv(spectrum) and logit_rank._is_ablation_csv(ablation)
  assert not logit_rank._is_spectrum_csv(ablation) and not logit_rank._is_ablation_csv(spectrum)
  for other in (b'', b'layer,head\n', spectrum.replace(b's3', b'x3'), b'\x89PNG'):
    assert not logit_rank._is_spectrum_csv(other) and not logit_rank._is_ablation_csv(other)
