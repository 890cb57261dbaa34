"""Logical axis names of parameters, set where each parameter is created.

The modules of ``fixed_head.nn`` name every parameter axis with one of ``LOGICAL_AXES``;
how those names map onto a device mesh is the trainer's business
(``fixed_head.train.sharding.LOGICAL_RULES``), so no model code mentions a mesh.

  'vocab'     token vocabulary rows of an embedding table
  'embed'     the model width d
  'heads'     the attention heads h
  'head_dim'  the head size d_p
  'mlp'       the feed-forward width
  'pos'       learned positions (n)
  'norm'      LayerNorm scale and bias (size d)
  'layers'    the stacked layer axis of scanned blocks
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flax import nnx

LOGICAL_AXES = ('vocab', 'embed', 'heads', 'head_dim', 'mlp', 'pos', 'norm', 'layers')


def with_logical_axes(init: Callable, names: Sequence[str | None]) -> Callable:
  """Wraps an initialiser so its parameter carries ``names`` as its logical axes.

  Sharding is not applied at creation (``eager_sharding=False``): placement is decided by
  the trainer through ``param_shardings``.
  """
  unknown = [n for n in names if n is not None and n not in LOGICAL_AXES]
  if unknown:
    raise ValueError(f'unknown logical axis names {unknown}; known: {LOGICAL_AXES}.')
  return nnx.with_partitioning(init, tuple(names), eager_sharding=False)
