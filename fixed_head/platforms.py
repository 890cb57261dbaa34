"""Which JAX platform a plain ``import fixed_head`` leaves JAX to open.

libtpu is installed beside JAX for compiling to TPU slices on any machine (compile.py, the
tests). JAX then tries to open a TPU at start-up wherever libtpu is, and on a laptop, a
Colab CPU or a CI runner libtpu prints half a dozen error lines about the accelerator that
is not there. ``skip_absent_tpu`` (run when the package is imported, and by the entry
points) tells JAX to use the CPU in exactly that case: libtpu installed, no TPU chip attached,
no NVIDIA GPU, and no platform chosen by the user (``JAX_PLATFORMS`` or ``jax_platforms``,
which are never overridden). A TPU VM keeps its TPU; a GPU host is left to JAX's choice.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import jax

_GOOGLE_PCI_VENDOR = '0x1ae0'  # what a TPU chip shows in /sys/bus/pci/devices/*/vendor


def libtpu_installed() -> bool:
  return importlib.util.find_spec('libtpu') is not None


def has_tpu_chip() -> bool:
  """Whether a TPU chip is attached to this machine (what libtpu would open)."""
  for path in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(path, encoding='utf-8') as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def platforms_chosen() -> bool:
  """Whether the user chose JAX's platforms (JAX_PLATFORMS or jax_platforms)."""
  return bool(os.environ.get('JAX_PLATFORMS') or jax.config.jax_platforms)


def skip_absent_tpu() -> None:
  """With libtpu installed but no TPU chip here (and no platform chosen), run on the CPU
  without JAX trying, and libtpu complaining about, a TPU. Takes effect only before JAX
  starts its backends (its first ``jax.devices()`` or computation). A machine with an
  NVIDIA GPU is left to JAX's own choice."""
  if (platforms_chosen() or not libtpu_installed() or has_tpu_chip()
      or glob.glob('/dev/nvidia[0-9]*')):
    return
  jax.config.update('jax_platforms', 'cpu')
