"""Attention masks: boolean arrays, or a ``SegmentMask`` that fused kernels read by structure.

A mask is a bool array broadcastable to [batch, h, q_len, kv_len] by NumPy's rules (so
[q_len, kv_len] and [h, q_len, kv_len] work too); True means "may attend". Build them with
``causal_mask``, ``padding_mask`` and ``segment_mask`` and join them with ``combine_masks``;
or describe them with a ``SegmentMask`` (causal order and segment ids), which fused kernels
read without building the array, as the models do. A query row with no allowed key outputs
zeros (never NaN).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

Array = jax.Array


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


def as_4d(mask: Array, shape: tuple[int, int, int, int]) -> Array:
  """A mask broadcastable to shape = (b, h, q_len, kv_len), with leading 1 axes added."""
  mask = jnp.asarray(mask)
  ok = mask.ndim <= 4 and all(m in (1, s) for m, s in zip(mask.shape[::-1], shape[::-1]))
  if not ok:
    raise ValueError(f'mask of shape {mask.shape} does not broadcast to [b, h, q_len, kv_len] '
                     f'= {list(shape)}.')
  return mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
