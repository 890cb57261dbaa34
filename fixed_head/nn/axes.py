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

Activations name their axes too, where the model pins them (``constrain``): 'batch' (rows)
and 'heads'. They are placed on the mesh axes of ``ACTIVATION_MESH_AXES`` of the abstract
mesh in context (``jax.sharding.use_abstract_mesh``, which the trainer and evaluators set
while they trace), so with parameters sharded over 'fsdp' every device still computes its
own rows; without a mesh in context (a model used on its own) nothing is pinned.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
from flax import nnx
from jax.sharding import PartitionSpec as P

LOGICAL_AXES = ('vocab', 'embed', 'heads', 'head_dim', 'mlp', 'pos', 'norm', 'layers')
# The mesh axes of the activations' logical axes, for the trainer's mesh
# ('data', 'fsdp', 'tensor': fixed_head.train.sharding); an axis the mesh lacks is skipped.
ACTIVATION_MESH_AXES = {'batch': ('data', 'fsdp'), 'heads': ('tensor',)}


def with_logical_axes(init: Callable, names: Sequence[str | None]) -> Callable:
  """Wraps an initialiser so its parameter carries ``names`` as its logical axes.

  Sharding is not applied at creation (``eager_sharding=False``): placement is decided by
  the trainer through ``param_shardings``.
  """
  unknown = [n for n in names if n is not None and n not in LOGICAL_AXES]
  if unknown:
    raise ValueError(f'unknown logical axis names {unknown}; known: {LOGICAL_AXES}.')
  return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def activation_spec(names: Sequence[str | None], shape: Sequence[int],
                    mesh: jax.sharding.AbstractMesh) -> P:
  """PartitionSpec of an activation whose axes are ``names`` (None: not split) on ``mesh``;
  a dimension its mesh axes do not divide stays whole on every device."""
  spec = []
  for name, dim in zip(names, shape):
    axes = tuple(a for a in ACTIVATION_MESH_AXES.get(name, ()) if a in mesh.shape)
    if not axes or dim % math.prod(mesh.shape[a] for a in axes):
      spec.append(None)
    else:
      spec.append(axes if len(axes) > 1 else axes[0])
  return P(*spec)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """x, kept split over the abstract mesh in context as its axes ``names`` say; x itself
  when there is no mesh (or one device). Without it, XLA may follow a parameter's 'fsdp'
  split into the activations and compute every row on every device."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, activation_spec(names, x.shape, mesh))


def traced_on(mesh: jax.sharding.Mesh, fn: Callable) -> Callable:
  """``fn``, traced under ``mesh``'s abstract mesh (``jax.sharding.use_abstract_mesh``): the
  models pin their activations to it (``constrain``) and a kernel in shard_map (TPU
  attention) is laid out over it. Wrap the function that ``jax.jit`` gets."""

  @functools.wraps(fn)
  def traced(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)

  return traced
