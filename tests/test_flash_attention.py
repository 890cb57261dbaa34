"""The Pallas flash attention kernel against the XLA reference (interpret mode on CPU)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixed_head.nn import attention_op, masks
from fixed_head.nn.flash_attention import flash_attention


def _inputs(seed, b, q_len, kv_len, h, d, dtype=jnp.float32):
  """q [b, q_len, h, d], k/v [b, kv_len, h, d] and an output cotangent like q."""
  kq, kk, kv, kc = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(kq, (b, q_len, h, d), dtype)
  k = jax.random.normal(kk, (b, kv_len, h, d), dtype)
  v = jax.random.normal(kv, (b, kv_len, h, d), dtype)
  cotangent = jax.random.normal(kc, (b, q_len, h, d), jnp.float32)
  return q, k, v, cotangent


def _value_and_grads(attend, q, k, v, cotangent):
  """(out, dq, dk, dv) for the linear functional sum(cotangent * out)."""
  out, vjp = jax.vjp(attend, q, k, v)
  return (out, *vjp(cotangent.astype(out.dtype)))


@functools.partial(jax.jit, static_argnames=('causal', 'block_q', 'block_k'))
def _flash(q, k, v, cotangent, seg_q, seg_kv, *, causal, block_q, block_k):
  attend = functools.partial(flash_attention, causal=causal, segment_ids_q=seg_q,
                             segment_ids_kv=seg_kv, block_q=block_q, block_k=block_k)
  return _value_and_grads(attend, q, k, v, cotangent)


@jax.jit
def _reference(q, k, v, cotangent, mask):
  attend = functools.partial(attention_op.dot_product_attention, mask=mask,
                             implementation='xla')
  return _value_and_grads(attend, q, k, v, cotangent)


def _dense_mask(q_len, kv_len, causal, seg_q, seg_kv):
  """The [b or 1, 1, q_len, kv_len] mask the repo's builders give for the same arguments."""
  causal_part = None
  if causal:  # query i sees keys j <= i, also when q_len != kv_len
    causal_part = masks.causal_mask(max(q_len, kv_len))[..., :q_len, :kv_len]
  segment_part = None
  if seg_q is not None:
    if seg_kv is None:
      segment_part = masks.packed_mask(seg_q)
    else:
      segment_part = masks.combine_masks(
          masks.segment_mask(seg_q, seg_kv),
          masks.padding_mask(seg_q > 0, seg_kv > 0))
  return masks.combine_masks(causal_part, segment_part)


def _relative_error(got, want):
  """max |got - want| / max(1, max |want|), in float32."""
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))


# Segment ids: two packed documents, padding (0) at the end, and one batch row that is all
# padding, whose every query row has no allowed key.
_SEG_48 = np.array([[1] * 13 + [2] * 25 + [0] * 10, [0] * 48])
# Cross attention q_len 24, kv_len 40: query ids 3 and 0 have no matching key (zero rows).
_SEG_Q_24 = np.array([[1] * 8 + [3] * 6 + [2] * 10, [2] * 20 + [0] * 4])
_SEG_KV_40 = np.array([[1] * 15 + [2] * 20 + [0] * 5, [0] * 7 + [2] * 33])

# (id, b, q_len, kv_len, h, d, causal, seg_q, seg_kv, block_q, block_k)
_CASES = [
    ('no_mask_default_blocks', 2, 32, 32, 2, 256, False, None, None, None, None),
    ('causal_ragged', 1, 40, 40, 1, 512, True, None, None, 32, 16),
    ('causal_packed_segments', 2, 48, 48, 1, 256, True, _SEG_48, None, 16, 16),
    ('cross_ragged', 1, 24, 40, 2, 512, False, None, None, 16, 32),
    ('cross_segments', 2, 24, 40, 1, 256, False, _SEG_Q_24, _SEG_KV_40, 32, 16),
    ('causal_q_longer_than_kv', 1, 40, 24, 1, 256, True, None, None, 16, 32),
    ('small_head_padded', 1, 20, 20, 2, 24, True, None, None, None, None),
]


@pytest.mark.parametrize('seed, case', list(enumerate(_CASES)), ids=[c[0] for c in _CASES])
def test_matches_xla_reference_forward_and_gradients(seed, case):
  """Output and d/dq, d/dk, d/dv of a random linear functional equal the XLA reference's."""
  _, b, q_len, kv_len, h, d, causal, seg_q, seg_kv, block_q, block_k = case
  q, k, v, cotangent = _inputs(seed, b, q_len, kv_len, h, d)
  seg_q = None if seg_q is None else jnp.asarray(seg_q)
  seg_kv = None if seg_kv is None else jnp.asarray(seg_kv)
  got = _flash(q, k, v, cotangent, seg_q, seg_kv, causal=causal, block_q=block_q,
               block_k=block_k)
  want = _reference(q, k, v, cotangent, _dense_mask(q_len, kv_len, causal, seg_q, seg_kv))
  for name, g, w in zip(('out', 'dq', 'dk', 'dv'), got, want):
    assert g.shape == w.shape and g.dtype == w.dtype, name
    assert np.all(np.isfinite(g)), name
    assert _relative_error(g, w) < 4e-6, (name, _relative_error(g, w))
  if seg_q is not None:  # rows with no allowed key are exactly zero, and so is their dq
    mask = _dense_mask(q_len, kv_len, causal, seg_q, seg_kv)
    empty = ~np.asarray(jnp.broadcast_to(mask, (b, 1, q_len, kv_len)).any(-1))[:, 0]
    assert empty.any()
    assert np.all(np.asarray(got[0])[empty] == 0) and np.all(np.asarray(got[1])[empty] == 0)


def test_bfloat16_close_to_float32_reference():
  """bf16 inputs: bf16 output and gradients, within bf16 rounding of the float32 reference
  computed on the same (bf16-representable) inputs."""
  q, k, v, cotangent = _inputs(7, 2, 48, 48, 1, 256, jnp.bfloat16)
  seg = jnp.asarray(_SEG_48)
  got = _flash(q, k, v, cotangent, seg, None, causal=True, block_q=16, block_k=32)
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  want = _reference(*f32, cotangent, _dense_mask(48, 48, True, seg, None))
  for name, g, w in zip(('out', 'dq', 'dk', 'dv'), got, want):
    assert g.dtype == jnp.bfloat16, name
    assert np.all(np.isfinite(np.asarray(g, np.float32))), name
    assert _relative_error(g, w) < 1e-2, (name, _relative_error(g, w))


def test_causal_kernels_never_visit_blocks_above_the_diagonal():
  """NaNs planted where a causal kernel must not look stay out of the results: the loops
  stop at the diagonal (a masked-but-visited block would give 0 * NaN = NaN)."""
  n, block = 48, 16
  q, k, v, cotangent = _inputs(3, 1, n, n, 1, 32)
  run = functools.partial(_flash, seg_q=None, seg_kv=None, causal=True, block_q=block,
                          block_k=block)
  # Forward and dq of the first query block must not read keys/values past it.
  poisoned = k.at[:, block:].set(jnp.nan), v.at[:, block:].set(jnp.nan)
  out, dq, _, _ = run(q, *poisoned, cotangent)
  clean_out, clean_dq, _, _ = run(q, k, v, cotangent)
  np.testing.assert_array_equal(out[:, :block], clean_out[:, :block])
  np.testing.assert_array_equal(dq[:, :block], clean_dq[:, :block])
  # dk, dv of the last key block must not read earlier query blocks.
  _, _, dk, dv = run(q.at[:, :n - block].set(jnp.nan), k, v, cotangent)
  _, _, clean_dk, clean_dv = run(q, k, v, cotangent)
  np.testing.assert_array_equal(dk[:, n - block:], clean_dk[:, n - block:])
  np.testing.assert_array_equal(dv[:, n - block:], clean_dv[:, n - block:])


def _temp_bytes(attend, n, b=1, h=1, d=16):
  """XLA's planned temporary memory for forward + backward at sequence length n."""
  x = jax.ShapeDtypeStruct((b, n, h, d), jnp.float32)
  grads = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v)), argnums=(0, 1, 2)))
  return grads.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes


def test_memory_is_linear_in_sequence_length():
  """Temporary bytes of the compiled forward + backward when n doubles: ~2x for the kernel,
  ~4x for the XLA reference (its [b, h, n, n] logits and weights).

  In interpret mode the kernels become XLA while loops over the grid and the key/query
  blocks, so XLA's buffer assignment sees exactly the arrays the kernels keep: [n, d]
  operands and [block_q, block_k] tiles, no [n, n] array. That makes the compiled temp size
  an honest proxy for the GPU kernel's footprint (which is O(n d) outside the tiles).
  """
  def flash(q, k, v):
    return flash_attention(q, k, v, causal=True)

  def reference(q, k, v):
    return attention_op.dot_product_attention(q, k, v, mask=masks.causal_mask(q.shape[1]))

  small, large = 512, 1024
  flash_small, flash_large = _temp_bytes(flash, small), _temp_bytes(flash, large)
  ref_small, ref_large = _temp_bytes(reference, small), _temp_bytes(reference, large)
  assert flash_large / flash_small < 2.5, (flash_small, flash_large)
  assert ref_large / ref_small > 3.5, (ref_small, ref_large)
  assert flash_large < large * large * 4  # less than one [n, n] float32 array


def test_lowers_to_triton_kernels_for_gpu():
  """Lowering for CUDA (no GPU needed to lower) turns all three kernels into Triton calls.

  This checks that every primitive has a Triton lowering rule; it does not compile the
  Triton IR to PTX, so register and shared-memory limits are not checked here.
  """
  x = jax.ShapeDtypeStruct((1, 256, 2, 512), jnp.bfloat16)
  ids = jax.ShapeDtypeStruct((1, 256), jnp.int32)

  def loss(q, k, v, seg):
    out = flash_attention(q, k, v, causal=True, segment_ids_q=seg, interpret=False)
    return jnp.sum(out.astype(jnp.float32))

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  text = grads.trace(x, x, x, ids).lower(lowering_platforms=('cuda',)).as_text()
  assert text.count('xla.gpu.triton') == 3, text.count('xla.gpu.triton')
  for name in ('flash_attention_forward', 'flash_attention_dkdv', 'flash_attention_dq'):
    assert name in text


_Q = np.zeros((2, 8, 2, 16), np.float32)
_KV = np.zeros((2, 12, 2, 16), np.float32)
_BAD_ARGUMENTS = [
    ('query', dict(query=np.zeros((8, 2, 16), np.float32))),
    ('query', dict(query=_Q.astype(np.int32))),
    ('query', dict(query=[[1.0]])),
    ('key', dict(key=np.zeros((2, 12, 3, 16), np.float32))),
    ('key', dict(key=np.zeros((2, 12, 2, 8), np.float32),
                 value=np.zeros((2, 12, 2, 8), np.float32))),
    ('value', dict(value=np.zeros((2, 11, 2, 16), np.float32))),
    ('dtype', dict(key=_KV.astype(jnp.bfloat16), value=_KV.astype(jnp.bfloat16))),
    ('empty', dict(query=np.zeros((2, 0, 2, 16), np.float32))),
    ('causal', dict(causal=1)),
    ('interpret', dict(interpret='yes')),
    ('block_q', dict(block_q=48)),
    ('block_q', dict(block_q=8)),
    ('block_k', dict(block_k=2.0)),
    ('block_k', dict(block_k=True)),
    ('segment_ids_q', dict(segment_ids_q=np.ones((2, 12), np.int32))),
    ('segment_ids_q', dict(segment_ids_q=np.ones((2, 8), np.float32))),
    ('segment_ids_kv', dict(segment_ids_q=np.ones((2, 8), np.int32))),  # kv_len != q_len
    ('segment_ids_kv', dict(segment_ids_q=np.ones((2, 8), np.int32),
                            segment_ids_kv=np.ones((2, 8), np.int32))),
    ('segment_ids_kv', dict(segment_ids_kv=np.ones((2, 12), np.int32))),
]


@pytest.mark.parametrize('name, overrides', _BAD_ARGUMENTS,
                         ids=[f'{n}-{i}' for i, (n, _) in enumerate(_BAD_ARGUMENTS)])
def test_bad_arguments_raise_value_error_naming_them(name, overrides):
  args = dict(query=_Q, key=_KV, value=_KV) | overrides
  query, key, value = args.pop('query'), args.pop('key'), args.pop('value')
  with pytest.raises(ValueError, match=name):
    flash_attention(query, key, value, **args)
