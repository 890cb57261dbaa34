"""The product softmax(Q K^T / sqrt(d_p)) V, and which implementation computes it.

``AttentionOp`` is what ``MultiHeadAttention`` calls once it has projected the heads (the
split of MaxText's ``Attention`` and ``AttentionOp``): it holds the implementation (a name of
``ATTENTION_IMPLEMENTATIONS``, or 'auto'), the platform 'auto' chooses for, and an optional
list that records each choice. The implementations: 'xla' (the einsum reference), 'jax'
(``jax.nn.dot_product_attention``), 'cudnn' (its cuDNN fused kernel, GPU), 'pallas'
(``fixed_head.nn.flash_attention``, any head size, memory linear in n), 'tpu_flash' (JAX's
Pallas TPU kernel, ``fixed_head.nn.tpu_attention``). 'auto' picks per call from the platform,
dtype, head size, sequence length, dropout and mask (``choose_implementation``) and logs the
choice and its reason once per op.

Shapes: query [b, q_len, h, d_p], key and value [b, kv_len, h, d_p]; masks as in
``fixed_head.nn.masks``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from absl import logging

import jax
import jax.numpy as jnp

from fixed_head import config as config_lib
from fixed_head.nn.masks import SegmentMask, as_4d

Array = jax.Array


def dropout(x: Array, rate: float, rng: Array) -> Array:
  """Inverted dropout: zeroes each entry with probability ``rate``, scales the rest."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def attention_weights(query: Array, key: Array, mask: Array | None,
                      precision=None) -> Array:
  """softmax(Q K^T / sqrt(d_p)): query [b, q, h, d_p], key [b, k, h, d_p], mask bool
  broadcastable to [b, h, q, k] (True: may attend; None: nothing masked) -> float32
  [b, h, q, k]."""
  head_size = query.shape[-1]
  query = query / jnp.sqrt(head_size).astype(query.dtype)
  logits = jnp.einsum('bqhd,bkhd->bhqk', query, key, precision=precision)
  # The softmax runs in float32 whatever the compute dtype, for bf16 stability.
  logits = logits.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


def _einsum_attention(query, key, value, mask, dropout_rate, dropout_rng, precision):
  """softmax(Q K^T / sqrt(d_p)) V as written: the reference every implementation must match."""
  weights = attention_weights(query, key, mask, precision)
  if dropout_rate > 0.0:
    weights = dropout(weights, dropout_rate, dropout_rng)
  weights = weights.astype(value.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, value, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 6))
def _xla_attention(query, key, value, mask, dropout_rate, dropout_rng, precision):
  """The einsum reference, ``_einsum_attention``; differentiated, exactly its graph.

  Forward only (eval, sampling), the same operations run under a vmap over a unit axis of
  query heads, as ``jax.nn.dot_product_attention`` runs them. That leaves the softmax its own
  fusion: in the plain graph XLA's CPU compiler fuses it into the P V matmul and recomputes
  it per tile, which made the forward up to 2.2x slower than Flax's at small d_p
  (BENCHMARKS.md, section 2). The outputs agree to float rounding.
  """
  grouped = jax.vmap(_einsum_attention, in_axes=(3, None, None, None, None, None, None),
                     out_axes=3)
  return grouped(query[:, :, :, None], key, value, mask, dropout_rate, dropout_rng,
                 precision)[:, :, :, 0]


def _xla_attention_forward(query, key, value, mask, dropout_rate, dropout_rng, precision):
  out, backward = jax.vjp(
      lambda q, k, v: _einsum_attention(q, k, v, mask, dropout_rate, dropout_rng, precision),
      query, key, value)
  return out, backward


def _xla_attention_backward(dropout_rate, precision, backward, cotangent):
  del dropout_rate, precision
  return (*backward(cotangent), None, None)


_xla_attention.defvjp(_xla_attention_forward, _xla_attention_backward)


def _jax_attention(query, key, value, mask, dropout_rate, dropout_rng, precision,
                   implementation=None):
  """``jax.nn.dot_product_attention``: XLA's choice ('jax'), or cuDNN's fused kernel
  ('cudnn': GPU, bfloat16/float16, d_p <= 128 and a multiple of 8). A ``SegmentMask``'s causal
  order goes in as ``is_causal``, its segments as a dense mask."""
  del dropout_rng
  _refuse_dropout_and_precision('cudnn' if implementation == 'cudnn' else 'jax', dropout_rate,
                                precision)
  is_causal = False
  if isinstance(mask, SegmentMask):
    is_causal = mask.causal and query.shape[1] == key.shape[1]
    mask = SegmentMask(mask.segment_ids_q, mask.segment_ids_kv,
                       causal=mask.causal and not is_causal).dense(query.shape[1], key.shape[1])
  if mask is not None:
    mask = jnp.broadcast_to(
        mask, (query.shape[0], mask.shape[1], query.shape[1], key.shape[1]))
  return jax.nn.dot_product_attention(query, key, value, mask=mask, is_causal=is_causal,
                                      implementation=implementation)


def _kernel_mask_args(name: str, mask, dropout_rate: float, precision) -> dict:
  """The arguments of a fused kernel that reads masks by structure ('pallas', 'tpu_flash'):
  causal and the segment ids (the key ids None: the kernel takes the query's), after
  refusing what such a kernel cannot do (dropout, a precision, a dense mask)."""
  _refuse_dropout_and_precision(name, dropout_rate, precision)
  if mask is not None and not isinstance(mask, SegmentMask):
    raise ValueError(f"attention_impl={name!r} takes a SegmentMask (causal order and segment "
                     "ids), not a dense mask array; use attention_impl='xla' for those.")
  mask = mask or SegmentMask()
  return dict(causal=mask.causal, segment_ids_q=mask.segment_ids_q,
              segment_ids_kv=None if mask.segment_ids_q is None else mask.segment_ids_kv)


def _pallas_attention(query, key, value, mask, dropout_rate, dropout_rng, precision):
  """The fused Pallas kernel (``fixed_head.nn.flash_attention``): masks as a SegmentMask."""
  del dropout_rng
  from fixed_head.nn import flash_attention  # pylint: disable=g-import-not-at-top
  return flash_attention.flash_attention(
      query, key, value, **_kernel_mask_args('pallas', mask, dropout_rate, precision))


def _tpu_flash_attention(query, key, value, mask, dropout_rate, dropout_rng, precision):
  """JAX's Pallas TPU FlashAttention (``fixed_head.nn.tpu_attention``), in shard_map over
  the mesh in context; masks as a SegmentMask."""
  del dropout_rng
  from fixed_head.nn import tpu_attention  # pylint: disable=g-import-not-at-top
  args = _kernel_mask_args('tpu_flash', mask, dropout_rate, precision)
  why_not = tpu_attention.applies(query.shape[-1], max(query.shape[1], key.shape[1]))
  if why_not:
    raise ValueError(f"attention_impl='tpu_flash': {why_not}; use 'xla' (or 'auto').")
  return tpu_attention.flash_attention(query, key, value, **args)


def _refuse_dropout_and_precision(name: str, dropout_rate: float, precision) -> None:
  """The fused implementations have neither attention dropout nor a precision argument."""
  if dropout_rate > 0.0:
    raise ValueError(
        f"attention_impl={name!r} does not support attention dropout; set "
        "attention_dropout_rate=0 or use attention_impl='xla'.")
  if precision is not None:
    raise ValueError(f"attention_impl={name!r} does not take a precision; use 'xla'.")


ATTENTION_IMPLEMENTATIONS: dict[str, Callable[..., Array]] = {
    'xla': _xla_attention,
    'jax': _jax_attention,
    'cudnn': functools.partial(_jax_attention, implementation='cudnn'),
    'pallas': _pallas_attention,
    'tpu_flash': _tpu_flash_attention,
}
AUTO = 'auto'  # choose_implementation's choice
# Take a SegmentMask as it is; the others get its dense array.
_STRUCTURED_MASKS = ('jax', 'cudnn', 'pallas', 'tpu_flash')
# Kernels that zero a query row with no allowed key themselves.
_ZERO_EMPTY_ROWS = ('pallas', 'tpu_flash')
_CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def check_implementation(implementation: str) -> None:
  """Raises ValueError unless ``implementation`` is 'auto' or a key of
  ATTENTION_IMPLEMENTATIONS (the names a config may give, ``config.ATTENTION_CHOICES``)."""
  if implementation not in config_lib.ATTENTION_CHOICES:
    raise ValueError(f'attention implementation {implementation!r} is not one of '
                     f'{list(config_lib.ATTENTION_CHOICES)}.')


def choose_implementation(head_size: int, dtype, *, dropout: bool, dense_mask: bool,
                          backend: str | None = None, seq_len: int | None = None
                          ) -> tuple[str, str]:
  """What 'auto' runs, and why: (implementation, reason).

  GPU: cuDNN's fused kernel where it applies (bfloat16/float16, d_p <= 128 and a multiple of
  8, no dropout); else the Pallas kernel for the head sizes cuDNN leaves out (no dropout, and
  the mask a SegmentMask); else 'xla'. TPU: 'tpu_flash' (JAX's Pallas TPU kernel) where d_p and
  n are multiples of 128, there is no attention dropout and the mask is a SegmentMask; else
  'xla'. CPU: 'xla', the fastest there.
  """
  backend = backend or jax.default_backend()
  dtype = jnp.dtype(dtype)
  if backend == 'gpu':
    if dropout:
      return 'xla', 'attention dropout, which no fused kernel here implements'
    if dtype in _CUDNN_DTYPES and head_size <= 128 and head_size % 8 == 0:
      return 'cudnn', f'{dtype.name}, d_p = {head_size}: cuDNN applies'
    outside = (f'{dtype.name}, d_p = {head_size} is outside cuDNN\'s fused attention '
               '(bfloat16/float16, d_p <= 128, a multiple of 8)')
    if dense_mask:
      return 'xla', outside + ', and the Pallas kernel takes no dense mask'
    return 'pallas', outside
  if backend == 'tpu':
    from fixed_head.nn import tpu_attention  # pylint: disable=g-import-not-at-top
    if dropout:
      return 'xla', ('attention dropout on TPU, which the fused TPU kernel does not implement '
                     '(set attention_dropout_rate=0 to use it)')
    if dense_mask:
      return 'xla', 'a dense mask on TPU, which the fused TPU kernel does not take'
    why_not = tpu_attention.applies(head_size, seq_len or tpu_attention.BLOCK)
    if why_not:
      return 'xla', f'{why_not}, outside the fused TPU kernel'
    return 'tpu_flash', f'TPU, d_p = {head_size}, n = {seq_len}: the fused TPU kernel applies'
  return 'xla', f'the einsum path is the fastest on {backend}'


class AttentionOp:
  """softmax(Q K^T / sqrt(d_p)) V by one implementation, or by 'auto''s choice per call.

  Args:
    implementation: a key of ``ATTENTION_IMPLEMENTATIONS``, or 'auto'.
    platform: what 'auto' chooses for ('tpu', 'gpu', 'cpu'); None: the default backend.
      ``compile.py`` compiles for TPU topologies on a CPU and sets it.
    record: a list that receives, for every call traced, a dict {'implementation',
      'reason', 'head_size', 'dtype'}; None records nothing.

  One op serves every layer of a model; 'auto' logs each choice once per op.
  """

  def __init__(self, implementation: str = AUTO, *, platform: str | None = None,
               record: list[dict] | None = None):
    check_implementation(implementation)
    self.implementation = implementation
    self.platform = platform
    self.record = record
    self._logged: set[tuple[str, str]] = set()

  def __repr__(self) -> str:
    return f'AttentionOp({self.implementation!r}, platform={self.platform!r})'

  # A module keeps its op as a static attribute, so the op is part of the module's graphdef,
  # which jit caches by: two ops that choose alike (and record into the same list) are equal,
  # as the implementation's name was when the module held that instead.
  def _key(self) -> tuple[str, str | None, int | None]:
    return self.implementation, self.platform, None if self.record is None else id(self.record)

  def __eq__(self, other) -> bool:
    return isinstance(other, AttentionOp) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash(self._key())

  def resolve(self, query: Array, key: Array, mask, dropout_rate: float) -> str:
    """The implementation that computes this call, recorded and (for 'auto') logged."""
    if self.implementation == AUTO:
      implementation, why = choose_implementation(
          query.shape[-1], query.dtype, dropout=dropout_rate > 0.0,
          dense_mask=mask is not None and not isinstance(mask, SegmentMask),
          backend=self.platform, seq_len=max(query.shape[1], key.shape[1]))
      if (implementation, why) not in self._logged:  # once, not once per layer and trace
        self._logged.add((implementation, why))
        platform = self.platform or jax.default_backend()
        log = logging.warning if platform == 'gpu' and implementation == 'xla' else logging.info
        log("attention_impl='auto': %s (%s)", implementation, why)
    else:
      implementation, why = self.implementation, 'chosen by the config'
    if self.record is not None:
      self.record.append({'implementation': implementation, 'reason': why,
                          'head_size': query.shape[-1], 'dtype': jnp.dtype(query.dtype).name})
    return implementation

  def __call__(self, query: Array, key: Array, value: Array, *,
               mask: Array | SegmentMask | None = None, dropout_rate: float = 0.0,
               dropout_rng: Array | None = None,
               precision: jax.lax.PrecisionLike = None) -> Array:
    """query [b, q_len, h, d_p], key and value [b, kv_len, h, d_p] -> [b, q_len, h, d_p].

    mask: bool broadcastable to [b, h, q_len, kv_len] (True = may attend), or a
    ``SegmentMask``. dropout_rate: dropout on the attention weights; needs ``dropout_rng``
    when > 0. Query rows whose mask allows no key are exactly zero.
    """
    if dropout_rate > 0.0 and dropout_rng is None:
      raise ValueError('dropout_rate > 0 needs a dropout_rng (or run deterministically).')
    implementation = self.resolve(query, key, mask, dropout_rate)
    b, q_len, h, _ = query.shape
    kv_len = key.shape[1]
    structured = mask if isinstance(mask, SegmentMask) else None
    if structured is not None:
      dense = structured.dense(q_len, kv_len)
      if implementation not in _STRUCTURED_MASKS:
        mask = dense
      if implementation in _ZERO_EMPTY_ROWS or structured.segment_ids_q is None:
        # The kernel zeroes empty rows itself; causal order alone leaves none (key 0).
        dense = None
    elif mask is not None:
      mask = dense = as_4d(mask, (b, h, q_len, kv_len))
    else:
      dense = None
    out = ATTENTION_IMPLEMENTATIONS[implementation](
        query, key, value, mask, dropout_rate, dropout_rng, precision)
    if dense is not None:
      # A row with every key masked would otherwise average the masked values.
      has_key = jnp.any(dense, axis=-1)  # [b or 1, h or 1, q_len or 1]
      has_key = jnp.swapaxes(has_key, 1, 2)[..., None]  # [b, q_len, h, 1]
      out = jnp.where(has_key, out, jnp.zeros((), out.dtype))
    return out


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    mask: Array | SegmentMask | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    precision: jax.lax.PrecisionLike = None,
    implementation: str = AUTO,
) -> Array:
  """softmax(Q K^T / sqrt(d_p)) V for all heads at once: ``AttentionOp(implementation)``
  called once (see ``AttentionOp.__call__`` for the shapes and the mask)."""
  return AttentionOp(implementation)(query, key, value, mask=mask, dropout_rate=dropout_rate,
                                     dropout_rng=dropout_rng, precision=precision)
