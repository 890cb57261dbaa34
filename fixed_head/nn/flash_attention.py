"""Fused (FlashAttention-2 style) attention in Pallas, for large head sizes.

What it is for: the paper's fixed-head models use head sizes d_p = n (256 or 512). cuDNN's
fused attention and the FlashAttention kernels stop at d_p = 128 or 256, and above that
``jax.nn.dot_product_attention`` falls back to the plain XLA product, which materialises the
[b, h, q_len, kv_len] logits and weights. This kernel keeps memory linear in the sequence
length for any head size, so long sequences with wide heads fit.

Algorithm (Dao, 2023, "FlashAttention-2"), per (batch, head, block of block_q queries):

  * forward: loop over blocks of block_k keys with ``lax.fori_loop``; keep the running row max
    m, the running sum l of exp(s - m) and the unnormalised output acc, all float32, rescaling
    them by exp(m_old - m_new) whenever the max grows; at the end out = acc / l and the
    residual logsumexp lse = m + log(l), [b, h, q_len] float32. With ``causal=True`` the loop
    stops at the last key block that touches the diagonal.
  * backward (``jax.custom_vjp``): delta = rowsum(dO * O); one kernel over key blocks loops
    over query blocks and accumulates dK, dV; one over query blocks loops over key blocks and
    accumulates dQ. Both recompute P = exp(s - lse) block by block. No [q_len, kv_len] array
    exists in either pass: the largest kernel temporaries are [block_q, block_k] tiles.

Semantics are those of ``fixed_head.nn.attention_op.dot_product_attention(...,
implementation='xla')`` with the mask below: scaling 1 / sqrt(d_p); softmax statistics and
accumulation in float32 for any input dtype (float32, bfloat16, float16); output in the input
dtype. Query i may attend key j iff (not causal or j <= i) and, with segment ids, the two ids
are equal and the query's id is > 0 (id 0 is padding: it never attends and is never attended).
A query row with no allowed key outputs exactly 0 and gets zero gradients. ``causal`` counts
positions from the start of both sequences (query i sees keys 0..i), also when
q_len != kv_len.

Not supported: attention dropout; arbitrary dense masks (only causal + segment ids); a
precision argument (float32 inputs use full-precision dots, i.e. IEEE on the Triton backend).

Backends: the kernels use only ``pl.pallas_call`` with block specs, ref slicing with
``pl.ds``, ``lax.fori_loop`` and ``lax.dot_general`` on 2-D tiles, which Pallas' Triton
backend lowers; on CPU they run in interpret mode (``interpret=None`` picks it there). Block
sizes are powers of two >= 16 (Triton's dot needs that), default 128, clamped to the padded
sequence length; the head size is zero-padded inside the wrapper to a power of two >= 16
(256 and 512 are used as they are), and sequence lengths are padded to a multiple of the
block (padded keys are masked out, padded query rows are sliced off). The kernels have been
lowered to Triton IR but not yet compiled or run on a GPU: at d_p = 512 one bfloat16 [128, 512]
tile of K or V is 128 KiB, so 128-blocks may exceed an SM's shared memory (228 KiB on
H100/H200); pass block_k = 32 or 64 there if Triton reports "out of resources".

Tests (tests/test_flash_attention.py, interpret mode on CPU) compare outputs and q/k/v
gradients with the XLA reference for the masks above, ragged lengths and several block
sizes, at d_p = 256 and 512; check bfloat16 against the float32 reference; plant NaNs above
the diagonal to show the causal loops skip those blocks; check that XLA's planned temporary
memory grows linearly with n (the reference's quadratically); lower the kernels for CUDA to
check every primitive has a Triton rule; and check bad arguments raise ValueErrors naming
them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

Array = jax.Array

DEFAULT_BLOCK = 128
MIN_BLOCK = 16  # Triton's dot needs every tile dimension >= 16.
_SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# Finite stand-in for -inf in the running max: exp(MASK - m) underflows to 0 without the
# inf - inf = NaN that a true -inf would give for rows with nothing allowed yet.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True)
class _Config:
  """Static description of one call (hashable: it is a nondiff argument of the custom_vjp)."""
  scale: float
  causal: bool
  has_segments: bool
  block_q: int
  block_k: int
  q_len: int  # lengths before padding; the arrays the kernels see are padded
  kv_len: int
  interpret: bool


# ---------------------------------------------------------------------------------------
# Shared pieces of the kernels
# ---------------------------------------------------------------------------------------


def _dot(a: Array, b: Array, contract: tuple[int, int]) -> Array:
  """2-D product contracting a's axis contract[0] with b's axis contract[1], float32 out."""
  dims = (((contract[0],), (contract[1],)), ((), ()))
  return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _tile_mask(cfg: _Config, q_start, k_start, seg_q, seg_kv) -> Array | None:
  """[block_q, block_k] bool (or None = all allowed) for the tile at (q_start, k_start).

  seg_q: [block_q] and seg_kv: [block_k] segment ids, or None.
  """
  mask = None
  if cfg.causal:
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, (cfg.block_q, cfg.block_k), 0)
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, (cfg.block_q, cfg.block_k), 1)
    mask = q_pos >= k_pos
  if cfg.has_segments:
    # Padded positions carry id 0, so this also masks keys past kv_len.
    same = (seg_q[:, None] == seg_kv[None, :]) & (seg_q[:, None] > 0)
    mask = same if mask is None else mask & same
  elif cfg.kv_len % cfg.block_k:
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, (cfg.block_q, cfg.block_k), 1)
    real = k_pos < cfg.kv_len
    mask = real if mask is None else mask & real
  return mask


def _scores(cfg: _Config, q: Array, k: Array, q_start, k_start, seg_q, seg_kv):
  """Scaled logits s = q k^T / sqrt(d_p) (float32, masked entries -> _MASK_VALUE) and mask."""
  s = _dot(q, k, (1, 1)) * cfg.scale
  mask = _tile_mask(cfg, q_start, k_start, seg_q, seg_kv)
  if mask is not None:
    s = jnp.where(mask, s, _MASK_VALUE)
  return s, mask


def _kv_block(cfg: _Config, kv_block, k_ref, v_ref, skv_ref):
  """Key block ``kv_block`` of a kernel's whole-sequence refs: (its first position, k, v
  [block_k, D], its segment ids [block_k] or None)."""
  k_start = pl.multiple_of(kv_block * cfg.block_k, cfg.block_k)
  k_slice = pl.ds(k_start, cfg.block_k)
  seg_kv = None if skv_ref is None else skv_ref[k_slice]
  return k_start, k_ref[k_slice, :], v_ref[k_slice, :], seg_kv


def _recomputed_probabilities(cfg: _Config, q, k, q_start, k_start, seg_q, seg_kv, lse):
  """P = exp(S - lse) for one [block_q, block_k] tile in the backward pass, masked entries 0."""
  s, mask = _scores(cfg, q, k, q_start, k_start, seg_q, seg_kv)
  p = jnp.exp(s - lse[:, None])
  return p if mask is None else jnp.where(mask, p, 0.0)


def _causal_kv_blocks(cfg: _Config, q_block, num_kv_blocks: int):
  """Number of key blocks query block q_block needs: all of them, or up to the diagonal."""
  if not cfg.causal:
    return num_kv_blocks
  last_query = (q_block + 1) * cfg.block_q  # one past
  return jnp.minimum(lax.div(last_query + cfg.block_k - 1, cfg.block_k), num_kv_blocks)


def _compiler_params(block_q: int, block_k: int, head_dim: int):
  """Triton launch parameters (ignored in interpret mode; untuned, not yet run on a GPU).

  Wide heads get one pipeline stage: each extra stage buffers another [block, D] tile of
  K and V in shared memory, which at D >= 256 is what runs out first.
  """
  num_warps = 4 if block_q * block_k < 128 * 128 and head_dim <= 64 else 8
  num_stages = 2 if head_dim <= 128 else 1
  return pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def _unpack(refs, has_segments: bool, num_before: int):
  """Splits refs into the num_before leading refs, the (seg_q, seg_kv) pair and the rest."""
  head = refs[:num_before]
  if has_segments:
    return head, refs[num_before:num_before + 2], refs[num_before + 2:]
  return head, (None, None), refs[num_before:]


# ---------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------


def _forward_kernel(*refs, cfg: _Config):
  """Grid (b, h, q blocks). q/o: [block_q, D]; k/v: [kv_pad, D]; seg_q: [block_q],
  seg_kv: [kv_pad]; lse: [block_q]."""
  (q_ref, k_ref, v_ref), (sq_ref, skv_ref), (o_ref, lse_ref) = _unpack(
      refs, cfg.has_segments, 3)
  q_block = pl.program_id(2)
  q_start = q_block * cfg.block_q
  q = q_ref[...]
  seg_q = None if sq_ref is None else sq_ref[...]
  num_kv_blocks = k_ref.shape[0] // cfg.block_k

  def body(kv_block, carry):
    acc, m, l = carry
    k_start, k, v, seg_kv = _kv_block(cfg, kv_block, k_ref, v_ref, skv_ref)
    s, mask = _scores(cfg, q, k, q_start, k_start, seg_q, seg_kv)
    m_new = jnp.maximum(m, jnp.max(s, axis=1))
    correction = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[:, None])
    if mask is not None:
      p = jnp.where(mask, p, 0.0)  # a row with nothing allowed yet would otherwise get 1s
    l = correction * l + jnp.sum(p, axis=1)
    acc = correction[:, None] * acc + _dot(p.astype(v.dtype), v, (1, 0))
    return acc, m_new, l

  acc = jnp.zeros((cfg.block_q, q_ref.shape[1]), jnp.float32)
  m = jnp.full((cfg.block_q,), _MASK_VALUE, jnp.float32)
  l = jnp.zeros((cfg.block_q,), jnp.float32)
  acc, m, l = lax.fori_loop(
      0, _causal_kv_blocks(cfg, q_block, num_kv_blocks), body, (acc, m, l))
  has_key = l > 0.0
  inv_l = jnp.where(has_key, 1.0 / jnp.where(has_key, l, 1.0), 0.0)
  o_ref[...] = (acc * inv_l[:, None]).astype(o_ref.dtype)
  # Rows with no allowed key store +inf, so that exp(s - lse) recomputes P = 0 for them.
  lse_ref[...] = jnp.where(has_key, m + jnp.log(jnp.where(has_key, l, 1.0)), jnp.inf)


def _forward(q, k, v, seg_q, seg_kv, cfg: _Config):
  """Padded q: [b, q_pad, h, D], k/v: [b, kv_pad, h, D] -> (out like q, lse [b, h, q_pad])."""
  b, q_pad, h, d = q.shape
  kv_pad = k.shape[1]
  q_tile = pl.BlockSpec((None, cfg.block_q, None, d), lambda bi, hi, qi: (bi, qi, hi, 0))
  kv_all = pl.BlockSpec((None, kv_pad, None, d), lambda bi, hi, qi: (bi, 0, hi, 0))
  in_specs = [q_tile, kv_all, kv_all]
  args = [q, k, v]
  if cfg.has_segments:
    in_specs += [pl.BlockSpec((None, cfg.block_q), lambda bi, hi, qi: (bi, qi)),
                 pl.BlockSpec((None, kv_pad), lambda bi, hi, qi: (bi, 0))]
    args += [seg_q, seg_kv]
  out, lse = pl.pallas_call(
      functools.partial(_forward_kernel, cfg=cfg),
      grid=(b, h, q_pad // cfg.block_q),
      in_specs=in_specs,
      out_specs=[q_tile,
                 pl.BlockSpec((None, None, cfg.block_q), lambda bi, hi, qi: (bi, hi, qi))],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((b, h, q_pad), jnp.float32)],
      compiler_params=_compiler_params(cfg.block_q, cfg.block_k, d),
      interpret=cfg.interpret,
      name='flash_attention_forward',
  )(*args)
  return out, lse


# ---------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------


def _dkdv_kernel(*refs, cfg: _Config):
  """Grid (b, h, kv blocks). q/do: [q_pad, D]; lse/delta: [q_pad]; k/v/dk/dv: [block_k, D];
  seg_q: [q_pad], seg_kv: [block_k]."""
  (q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref), (sq_ref, skv_ref), (dk_ref, dv_ref) = (
      _unpack(refs, cfg.has_segments, 6))
  kv_block = pl.program_id(2)
  k_start = kv_block * cfg.block_k
  k = k_ref[...]
  v = v_ref[...]
  seg_kv = None if skv_ref is None else skv_ref[...]
  num_q_blocks = q_ref.shape[0] // cfg.block_q

  def body(q_block, carry):
    dk, dv = carry
    q_start = pl.multiple_of(q_block * cfg.block_q, cfg.block_q)
    q_slice = pl.ds(q_start, cfg.block_q)
    q = q_ref[q_slice, :]
    do = do_ref[q_slice, :]
    lse = lse_ref[q_slice]
    delta = delta_ref[q_slice]
    seg_q = None if sq_ref is None else sq_ref[q_slice]
    p = _recomputed_probabilities(cfg, q, k, q_start, k_start, seg_q, seg_kv, lse)
    dv = dv + _dot(p.astype(do.dtype), do, (0, 0))  # p^T dO
    dp = _dot(do, v, (1, 1))  # dO V^T
    ds = p * (dp - delta[:, None])
    dk = dk + _dot(ds.astype(q.dtype), q, (0, 0))  # dS^T Q
    return dk, dv

  # Causal: query blocks that end before this key block starts see none of it.
  first = lax.div(k_start, cfg.block_q) if cfg.causal else 0
  zeros = jnp.zeros(k_ref.shape, jnp.float32)
  dk, dv = lax.fori_loop(first, num_q_blocks, body, (zeros, zeros))
  dk_ref[...] = (dk * cfg.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, cfg: _Config):
  """Grid (b, h, q blocks). q/do/dq: [block_q, D]; lse/delta: [block_q]; k/v: [kv_pad, D];
  seg_q: [block_q], seg_kv: [kv_pad]."""
  (q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref), (sq_ref, skv_ref), (dq_ref,) = (
      _unpack(refs, cfg.has_segments, 6))
  q_block = pl.program_id(2)
  q_start = q_block * cfg.block_q
  q = q_ref[...]
  do = do_ref[...]
  lse = lse_ref[...]
  delta = delta_ref[...]
  seg_q = None if sq_ref is None else sq_ref[...]
  num_kv_blocks = k_ref.shape[0] // cfg.block_k

  def body(kv_block, dq):
    k_start, k, v, seg_kv = _kv_block(cfg, kv_block, k_ref, v_ref, skv_ref)
    p = _recomputed_probabilities(cfg, q, k, q_start, k_start, seg_q, seg_kv, lse)
    dp = _dot(do, v, (1, 1))
    ds = p * (dp - delta[:, None])
    return dq + _dot(ds.astype(k.dtype), k, (1, 0))  # dS K

  dq = jnp.zeros(q_ref.shape, jnp.float32)
  dq = lax.fori_loop(0, _causal_kv_blocks(cfg, q_block, num_kv_blocks), body, dq)
  dq_ref[...] = (dq * cfg.scale).astype(dq_ref.dtype)


def _backward_calls(q, k, v, seg_q, seg_kv, out, lse, do, cfg: _Config):
  """Padded arrays as in ``_forward`` plus do (like out) -> (dq, dk, dv)."""
  b, q_pad, h, d = q.shape
  kv_pad = k.shape[1]
  # delta[b, h, i] = sum_d dO * O: O(n d) elementwise work, left to XLA.
  delta = jnp.einsum('bqhd,bqhd->bhq', do.astype(jnp.float32), out.astype(jnp.float32))
  params = _compiler_params(cfg.block_q, cfg.block_k, d)

  # dK, dV: one program per key block, looping over all query blocks.
  q_all = pl.BlockSpec((None, q_pad, None, d), lambda bi, hi, ki: (bi, 0, hi, 0))
  kv_tile = pl.BlockSpec((None, cfg.block_k, None, d), lambda bi, hi, ki: (bi, ki, hi, 0))
  stat_all = pl.BlockSpec((None, None, q_pad), lambda bi, hi, ki: (bi, hi, 0))
  in_specs = [q_all, kv_tile, kv_tile, q_all, stat_all, stat_all]
  args = [q, k, v, do, lse, delta]
  if cfg.has_segments:
    in_specs += [pl.BlockSpec((None, q_pad), lambda bi, hi, ki: (bi, 0)),
                 pl.BlockSpec((None, cfg.block_k), lambda bi, hi, ki: (bi, ki))]
    args += [seg_q, seg_kv]
  dk, dv = pl.pallas_call(
      functools.partial(_dkdv_kernel, cfg=cfg),
      grid=(b, h, kv_pad // cfg.block_k),
      in_specs=in_specs,
      out_specs=[kv_tile, kv_tile],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype)],
      compiler_params=params,
      interpret=cfg.interpret,
      name='flash_attention_dkdv',
  )(*args)

  # dQ: one program per query block, looping over the key blocks it may see.
  q_tile = pl.BlockSpec((None, cfg.block_q, None, d), lambda bi, hi, qi: (bi, qi, hi, 0))
  kv_all = pl.BlockSpec((None, kv_pad, None, d), lambda bi, hi, qi: (bi, 0, hi, 0))
  stat_tile = pl.BlockSpec((None, None, cfg.block_q), lambda bi, hi, qi: (bi, hi, qi))
  in_specs = [q_tile, kv_all, kv_all, q_tile, stat_tile, stat_tile]
  args = [q, k, v, do, lse, delta]
  if cfg.has_segments:
    in_specs += [pl.BlockSpec((None, cfg.block_q), lambda bi, hi, qi: (bi, qi)),
                 pl.BlockSpec((None, kv_pad), lambda bi, hi, qi: (bi, 0))]
    args += [seg_q, seg_kv]
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, cfg=cfg),
      grid=(b, h, q_pad // cfg.block_q),
      in_specs=in_specs,
      out_specs=q_tile,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=params,
      interpret=cfg.interpret,
      name='flash_attention_dq',
  )(*args)
  return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, seg_q, seg_kv, cfg: _Config):
  """Padded arrays -> out (padded); differentiable in q, k, v."""
  return _forward(q, k, v, seg_q, seg_kv, cfg)[0]


def _flash_fwd(q, k, v, seg_q, seg_kv, cfg: _Config):
  out, lse = _forward(q, k, v, seg_q, seg_kv, cfg)
  return out, (q, k, v, seg_q, seg_kv, out, lse)


def _flash_bwd(cfg: _Config, residuals, do):
  q, k, v, seg_q, seg_kv, out, lse = residuals
  dq, dk, dv = _backward_calls(q, k, v, seg_q, seg_kv, out, lse, do, cfg)
  return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ---------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------


def _is_power_of_two(x: int) -> bool:
  return x > 0 and x & (x - 1) == 0


def _check_block(name: str, value) -> None:
  if value is None:
    return
  if isinstance(value, bool) or not isinstance(value, int):
    raise ValueError(f'{name} must be an int (or None for {DEFAULT_BLOCK}); got {value!r}.')
  if value < MIN_BLOCK or not _is_power_of_two(value):
    raise ValueError(f'{name}={value} must be a power of two >= {MIN_BLOCK} (Triton tiles).')


def _block_for(requested: int | None, length: int) -> int:
  """The block used for a sequence of this length: requested (default 128), but no larger
  than the length rounded up to a power of two >= MIN_BLOCK."""
  requested = DEFAULT_BLOCK if requested is None else requested
  return min(requested, max(MIN_BLOCK, pl.next_power_of_2(length)))


def _check_segment_ids(name: str, ids, expected: tuple[int, int], length_name: str):
  if not hasattr(ids, 'shape') or not hasattr(ids, 'dtype'):
    raise ValueError(f'{name} must be an integer array of shape [b, {length_name}]; '
                     f'got {type(ids).__name__}.')
  if tuple(ids.shape) != expected:
    raise ValueError(f'{name} must have shape [b, {length_name}] = {list(expected)}; '
                     f'got {list(ids.shape)}.')
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f'{name} must have an integer dtype; got {ids.dtype}.')


def flash_attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    causal: bool = False,
    segment_ids_q: Array | None = None,
    segment_ids_kv: Array | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    interpret: bool | None = None,
) -> Array:
  """softmax(Q K^T / sqrt(d_p)) V, fused, with memory linear in the sequence length.

  Args:
    query: [b, q_len, h, d_p]; float32, bfloat16 or float16.
    key, value: [b, kv_len, h, d_p], same dtype as query.
    causal: query i attends only keys j <= i.
    segment_ids_q: int [b, q_len]; tokens attend within their own segment; id 0 = padding
      (never attends, never attended).
    segment_ids_kv: int [b, kv_len]; defaults to segment_ids_q (then kv_len must equal q_len).
    block_q, block_k: tile sizes, powers of two >= 16; None = 128. Clamped to the sequence
      length rounded up to a power of two; lengths are padded to a multiple of the block.
    interpret: run the Pallas kernels in interpret mode; None = only on the CPU backend.

  Returns:
    [b, q_len, h, d_p] in query's dtype; rows with no allowed key are exactly 0.
  """
  for name, x in (('query', query), ('key', key), ('value', value)):
    if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):
      raise ValueError(f'{name} must be an array; got {type(x).__name__}.')
    if x.ndim != 4:
      raise ValueError(f'{name} must have rank 4 ([b, len, h, d_p]); got shape '
                       f'{list(x.shape)}.')
    if jnp.dtype(x.dtype) not in _SUPPORTED_DTYPES:
      raise ValueError(f'{name} has dtype {x.dtype}; supported: float32, bfloat16, float16.')
  b, q_len, h, head_dim = query.shape
  if key.shape != value.shape:
    raise ValueError(f'key and value must have the same shape; got key {list(key.shape)} '
                     f'and value {list(value.shape)}.')
  if (key.shape[0], key.shape[2], key.shape[3]) != (b, h, head_dim):
    raise ValueError(f'key/value [b, kv_len, h, d_p] = {list(key.shape)} must match query '
                     f'{list(query.shape)} in b, h and d_p.')
  if not query.dtype == key.dtype == value.dtype:
    raise ValueError(f'query, key and value must share a dtype; got {query.dtype}, '
                     f'{key.dtype}, {value.dtype}.')
  kv_len = key.shape[1]
  if min(b, q_len, kv_len, h, head_dim) < 1:
    raise ValueError(f'query {list(query.shape)} and key {list(key.shape)} must have no '
                     f'empty axis.')
  if not isinstance(causal, bool):
    raise ValueError(f'causal must be a bool; got {causal!r}.')
  if interpret is not None and not isinstance(interpret, bool):
    raise ValueError(f'interpret must be a bool or None; got {interpret!r}.')
  _check_block('block_q', block_q)
  _check_block('block_k', block_k)
  if segment_ids_q is None and segment_ids_kv is not None:
    raise ValueError('segment_ids_kv was given without segment_ids_q; pass both.')
  has_segments = segment_ids_q is not None
  if has_segments:
    _check_segment_ids('segment_ids_q', segment_ids_q, (b, q_len), 'q_len')
    if segment_ids_kv is None:
      if kv_len != q_len:
        raise ValueError(f'segment_ids_kv is needed when kv_len={kv_len} != q_len={q_len}.')
      segment_ids_kv = segment_ids_q
    _check_segment_ids('segment_ids_kv', segment_ids_kv, (b, kv_len), 'kv_len')

  cfg = _Config(
      scale=1.0 / math.sqrt(head_dim),
      causal=causal,
      has_segments=has_segments,
      block_q=_block_for(block_q, q_len),
      block_k=_block_for(block_k, kv_len),
      q_len=q_len,
      kv_len=kv_len,
      interpret=jax.default_backend() == 'cpu' if interpret is None else interpret,
  )
  d_pad = max(MIN_BLOCK, pl.next_power_of_2(head_dim))
  q_pad = pl.cdiv(q_len, cfg.block_q) * cfg.block_q
  kv_pad = pl.cdiv(kv_len, cfg.block_k) * cfg.block_k

  def pad(x, length):  # zero rows past the length, zero columns past d_p
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, d_pad - head_dim)))

  seg_q = seg_kv = None
  if has_segments:  # padding gets id 0: masked out both ways
    seg_q = jnp.pad(segment_ids_q.astype(jnp.int32), ((0, 0), (0, q_pad - q_len)))
    seg_kv = jnp.pad(segment_ids_kv.astype(jnp.int32), ((0, 0), (0, kv_pad - kv_len)))
  out = _flash(pad(query, q_pad), pad(key, kv_pad), pad(value, kv_pad), seg_q, seg_kv, cfg)
  return out[:, :q_len, :, :head_dim]
