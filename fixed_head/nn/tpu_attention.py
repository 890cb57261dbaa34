"""Fused attention on TPU: JAX's own Pallas TPU FlashAttention kernel, for the mesh.

``jax.experimental.pallas.ops.tpu.flash_attention`` (Mosaic) computes softmax(Q K^T / sqrt(d_p))
V block by block, with causal order and segment ids, forward and backward, never holding the
[b, h, n, n] scores: the memory that the paper's large heads at n = 512 need for the
backward pass of every layer. A Mosaic kernel is not partitioned by XLA, so it runs inside
``jax.shard_map`` over the abstract mesh in context (``jax.sharding.use_abstract_mesh``,
which the trainer, the evaluators and compile.py set while tracing): the batch split over
('data', 'fsdp'), heads over 'tensor', each device attending its own rows.

Semantics are those of ``attention_op.dot_product_attention`` with a ``SegmentMask``: query i
may attend key j iff (not causal or j <= i) and their segment ids are equal and > 0; a query
of id 0 (padding) outputs zeros. Applies where the sequence length is a multiple of 128 (the
kernel's smallest tile, kept below the length) and the head size a multiple of 128 (its lane
width: d_p = 128, 256, 512). No attention dropout, no dense masks.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash
from jax.sharding import PartitionSpec as P

from fixed_head.nn import axes

Array = jax.Array

LANES = 128  # the TPU vector width: the head size must be a multiple, the tiles too
BLOCK = 128


def applies(head_size: int, seq_len: int) -> str | None:
  """None if the kernel takes these shapes, else why not."""
  if head_size % LANES:
    return f'd_p = {head_size} is not a multiple of {LANES}'
  if seq_len % BLOCK:
    return f'n = {seq_len} is not a multiple of {BLOCK}'
  return None


def _block_sizes(q_len: int, kv_len: int) -> tpu_flash.BlockSizes:
  bq, bk = min(BLOCK, q_len), min(BLOCK, kv_len)
  return tpu_flash.BlockSizes(
      block_q=bq, block_k_major=bk, block_k=bk, block_b=1,
      block_q_major_dkv=bq, block_k_major_dkv=bk, block_k_dkv=bk, block_q_dkv=bq,
      block_k_major_dq=bk, block_k_dq=bk, block_q_dq=bq)


def _local(query, key, value, *ids, causal: bool):
  """One device's rows: [b, n, h, d_p] in and out; ``ids``: (query ids, key ids), int [b, n]
  each, or nothing."""
  ids_q, ids_kv = ids or (None, None)
  scale = 1.0 / math.sqrt(query.shape[-1])
  q, k, v = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))  # [b, h, n, d_p]
  segments = None if ids_q is None else tpu_flash.SegmentIds(q=ids_q, kv=ids_kv)
  out = tpu_flash.flash_attention(q, k, v, segment_ids=segments, causal=causal, sm_scale=scale,
                                  block_sizes=_block_sizes(q.shape[2], k.shape[2]))
  out = jnp.swapaxes(out, 1, 2)
  if ids_q is not None:  # padding queries (id 0) attend only padding: zero, as everywhere
    out = jnp.where((ids_q > 0)[:, :, None, None], out, jnp.zeros((), out.dtype))
  return out


def flash_attention(query: Array, key: Array, value: Array, *, causal: bool = False,
                    segment_ids_q: Array | None = None, segment_ids_kv: Array | None = None
                    ) -> Array:
  """query [b, q_len, h, d_p], key / value [b, kv_len, h, d_p], ids int [b, len] -> like
  query. Inside ``shard_map`` over the mesh in context, if there is one."""
  ids = ()
  if segment_ids_q is not None:
    kv = segment_ids_q if segment_ids_kv is None else segment_ids_kv
    ids = (segment_ids_q.astype(jnp.int32), kv.astype(jnp.int32))
  local = functools.partial(_local, causal=causal)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return local(query, key, value, *ids)
  # Rows over the batch axes, heads over 'tensor'; what does not divide stays whole.
  x_spec = axes.activation_spec(('batch', None, 'heads', None), query.shape, mesh)
  ids_spec = P(x_spec[0], None)
  return jax.shard_map(local, mesh=mesh, in_specs=(x_spec,) * 3 + (ids_spec,) * len(ids),
                       out_specs=x_spec, check_vma=False)(query, key, value, *ids)
