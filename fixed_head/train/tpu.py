"""TPU topologies without a TPU: compile-only devices from libtpu, and a quiet CPU start.

With ``libtpu`` installed (``pip install -e ".[tpu]"``), JAX compiles for a TPU slice on any
machine: ``topology_devices('v5e:2x2')`` gives the slice's devices (compile-only: they run
nothing), laid out as on the real interconnect, and ``jax.jit(...).lower(...).compile()``
for them is the compile a TPU VM would do, Mosaic kernels included. ``compile.py`` uses it.

libtpu also changes an ordinary CPU run: JAX then tries to open a TPU at start-up;
``fixed_head.platforms.skip_absent_tpu`` keeps it on the CPU where no TPU chip is attached.
"""

from __future__ import annotations

import importlib.metadata
import os
import re

import jax

from fixed_head.errors import UsageError
from fixed_head.platforms import libtpu_installed, platforms_chosen

# Per-chip HBM in GiB, by jax's device_kind, from Google Cloud's TPU pages (v4: 32 GiB,
# v5e: 16, v5p: 95, v6e: 32). v4 and v5p run as one device a chip (megacore).
HBM_GIB = {'TPU v4': 32.0, 'TPU v5 lite': 16.0, 'TPU v5': 95.0, 'TPU v6 lite': 32.0}
# Generation, as topology names spell it -> jax's device_kind.
DEVICE_KINDS = {'v4': 'TPU v4', 'v5e': 'TPU v5 lite', 'v5p': 'TPU v5', 'v6e': 'TPU v6 lite'}
# Topology names: generation, then the chip grid ('v5e:4x4', 'v4:2x2x1').
_NAME = re.compile(r'^(v4|v5e|v5p|v6e):\d+x\d+(x\d+)?$')
EXAMPLES = ('v4:2x2x1', 'v4:2x2x2', 'v5e:2x2', 'v5e:4x4', 'v5e:8x8', 'v5p:2x2x1', 'v5p:2x2x2',
            'v6e:2x2', 'v6e:4x4')


def libtpu_version() -> str | None:
  try:
    return importlib.metadata.version('libtpu')
  except importlib.metadata.PackageNotFoundError:
    return None


def _compile_only_environment() -> None:
  """libtpu's start-up for compile-only use: no TPU to open, no metadata server to ask, one
  host, and several processes may load it at once (it otherwise holds /tmp/libtpu_lockfile)."""
  for key, value in (('ALLOW_MULTIPLE_LIBTPU_LOAD', '1'), ('TPU_SKIP_MDS_QUERY', '1'),
                     ('TPU_WORKER_HOSTNAMES', 'localhost'), ('TPU_WORKER_ID', '0'),
                     ('TPU_HOST_BOUNDS', '1,1,1')):
    os.environ.setdefault(key, value)
  if not platforms_chosen():
    jax.config.update('jax_platforms', 'cpu')  # the host runs nothing but the compiler
  # JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR) cannot load back what is
  # compiled for a topology (no TPU client to load it on): every compile would read an entry,
  # warn and compile anyway. Off, unless this process already compiled with it.
  jax.config.update('jax_enable_compilation_cache', False)


def topology_devices(name: str) -> list[jax.Device]:
  """The compile-only devices of the TPU slice ``name`` ('v5e:2x2', 'v4:2x2x1', ...: the
  generation and the chip grid, as ``jax.experimental.topologies`` spells it); one device a
  chip (v4 as megacore). UsageError, in one line, for a missing libtpu or a bad name."""
  if not libtpu_installed():
    raise UsageError('--topology needs libtpu, which is not installed: pip install -e ".[tpu]" '
                     '(it compiles for TPUs on this machine; no TPU is needed).')
  if not _NAME.match(name):
    raise UsageError(f'--topology={name!r}: not a TPU topology name; give the generation and '
                     f'the chip grid, e.g. {", ".join(EXAMPLES)}.')
  _compile_only_environment()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  extra = {'chip_config_name': 'megacore'} if name.startswith('v4:') else {}
  try:
    return list(topologies.get_topology_desc(topology_name=name, platform='tpu',
                                             **extra).devices)
  except Exception as e:  # pylint: disable=broad-except  (libtpu's own error types)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UsageError(f'--topology={name!r}: libtpu does not know this slice ({first}); '
                     f'examples that work: {", ".join(EXAMPLES)}.') from None


def hbm_bytes(device: jax.Device) -> int | None:
  """HBM of one device of ``device``'s kind (None for a kind not in HBM_GIB)."""
  gib = HBM_GIB.get(device.device_kind)
  return None if gib is None else int(gib * 2**30)
