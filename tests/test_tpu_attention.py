"""The TPU attention path (JAX's Pallas TPU FlashAttention, ``fixed_head.nn.tpu_attention``)
against the einsum reference, in Pallas's TPU interpret mode on this CPU: outputs and q/k/v
gradients, float32 and bfloat16, at the paper's head sizes, with causal order + packed
segment ids (LM1B rows) and BERT's padding. ``tests/test_compile.py`` lowers the same path
through Mosaic for v5e:2x2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from fixed_head.nn import attention_op, masks, tpu_attention


def _inputs(n, head_size, dtype, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=(2, n, 1, head_size)), dtype) for _ in range(3))


def _masks(n, kind):
  if kind == 'lm':  # two packed documents in row 0, a padded tail in row 1; causal
    ids = np.ones((2, n), np.int32)
    ids[0, n // 3:] = 2
    ids[1, 3 * n // 4:] = 0
    return masks.SegmentMask(jnp.asarray(ids), causal=True)
  valid = np.ones((2, n), np.int32)  # BERT: input_mask as ids, padding at the end
  valid[0, n // 2:] = 0
  return masks.SegmentMask(jnp.asarray(valid))


def _max_abs(x) -> float:
  return float(jnp.max(jnp.abs(x.astype(jnp.float32))))


def _forward_and_grads(implementation, mask, q, k, v):
  """(output, q/k/v gradients of a weighted sum of it), from one trace."""
  out, vjp = jax.vjp(lambda q, k, v: attention_op.dot_product_attention(
      q, k, v, mask=mask, implementation=implementation), q, k, v)
  weights = jnp.cos(jnp.arange(out.size).reshape(out.shape)).astype(out.dtype)
  return out, vjp(weights)


@pytest.mark.slow
@pytest.mark.parametrize('head_size', [128, 256, 512])
@pytest.mark.parametrize('dtype,tol', [(jnp.float32, 2e-5), (jnp.bfloat16, 4e-2)])
@pytest.mark.parametrize('kind', ['lm', 'bert'])
def test_matches_einsum_forward_and_gradients(head_size, dtype, tol, kind):
  n = 128
  q, k, v = _inputs(n, head_size, dtype)
  mask = _masks(n, kind)
  with pltpu.force_tpu_interpret_mode():
    out, grads = _forward_and_grads('tpu_flash', mask, q, k, v)
  expected, ref_grads = _forward_and_grads('xla', mask, q, k, v)
  assert _max_abs(out - expected) <= tol * (_max_abs(expected) + 1e-6)
  for g, r in zip(grads, ref_grads):
    assert _max_abs(g - r) <= 2 * tol * (_max_abs(r) + 1e-6)
  if kind == 'lm':  # the padded tail outputs exactly zero, as on every path
    assert not np.any(np.asarray(out[1, 3 * n // 4:], np.float32))


@pytest.mark.slow
def test_several_blocks_causal():
  """n = 256: two key blocks, the causal loop skipping the one above the diagonal."""
  q, k, v = _inputs(256, 128, jnp.float32, seed=1)
  mask = _masks(256, 'lm')
  with pltpu.force_tpu_interpret_mode():
    out = attention_op.dot_product_attention(q, k, v, mask=mask, implementation='tpu_flash')
  expected = attention_op.dot_product_attention(q, k, v, mask=mask, implementation='xla')
  np.testing.assert_allclose(out, expected, atol=2e-5, rtol=2e-5)


def test_auto_on_tpu_chooses_by_shape_dropout_and_mask():
  def choose(**kw):
    return attention_op.choose_implementation(
        backend='tpu', **{'dropout': False, 'dense_mask': False, 'seq_len': 512, **kw})
  assert choose(head_size=512, dtype=jnp.bfloat16)[0] == 'tpu_flash'
  assert choose(head_size=128, dtype=jnp.float32, seq_len=128)[0] == 'tpu_flash'
  name, why = choose(head_size=64, dtype=jnp.bfloat16)  # the baseline's d/h
  assert name == 'xla' and 'd_p = 64 is not a multiple of 128' in why
  name, why = choose(head_size=512, dtype=jnp.bfloat16, dropout=True)
  assert name == 'xla' and 'attention_dropout_rate=0' in why  # never silently dropped
  assert choose(head_size=512, dtype=jnp.bfloat16, dense_mask=True)[0] == 'xla'
  assert choose(head_size=512, dtype=jnp.bfloat16, seq_len=200)[0] == 'xla'


def test_refuses_what_it_cannot_do():
  q, k, v = _inputs(128, 128, jnp.float32)
  with pytest.raises(ValueError, match='does not support attention dropout'):
    attention_op.dot_product_attention(q, k, v, implementation='tpu_flash', dropout_rate=0.1,
                                    dropout_rng=jax.random.key(0))
  with pytest.raises(ValueError, match='not a multiple of 128'):
    attention_op.dot_product_attention(q[..., :64], k[..., :64], v[..., :64],
                                    implementation='tpu_flash')
  assert tpu_attention.applies(256, 512) is None
