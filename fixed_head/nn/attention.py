"""Multi-head attention whose head size d_p is its own hyper-parameter.

One head (docs/paper.md, "Notation"), written for row-major activations x of shape [n, d]:

  P = softmax over keys of (x W_q)(x W_k)^T / sqrt(d_p),   head = P (x W_v)

with W_q, W_k, W_v of shape [d, d_p]. The h heads are concatenated ([n, h * d_p]) and
mapped back to d by W_o ([h * d_p, d]). The paper writes the same thing with tokens as
columns (X = x^T, P column-stochastic); ``fixed_head.theory`` keeps that convention.

Baseline attention is ``head_size=None`` (d_p = d / h, h must divide d); any integer
``head_size`` gives the paper's fixed-head attention, where h need not divide d.

Masks are boolean arrays broadcastable to [batch, h, q_len, kv_len] by NumPy's rules (so
[q_len, kv_len] and [h, q_len, kv_len] work too); True means "may attend". Build them with
``causal_mask``, ``padding_mask`` and ``segment_mask`` and join them with ``combine_masks``;
or describe them with a ``SegmentMask`` (causal order and segment ids), which fused kernels
read without building the array, as the models do. A query row with no allowed key outputs
zeros (never NaN).

The product itself has several implementations (``ATTENTION_IMPLEMENTATIONS``): 'xla' (the
einsum reference), 'jax' (``jax.nn.dot_product_attention``), 'cudnn' (its cuDNN fused
kernel, GPU), 'pallas' (``fixed_head.nn.flash_attention``, any head size, memory linear in
n), 'tpu_flash' (JAX's Pallas TPU kernel, ``fixed_head.nn.tpu_attention``). 'auto' picks
per call from the backend, dtype, head size, sequence length, dropout and mask
(``choose_implementation``) and logs the choice and its reason once.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator

from absl import logging

import jax
import jax.numpy as jnp
from flax import nnx

from fixed_head.nn import axes

Array = jax.Array
Initializer = Callable[..., Array]

default_kernel_init = nnx.initializers.xavier_uniform()


# ---------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------


def causal_mask(length: int) -> Array:
  """[1, 1, n, n] bool: query i may attend to keys j <= i."""
  idx = jnp.arange(length)
  return (idx[:, None] >= idx[None, :])[None, None]


def padding_mask(valid_q: Array, valid_kv: Array | None = None) -> Array:
  """valid_q: [b, q_len], valid_kv: [b, kv_len] (default valid_q) -> [b, 1, q_len, kv_len].

  Only valid queries attend, and only to valid keys; padded query rows come out as zeros.
  """
  valid_kv = valid_q if valid_kv is None else valid_kv
  return (valid_q.astype(bool)[:, None, :, None] & valid_kv.astype(bool)[:, None, None, :])


def segment_mask(segment_ids_q: Array, segment_ids_kv: Array | None = None) -> Array:
  """segment ids [b, q_len] (and [b, kv_len]) -> [b, 1, q_len, kv_len] bool.

  Tokens attend only within their own segment (packed documents never see each other).
  By convention segment id 0 marks padding; combine with ``padding_mask(segment_ids > 0)``
  to also mask it.
  """
  segment_ids_kv = segment_ids_q if segment_ids_kv is None else segment_ids_kv
  return segment_ids_q[:, None, :, None] == segment_ids_kv[:, None, None, :]


def packed_mask(segment_ids: Array) -> Array:
  """segment ids [b, n] (0 = padding) -> [b, 1, n, n]: attend within one's own document,
  never to or from padding."""
  return segment_mask(segment_ids) & padding_mask(segment_ids > 0)


def combine_masks(*masks: Array | None) -> Array | None:
  """Logical AND of the given masks (``None`` entries are ignored; all ``None`` -> None)."""
  present = [m for m in masks if m is not None]
  if not present:
    return None
  return functools.reduce(jnp.logical_and, present)


@dataclasses.dataclass(frozen=True)
class SegmentMask:
  """A mask given by its structure: causal order and/or segment ids.

  Query i may attend key j iff (not ``causal`` or j <= i) and, with segment ids, the two ids
  are equal and the query's is > 0 (0 = padding: never attends, never attended). That is
  ``causal_mask`` & ``packed_mask`` (and ``padding_mask`` with ids = the 0/1 input mask).
  ``segment_ids_kv`` defaults to ``segment_ids_q``. A pytree (ids are leaves, ``causal``
  static), so it crosses jit and nnx.scan like an array.
  """

  segment_ids_q: Array | None = None  # int [b, q_len]
  segment_ids_kv: Array | None = None  # int [b, kv_len]
  causal: bool = False

  @property
  def kv_ids(self) -> Array | None:
    return self.segment_ids_q if self.segment_ids_kv is None else self.segment_ids_kv

  def dense(self, q_len: int, kv_len: int) -> Array | None:
    """The same mask as a bool array [b or 1, 1, q_len, kv_len] (None: nothing masked)."""
    causal = None
    if self.causal:
      causal = (jnp.arange(q_len)[:, None] >= jnp.arange(kv_len)[None, :])[None, None]
    segments = None
    if self.segment_ids_q is not None:
      segments = (segment_mask(self.segment_ids_q, self.kv_ids)
                  & (self.segment_ids_q > 0)[:, None, :, None])
    return combine_masks(causal, segments)


jax.tree_util.register_dataclass(SegmentMask, data_fields=['segment_ids_q', 'segment_ids_kv'],
                                 meta_fields=['causal'])


# ---------------------------------------------------------------------------------------
# The core product: softmax(Q K^T / sqrt(d_p)) V, behind one function
# ---------------------------------------------------------------------------------------


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


def _as_4d_mask(mask: Array, shape: tuple[int, int, int, int]) -> Array:
  """A mask broadcastable to shape = (b, h, q_len, kv_len), with leading 1 axes added."""
  mask = jnp.asarray(mask)
  ok = mask.ndim <= 4 and all(m in (1, s) for m, s in zip(mask.shape[::-1], shape[::-1]))
  if not ok:
    raise ValueError(f'mask of shape {mask.shape} does not broadcast to [b, h, q_len, kv_len] '
                     f'= {list(shape)}.')
  return mask.reshape((1,) * (4 - mask.ndim) + mask.shape)


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
_logged: set[tuple[str, str]] = set()
# The platform 'auto' chooses for: the default backend, or the target of a compile for other
# devices (``compiling_for``); and the lists ``recorded_choices`` fills while tracing.
_target_platform: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    'attention_target_platform', default=None)
_recorders: list[list[dict]] = []


@contextlib.contextmanager
def compiling_for(platform: str) -> Iterator[None]:
  """'auto' chooses for ``platform`` ('tpu', 'gpu', 'cpu') while models are traced inside,
  whatever this process's default backend is: for compiling ahead of time for other devices
  (``compile.py`` compiles for TPU topologies on a CPU)."""
  token = _target_platform.set(platform)
  try:
    yield
  finally:
    _target_platform.reset(token)


@contextlib.contextmanager
def recorded_choices() -> Iterator[list[dict]]:
  """Yields a list that receives, for every attention call traced inside, a dict
  {'implementation', 'reason', 'head_size', 'dtype'}."""
  calls: list[dict] = []
  _recorders.append(calls)
  try:
    yield calls
  finally:
    _recorders.remove(calls)


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
  backend = backend or _target_platform.get() or jax.default_backend()
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


def _resolve(implementation: str, query: Array, key: Array, mask, dropout_rate: float) -> str:
  if implementation == AUTO:
    implementation, why = choose_implementation(
        query.shape[-1], query.dtype, dropout=dropout_rate > 0.0,
        dense_mask=mask is not None and not isinstance(mask, SegmentMask),
        seq_len=max(query.shape[1], key.shape[1]))
    if (implementation, why) not in _logged:  # once per choice, not once per layer and trace
      _logged.add((implementation, why))
      platform = _target_platform.get() or jax.default_backend()
      log = logging.warning if platform == 'gpu' and implementation == 'xla' else logging.info
      log("attention_impl='auto': %s (%s)", implementation, why)
  else:
    why = 'chosen by the config'
  for calls in _recorders:
    calls.append({'implementation': implementation, 'reason': why,
                  'head_size': query.shape[-1], 'dtype': jnp.dtype(query.dtype).name})
  return implementation


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
  """softmax(Q K^T / sqrt(d_p)) V for all heads at once.

  Args:
    query: [b, q_len, h, d_p].
    key, value: [b, kv_len, h, d_p].
    mask: bool, broadcastable to [b, h, q_len, kv_len] (NumPy rules: [q_len, kv_len] and
      [h, q_len, kv_len] work too), True = may attend; or a ``SegmentMask``.
    dropout_rate: dropout on the attention weights; needs ``dropout_rng`` when > 0.
    implementation: a key of ``ATTENTION_IMPLEMENTATIONS``, or 'auto'.

  Returns:
    [b, q_len, h, d_p]. Query rows whose mask allows no key are exactly zero.
  """
  if implementation != AUTO and implementation not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f'attention implementation {implementation!r} is not one of '
                     f'{[AUTO, *sorted(ATTENTION_IMPLEMENTATIONS)]}.')
  if dropout_rate > 0.0 and dropout_rng is None:
    raise ValueError('dropout_rate > 0 needs a dropout_rng (or run deterministically).')
  implementation = _resolve(implementation, query, key, mask, dropout_rate)
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
    mask = dense = _as_4d_mask(mask, (b, h, q_len, kv_len))
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


# ---------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------


class MultiHeadAttention(nnx.Module):
  """Multi-head attention with h heads of free size d_p.

  Parameters (all with logical axis names for sharding, see ``fixed_head.nn.axes``):
    query / key / value.kernel: [d, h, d_p]  ('embed', 'heads', 'head_dim'); bias [h, d_p]
    out.kernel: [h, d_p, d_out]              ('heads', 'head_dim', 'embed'); bias [d_out]

  The layout (and the names ``query``, ``key``, ``value``, ``out``) is the same as
  ``flax.nnx.MultiHeadAttention`` with ``qkv_features = h * d_p``, so weights copy across.
  """

  def __init__(
      self,
      *,
      in_features: int,
      num_heads: int,
      head_size: int | None = None,
      out_features: int | None = None,
      dropout_rate: float = 0.0,
      use_bias: bool = True,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      kernel_init: Initializer = default_kernel_init,
      out_kernel_init: Initializer | None = None,
      bias_init: Initializer = nnx.initializers.zeros_init(),
      precision: jax.lax.PrecisionLike = None,
      implementation: str = AUTO,
      rngs: nnx.Rngs,
  ):
    """Args: in_features d, num_heads h, head_size d_p (None = d // h), out_features
    (default d); dtype is the compute dtype, param_dtype the storage dtype."""
    if num_heads <= 0 or in_features <= 0:
      raise ValueError(f'num_heads={num_heads} and in_features={in_features} must be positive.')
    if head_size is None:
      if in_features % num_heads:
        raise ValueError(
            f'num_heads={num_heads} does not divide in_features={in_features}, which the '
            f'baseline head size d/h (head_size=None) requires. Pass head_size=... to fix '
            f'd_p independently of d and h, or choose num_heads dividing {in_features}.')
      head_size = in_features // num_heads
    if head_size <= 0:
      raise ValueError(f'head_size={head_size} must be a positive integer (or None for d / h).')
    if implementation != AUTO and implementation not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f'implementation={implementation!r} is not one of '
                       f'{[AUTO, *sorted(ATTENTION_IMPLEMENTATIONS)]}.')
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f'dropout_rate={dropout_rate} must lie in [0, 1).')
    out_features = in_features if out_features is None else out_features
    self.in_features = in_features
    self.num_heads = num_heads
    self.head_size = head_size
    self.out_features = out_features
    self.dropout_rate = dropout_rate
    self.precision = precision
    self.implementation = implementation

    logical = axes.with_logical_axes
    projection = functools.partial(
        nnx.LinearGeneral,
        in_features=in_features,
        out_features=(num_heads, head_size),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=logical(kernel_init, ('embed', 'heads', 'head_dim')),
        bias_init=logical(bias_init, ('heads', 'head_dim')),
        rngs=rngs,
    )
    self.query = projection()
    self.key = projection()
    self.value = projection()
    self.out = nnx.LinearGeneral(
        in_features=(num_heads, head_size),
        out_features=out_features,
        axis=(-2, -1),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=logical(out_kernel_init or kernel_init, ('heads', 'head_dim', 'embed')),
        bias_init=logical(bias_init, ('embed',)),
        rngs=rngs,
    )

  def __call__(
      self,
      inputs_q: Array,
      inputs_kv: Array | None = None,
      *,
      mask: Array | SegmentMask | None = None,
      deterministic: bool = True,
      rngs: nnx.Rngs | None = None,
  ) -> Array:
    """inputs_q: [b, q_len, d]; inputs_kv: [b, kv_len, d] (default: inputs_q, self-attention).

    mask: bool broadcastable to [b, h, q_len, kv_len] (e.g. [q_len, kv_len]), or a
    ``SegmentMask``. With
    ``deterministic=False`` and a positive dropout rate, ``rngs`` must provide a 'dropout'
    stream. Returns [b, q_len, d_out].
    """
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    query = self.query(inputs_q)  # [b, q_len, h, d_p]
    key = self.key(inputs_kv)  # [b, kv_len, h, d_p]
    value = self.value(inputs_kv)
    dropout_rate, dropout_rng = 0.0, None
    if not deterministic and self.dropout_rate > 0.0:
      if rngs is None:
        raise ValueError('MultiHeadAttention: deterministic=False with dropout needs rngs '
                         "with a 'dropout' stream, e.g. rngs=nnx.Rngs(dropout=key).")
      dropout_rate, dropout_rng = self.dropout_rate, rngs.dropout()
    context = dot_product_attention(
        query, key, value,
        mask=mask,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
        precision=self.precision,
        implementation=self.implementation,
    )
    return self.out(context)

