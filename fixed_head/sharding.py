"""Logical axis names on parameters.

Modules name every parameter axis with a logical name; a rules table (in the training
code) maps logical names to mesh axes, so the model code never mentions a mesh.

Logical names used by the models:
  'vocab'     token / type vocabulary rows of an embedding table
  'embed'     the model width d
  'heads'     the attention heads h
  'head_dim'  the head size d_p
  'mlp'       the feed-forward width
  'pos'       learned positions (n)
  'norm'      LayerNorm scale and bias (size d)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flax import nnx

LOGICAL_AXES = ('vocab', 'embed', 'heads', 'head_dim', 'mlp', 'pos', 'norm')


def with_logical_axes(init: Callable, names: Sequence[str | None]) -> Callable:
  """Wraps an initialiser so its parameter carries ``names`` as its logical axes.

  Sharding is not applied at creation (``eager_sharding=False``): placement is decided by
  the trainer, which turns the names into ``PartitionSpec``s with
  ``nnx.logical_axis_rules(rules)`` + ``nnx.get_partition_spec``.
  """
  unknown = [n for n in names if n is not None and n not in LOGICAL_AXES]
  if unknown:
    raise ValueError(f'unknown logical axis names {unknown}; known: {LOGICAL_AXES}.')
  return nnx.with_partitioning(init, tuple(names), eager_sharding=False)
