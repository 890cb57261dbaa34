"""The device mesh, and the rules mapping parameters' logical axis names onto it.

Modules name every parameter axis with a logical name (``fixed_head.nn.axes``);
``LOGICAL_RULES`` maps logical names to mesh axes, so the model code never mentions a mesh.
Activations use 'batch' for their leading axis.

The mesh has three axes: 'data' (pure data parallel: parameters replicated), 'fsdp'
(data parallel with parameters sharded over their 'embed' axis) and 'tensor' (heads,
feed-forward width and vocabulary split across devices).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from fixed_head.config import section_from_mapping
from fixed_head.errors import UsageError
from fixed_head.nn.axes import ACTIVATION_MESH_AXES
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')

LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ('batch', ACTIVATION_MESH_AXES['batch']),  # what the models pin activations to
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('mlp', 'tensor'),
    ('head_dim', None),
    ('pos', None),
    ('norm', None),
    ('layers', None),  # scanned blocks: every device holds all layers of its shard
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """``config.mesh``, typed and checked once: the sizes of the mesh axes 'data', 'fsdp' and
  'tensor', each positive or -1 (all remaining devices; one axis at most)."""
  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def __post_init__(self):
    for axis in MESH_AXES:
      size = getattr(self, axis)
      if isinstance(size, bool) or not isinstance(size, int) or size == 0 or size < -1:
        raise UsageError(f'config.mesh.{axis}={size!r}: mesh sizes must be positive or -1.')
    fill = [a for a in MESH_AXES if getattr(self, a) == -1]
    if len(fill) > 1:
      raise UsageError(f'config.mesh: only one axis may be -1 (fill), got {fill}.')

  @classmethod
  def of(cls, mesh: Mapping[str, int] | MeshConfig) -> MeshConfig:
    """``mesh`` typed: a mapping's missing axes take their defaults; an unknown one is
    refused, naming it."""
    return section_from_mapping(cls, mesh, 'config.mesh', UsageError)

  def to_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)


def resolve_mesh_shape(mesh_config: Mapping[str, int] | MeshConfig, num_devices: int
                       ) -> tuple[int, ...]:
  """(data, fsdp, tensor) sizes on ``num_devices``, the -1 axis filled."""
  mesh = MeshConfig.of(mesh_config)
  sizes = [getattr(mesh, a) for a in MESH_AXES]
  fill = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  known = math.prod(s for s in sizes if s != -1)
  if fill:
    if num_devices % known:
      raise UsageError(f'config.mesh: {num_devices} devices cannot be split with fixed axes '
                       f'of total size {known}; mesh.{fill[0]}=-1 needs a divisor.')
    sizes[MESH_AXES.index(fill[0])] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise UsageError(f'config.mesh: data x fsdp x tensor = {" x ".join(map(str, sizes))} = '
                     f'{math.prod(sizes)}, but {num_devices} devices are present; set one '
                     'axis to -1 to fill the rest.')
  return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, int] | MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over ``devices`` (default: all), checked with
  ``check_batch_feed``. TPU devices are laid out along the chips' interconnect
  (``mesh_utils.create_device_mesh``); others in list order."""
  devices = jax.devices() if devices is None else list(devices)
  shape = resolve_mesh_shape(mesh_config, len(devices))
  if devices[0].platform == 'tpu':  # neighbours on the mesh are neighbours on the ICI
    device_array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  else:
    device_array = np.asarray(devices).reshape(shape)
  check_batch_feed(np.vectorize(lambda d: d.process_index, otypes=[int])(device_array))
  return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def check_batch_feed(processes: np.ndarray) -> None:
  """Raises ValueError unless every slice of the batch lives on the devices of one process.

  ``processes``: the process index of each mesh device, shape (data, fsdp, tensor). Each
  process reads its own rows and places them on its devices
  (``jax.make_array_from_process_local_data``); a batch slice is copied along the axes the
  batch is not split over, and if those copies sat in two processes, each would fill the
  slice with other rows and training would be silently wrong.
  """
  batch = [MESH_AXES.index(a) for a in dict(LOGICAL_RULES)['batch']]
  num_slices = math.prod(processes.shape[i] for i in batch)
  slices = np.moveaxis(processes, batch, range(len(batch))).reshape(num_slices, -1)
  if any(len(set(owners)) > 1 for owners in slices):
    shape = ', '.join(f'{a}={n}' for a, n in zip(MESH_AXES, processes.shape))
    count = len(np.unique(processes))
    raise UsageError(
        f'config.mesh ({shape}) over {count} processes: the batch is split data x fsdp = '
        f'{num_slices} way(s), so one slice of it would sit on devices of several '
        'processes, each reading other rows, and training would be silently wrong. Make '
        f'data x fsdp a multiple of {count} (e.g. mesh.data=-1 with mesh.tensor at most '
        "one process's device count).")


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> P:
  """PartitionSpec for an array with logical axis ``names``; a dimension not divisible by
  its mesh axes stays replicated (so odd sizes never fail to place)."""
  rules = dict(LOGICAL_RULES)
  spec = []
  for name, dim in zip(names, shape):
    axes = rules.get(name) if name is not None else None
    if axes is not None:
      size = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
      if dim % size:
        axes = None
    spec.append(axes)
  return P(*spec)


def param_shardings(abstract_state: nnx.State, mesh: Mesh) -> Any:
  """NamedShardings for an ``nnx.State`` of parameters, as a pure dict."""

  def one(variable):
    names = variable.get_metadata().get('out_sharding') or (None,) * variable.ndim
    return NamedSharding(mesh, logical_to_spec(names, variable.shape, mesh))

  shardings = jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(shardings)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis over 'data' and 'fsdp'; the rest replicated."""
  return NamedSharding(mesh, P(dict(LOGICAL_RULES)['batch'], *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
