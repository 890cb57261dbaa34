"""MultiHeadAttention against flax's own attention, a float64 NumPy reference, and mask rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head.nn import attention as attn
from fixed_head.nn import attention_op, masks
from fixed_head import config as config_lib

# The implementations that take dense masks and run on a CPU ('cudnn' needs a GPU, 'pallas'
# takes a SegmentMask: both are checked below and in test_flash_attention.py).
DENSE = ('jax', 'xla')

# (d, h, d_p): baseline shapes, d_p > d / h, d_p < d / h, and h not dividing d.
SHAPES = [(16, 4, None), (16, 4, 8), (24, 2, 5), (10, 3, 7), (12, 5, 16)]


def _inputs(d, batch=2, length=6, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, length, d), jnp.float32)


def _copy_into_flax(ours, d, h, dp, use_bias=True):
  """A flax.nnx.MultiHeadAttention with qkv_features = h * d_p holding our weights."""
  ref = nnx.MultiHeadAttention(
      num_heads=h, in_features=d, qkv_features=h * dp, decode=False, use_bias=use_bias,
      rngs=nnx.Rngs(123))
  for name in ('query', 'key', 'value', 'out'):
    ours_layer, ref_layer = getattr(ours, name), getattr(ref, name)
    ref_layer.kernel[...] = ours_layer.kernel[...].reshape(ref_layer.kernel.shape)
    if use_bias:
      ref_layer.bias[...] = ours_layer.bias[...].reshape(ref_layer.bias.shape)
  return ref


def _numpy_reference(module, x, mask=None):
  """The paper's formula in float64 NumPy: per head P = softmax(Q K^T / sqrt(d_p)), then W_o."""
  p = lambda layer, field: np.asarray(getattr(layer, field)[...], np.float64)
  x = np.asarray(x, np.float64)
  q = np.einsum('bnd,dhk->bnhk', x, p(module.query, 'kernel')) + p(module.query, 'bias')
  k = np.einsum('bnd,dhk->bnhk', x, p(module.key, 'kernel')) + p(module.key, 'bias')
  v = np.einsum('bnd,dhk->bnhk', x, p(module.value, 'kernel')) + p(module.value, 'bias')
  logits = np.einsum('bqhk,bshk->bhqs', q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(np.asarray(mask), logits, -np.inf)
  logits = logits - logits.max(-1, keepdims=True)
  weights = np.exp(logits)
  weights /= weights.sum(-1, keepdims=True)
  context = np.einsum('bhqs,bshk->bqhk', weights, v)
  return np.einsum('bqhk,hkd->bqd', context, p(module.out, 'kernel')) + p(module.out, 'bias')


@pytest.mark.parametrize('d,h,dp', SHAPES)
def test_parameter_shapes_follow_head_size(d, h, dp):
  m = attn.MultiHeadAttention(in_features=d, num_heads=h, head_size=dp, rngs=nnx.Rngs(0))
  dp = d // h if dp is None else dp
  assert m.head_size == dp
  assert m.query.kernel[...].shape == (d, h, dp)
  assert m.out.kernel[...].shape == (h, dp, d)
  assert m.query.kernel.get_metadata()['out_sharding'] == ('embed', 'heads', 'head_dim')
  assert m.out.kernel.get_metadata()['out_sharding'] == ('heads', 'head_dim', 'embed')
  assert m.query.bias.get_metadata()['out_sharding'] == ('heads', 'head_dim')


@pytest.mark.parametrize('d,h,dp', SHAPES)
@pytest.mark.parametrize('masked', [False, True])
def test_matches_flax_multihead_attention(d, h, dp, masked):
  ours = attn.MultiHeadAttention(in_features=d, num_heads=h, head_size=dp, rngs=nnx.Rngs(1))
  dp = ours.head_size
  ref = _copy_into_flax(ours, d, h, dp)
  x = _inputs(d)
  mask = None
  if masked:
    valid = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    mask = masks.combine_masks(masks.causal_mask(6), masks.padding_mask(valid))
  got = ours(x, mask=mask)
  want = ref(x, mask=mask, deterministic=True)
  if masked:  # flax averages fully masked (padded) query rows; compare the valid ones
    got, want = got[valid], want[valid]
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-6)


@pytest.mark.parametrize('d,h,dp', SHAPES)
def test_matches_float64_numpy_formula(d, h, dp):
  ours = attn.MultiHeadAttention(in_features=d, num_heads=h, head_size=dp, rngs=nnx.Rngs(2),
                                 bias_init=nnx.initializers.normal(0.5))
  x = _inputs(d, seed=3)
  segments = jnp.array([[1, 1, 2, 2, 2, 3], [1, 1, 1, 1, 1, 1]])
  mask = masks.combine_masks(masks.causal_mask(6), masks.segment_mask(segments))
  np.testing.assert_allclose(ours(x, mask=mask), _numpy_reference(ours, x, mask),
                             atol=2e-5, rtol=2e-5)


def test_baseline_requires_heads_to_divide_width():
  with pytest.raises(ValueError, match='num_heads=3 does not divide in_features=10'):
    attn.MultiHeadAttention(in_features=10, num_heads=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='head_size=0'):
    attn.MultiHeadAttention(in_features=10, num_heads=2, head_size=0, rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_attention_implementations_agree_and_match_config():
  assert set(attention_op.ATTENTION_IMPLEMENTATIONS) == set(config_lib.ATTENTION_IMPLEMENTATIONS)
  assert set(config_lib.ATTENTION_CHOICES) == {attention_op.AUTO,
                                                *attention_op.ATTENTION_IMPLEMENTATIONS}
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 5, 3, 4)) for i in range(3))
  segments = jnp.array([[1, 1, 2, 2, 0], [1, 2, 2, 2, 2]])
  mask = masks.combine_masks(masks.causal_mask(5), masks.segment_mask(segments),
                            masks.padding_mask(segments > 0))
  want = attention_op.dot_product_attention(q, k, v, mask=mask, implementation='xla')
  structured = masks.SegmentMask(segments, causal=True)
  for impl in ('auto', *DENSE, 'pallas'):
    got = attention_op.dot_product_attention(q, k, v, mask=structured, implementation=impl)
    np.testing.assert_allclose(got, want, atol=1e-6, err_msg=impl)
    if impl != 'pallas':
      got = attention_op.dot_product_attention(q, k, v, mask=mask, implementation=impl)
      np.testing.assert_allclose(got, want, atol=1e-6, err_msg=impl)
  with pytest.raises(ValueError, match="'nope' is not one of"):
    attention_op.dot_product_attention(q, k, v, implementation='nope')
  with pytest.raises(ValueError, match="'pallas' takes a SegmentMask"):
    attention_op.dot_product_attention(q, k, v, mask=mask, implementation='pallas')
  if jax.default_backend() == 'cpu':
    with pytest.raises(RuntimeError, match='cuDNN'):
      attention_op.dot_product_attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16),
                                 v.astype(jnp.bfloat16), implementation='cudnn')


@pytest.mark.slow
@pytest.mark.parametrize('rate', [0.0, 0.3])
def test_xla_path_runs_forward_grouped_and_differentiates_the_einsum_graph(rate):
  """'xla' computes its forward under a unit-axis vmap (a faster CPU fusion) but its gradient
  is the plain einsum graph's: outputs agree, gradients are bit-identical, dropout included."""
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 6, 3, 4)) for i in range(3))
  mask = masks.SegmentMask(jnp.array([[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1]]),
                          causal=True).dense(6, 6)
  rng = jax.random.key(7) if rate else None
  args = (mask, rate, rng, None)
  np.testing.assert_allclose(attention_op._xla_attention(q, k, v, *args),
                             attention_op._einsum_attention(q, k, v, *args), rtol=1e-6, atol=1e-7)

  def grads(fn):
    loss = lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, *args)))
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

  for got, want in zip(grads(attention_op._xla_attention), grads(attention_op._einsum_attention)):
    np.testing.assert_array_equal(got, want)
  assert float(jnp.abs(grads(attention_op._xla_attention)[0]).max()) > 0
  # which graph each program compiled: the op names say whether it ran under the vmap
  compiled = lambda f: jax.jit(f).lower(q).compile().as_text()
  assert 'vmap(' in compiled(lambda q: attention_op._xla_attention(q, k, v, *args))
  assert 'vmap(' not in compiled(
      jax.grad(lambda q: jnp.sum(attention_op._xla_attention(q, k, v, *args))))


def test_segment_mask_is_the_dense_masks_it_stands_for():
  segments = jnp.array([[1, 1, 2, 2, 0, 0], [3, 3, 3, 1, 1, 0]])
  np.testing.assert_array_equal(
      masks.SegmentMask(segments, causal=True).dense(6, 6),
      masks.combine_masks(masks.causal_mask(6), masks.packed_mask(segments)))
  np.testing.assert_array_equal(masks.SegmentMask(causal=True).dense(6, 6), masks.causal_mask(6))
  valid = jnp.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(masks.SegmentMask(valid).dense(6, 6), masks.padding_mask(valid))
  ids_kv = jnp.array([[1, 2, 2, 0], [3, 3, 1, 1]])
  np.testing.assert_array_equal(
      masks.SegmentMask(segments, ids_kv, causal=True).dense(6, 4),
      (jnp.arange(6)[:, None] >= jnp.arange(4)[None])[None, None]
      & masks.segment_mask(segments, ids_kv) & (segments > 0)[:, None, :, None])
  assert masks.SegmentMask().dense(3, 3) is None
  # A pytree: ids are leaves, causal is static.
  leaves, tree = jax.tree.flatten(masks.SegmentMask(segments, causal=True))
  assert len(leaves) == 1 and jax.tree.unflatten(tree, leaves).causal


@pytest.mark.parametrize('backend, dtype, head_size, dropout, dense, want', [
    ('gpu', 'bfloat16', 64, False, False, 'cudnn'),
    ('gpu', 'float16', 128, False, True, 'cudnn'),
    ('gpu', 'bfloat16', 256, False, False, 'pallas'),  # the paper's d_p = n
    ('gpu', 'float32', 64, False, False, 'pallas'),
    ('gpu', 'bfloat16', 100, False, False, 'pallas'),  # not a multiple of 8
    ('gpu', 'bfloat16', 256, False, True, 'xla'),
    ('gpu', 'bfloat16', 64, True, False, 'xla'),
    ('tpu', 'bfloat16', 128, False, False, 'tpu_flash'),  # JAX's Pallas TPU kernel
    ('tpu', 'float32', 512, False, False, 'tpu_flash'),
    ('tpu', 'bfloat16', 64, False, False, 'xla'),  # not a multiple of 128
    ('tpu', 'bfloat16', 256, True, False, 'xla'),  # attention dropout
    ('tpu', 'bfloat16', 256, False, True, 'xla'),  # a dense mask
    ('cpu', 'float32', 32, False, False, 'xla'),
])
def test_auto_chooses_by_backend_dtype_head_size_dropout_and_mask(backend, dtype, head_size,
                                                                  dropout, dense, want):
  name, why = attention_op.choose_implementation(head_size, dtype, dropout=dropout,
                                                 dense_mask=dense, backend=backend)
  assert name == want and why


def test_auto_logs_its_choice_once_per_op(caplog):
  q = jnp.ones((1, 4, 2, 8))
  op = attention_op.AttentionOp('auto')
  with caplog.at_level('INFO'):
    for _ in range(3):
      op(q, q, q)
  lines = [r.getMessage() for r in caplog.records if 'attention_impl' in r.getMessage()]
  assert len(lines) == 1 and lines[0].startswith("attention_impl='auto': xla (")


def test_no_future_leakage_under_causal_mask():
  m = attn.MultiHeadAttention(in_features=8, num_heads=2, head_size=6, rngs=nnx.Rngs(0))
  x = _inputs(8, batch=1, length=7)
  x_changed = x.at[:, 4:].set(100.0)  # perturb the future of position 3
  mask = masks.causal_mask(7)
  a, b = m(x, mask=mask), m(x_changed, mask=mask)
  np.testing.assert_array_equal(a[:, :4], b[:, :4])
  assert not np.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.slow
def test_no_attention_across_packed_segments():
  m = attn.MultiHeadAttention(in_features=8, num_heads=4, head_size=3, rngs=nnx.Rngs(0))
  doc_a, doc_b = _inputs(8, 1, 3, seed=1), _inputs(8, 1, 4, seed=2)
  packed = jnp.concatenate([doc_a, doc_b], axis=1)
  segments = jnp.array([[1, 1, 1, 2, 2, 2, 2]])
  out = m(packed, mask=masks.combine_masks(masks.causal_mask(7), masks.segment_mask(segments)))
  np.testing.assert_allclose(out[:, :3], m(doc_a, mask=masks.causal_mask(3)), atol=1e-6)
  np.testing.assert_allclose(out[:, 3:], m(doc_b, mask=masks.causal_mask(4)), atol=1e-6)


@pytest.mark.slow
def test_fully_masked_rows_are_zero_not_nan():
  m = attn.MultiHeadAttention(in_features=8, num_heads=2, head_size=4, rngs=nnx.Rngs(0),
                              use_bias=False)
  x = _inputs(8, batch=2, length=5)
  valid = jnp.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
  mask = masks.padding_mask(valid)

  def loss(module):
    return jnp.sum(module(x, mask=mask) ** 2)

  out = m(x, mask=mask)
  grads = nnx.grad(loss)(m)
  assert np.all(np.isfinite(out))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  np.testing.assert_array_equal(out[0, 2:], 0.0)
  np.testing.assert_array_equal(out[1], 0.0)
  assert np.all(np.abs(out[0, :2]) > 0)


def test_masks_have_the_documented_meaning():
  assert masks.causal_mask(3)[0, 0].tolist() == [[True, False, False], [True, True, False],
                                                [True, True, True]]
  seg = masks.segment_mask(jnp.array([[1, 1, 2]]))[0, 0]
  assert seg.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
  pad = masks.padding_mask(jnp.array([[1, 0]]))[0, 0]
  assert pad.tolist() == [[True, False], [False, False]]
  assert masks.combine_masks(None, None) is None
  packed = masks.packed_mask(jnp.array([[1, 1, 2, 0]]))[0, 0]
  assert packed.tolist() == [[True, True, False, False], [True, True, False, False],
                             [False, False, True, False], [False, False, False, False]]


def test_attention_dropout_is_keyed_and_off_when_deterministic():
  m = attn.MultiHeadAttention(in_features=8, num_heads=2, head_size=4, dropout_rate=0.5,
                              rngs=nnx.Rngs(0))
  x = _inputs(8)
  clean = m(x)
  np.testing.assert_array_equal(clean, m(x, deterministic=True))
  a = m(x, deterministic=False, rngs=nnx.Rngs(dropout=1))
  b = m(x, deterministic=False, rngs=nnx.Rngs(dropout=1))
  c = m(x, deterministic=False, rngs=nnx.Rngs(dropout=2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, clean)
  with pytest.raises(ValueError, match="'dropout' stream"):
    m(x, deterministic=False)


def test_bf16_compute_with_f32_params():
  m = attn.MultiHeadAttention(in_features=16, num_heads=4, head_size=8, dtype=jnp.bfloat16,
                              param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  ref = attn.MultiHeadAttention(in_features=16, num_heads=4, head_size=8, rngs=nnx.Rngs(0))
  x = _inputs(16)
  out = m(x, mask=masks.causal_mask(6))
  assert m.query.kernel[...].dtype == jnp.float32
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), ref(x, mask=masks.causal_mask(6)),
                             atol=5e-2, rtol=5e-2)


def _lower_rank_mask_cases(b=2, h=3, q=5, k=4):
  """(mask, the same mask spelled as an explicit [b, h, q, k] array) for 0- to 3-D masks."""
  rng = np.random.default_rng(0)
  qk = rng.random((q, k)) < 0.6
  qk[2] = False  # a query row with no allowed key
  hqk = rng.random((h, q, k)) < 0.6
  hqk[1, 3] = False
  cases = [
      (qk, qk[None, None]),
      (qk[None], qk[None, None]),
      (hqk, hqk[None]),
      (qk[:1], qk[None, None, :1]),  # [1, k]: one row for every query
      (np.array(True), np.ones((1, 1, 1, 1), bool)),
  ]
  return [(jnp.asarray(m), jnp.asarray(np.broadcast_to(m4, (b, h, q, k)))) for m, m4 in cases]


@pytest.mark.parametrize('impl', DENSE)
def test_masks_of_fewer_dims_broadcast_like_numpy(impl):
  b, q_len, kv_len, h, dp = 2, 5, 4, 3, 4
  q = jax.random.normal(jax.random.key(0), (b, q_len, h, dp))
  k, v = (jax.random.normal(jax.random.key(i), (b, kv_len, h, dp)) for i in (1, 2))
  for mask, mask4 in _lower_rank_mask_cases(b, h, q_len, kv_len):
    got = attention_op.dot_product_attention(q, k, v, mask=mask, implementation=impl)
    want = attention_op.dot_product_attention(q, k, v, mask=mask4, implementation=impl)
    assert got.shape == (b, q_len, h, dp)
    np.testing.assert_array_equal(got, want)
    # Rows with no allowed key are exactly zero; the others are not.
    empty = ~np.asarray(mask4).any(-1).transpose(0, 2, 1)  # [b, q_len, h]
    np.testing.assert_array_equal(np.asarray(got)[empty], 0.0)
    assert np.all(np.abs(np.asarray(got)[~empty]).sum(-1) > 0)
  # The row masked in every head above really is empty in the [q, k] case.
  assert np.all(np.asarray(attention_op.dot_product_attention(
      q, k, v, mask=_lower_rank_mask_cases()[0][0], implementation=impl))[:, 2] == 0)


@pytest.mark.parametrize('impl', DENSE)
def test_module_takes_2d_and_3d_masks(impl):
  m = attn.MultiHeadAttention(in_features=8, num_heads=2, head_size=5, implementation=impl,
                              rngs=nnx.Rngs(0), bias_init=nnx.initializers.normal(0.5))
  x = _inputs(8, batch=2, length=6)
  causal = masks.causal_mask(6)[0, 0]  # [6, 6]
  heads = jnp.stack([causal, causal.T])  # [h, 6, 6], a different mask per head
  np.testing.assert_array_equal(m(x, mask=heads), m(x, mask=heads[None]))
  np.testing.assert_allclose(m(x, mask=heads), _numpy_reference(m, x, heads[None]),
                             atol=2e-5, rtol=2e-5)
  # Row 4 may attend to nothing: its context is exactly 0, so the output is the out bias.
  holed = causal.at[4].set(False)
  out = m(x, mask=holed)
  np.testing.assert_array_equal(out, m(x, mask=holed[None, None]))
  np.testing.assert_array_equal(out[:, 4], jnp.broadcast_to(m.out.bias[...], (2, 8)))
  assert not np.allclose(out[:, 3], m.out.bias[...])


def test_mask_that_does_not_broadcast_is_refused():
  q = jnp.ones((2, 5, 3, 4))
  with pytest.raises(ValueError, match=r'mask of shape \(4, 5\) does not broadcast'):
    attention_op.dot_product_attention(q, q[:, :4], q[:, :4], mask=jnp.ones((4, 5), bool))
  with pytest.raises(ValueError, match=r'does not broadcast'):
    attention_op.dot_product_attention(q, q, q, mask=jnp.ones((1, 2, 3, 5, 5), bool))


def test_ops_that_choose_alike_are_equal_so_models_of_one_config_share_a_graphdef():
  assert attention_op.AttentionOp('xla') == attention_op.AttentionOp('xla')
  assert attention_op.AttentionOp('xla') != attention_op.AttentionOp('auto')
  assert attention_op.AttentionOp(platform='tpu') != attention_op.AttentionOp()
  assert attention_op.AttentionOp(record=[]) != attention_op.AttentionOp(record=[])
  mha = lambda seed: attn.MultiHeadAttention(in_features=8, num_heads=2, rngs=nnx.Rngs(seed))
  assert nnx.graphdef(mha(0)) == nnx.graphdef(mha(1))  # jit's caches hit across the two
