"""Files a run keeps (configs, metrics, vocabularies, tokenizer models): written whole or not
at all, so a reader, or a run killed mid-write, never sees half; and made by one process
when several share them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import TypeVar

T = TypeVar('T')


def _read_umask() -> int:
  mask = os.umask(0)  # the only way to read it; set back at once, at import (one thread)
  os.umask(mask)
  return mask


_UMASK = _read_umask()


def write_atomically(path: str, data: str | bytes) -> None:
  """Writes ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file in the
  same directory, flushed to disk and then renamed over ``path``; on any failure the
  temporary file is removed and ``path`` is left as it was. The directory must exist. The file
gets the permissions ``open`` would give it (0666 less the umask)."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp',
                                  dir=directory)
  try:
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide the file from others
    with os.fdopen(fd, 'wb') as f:
      f.write(data.encode('utf-8') if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


def on_process_zero(make: Callable[[], T], barrier: str) -> T | None:
  """Runs ``make()`` (which writes a file every process then reads, e.g. a trained
  tokenizer) on JAX process 0 only, while the others wait at the barrier named
  ``barrier``. Returns its result on process 0 and None elsewhere. The file must be on a
  file system all processes see."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return make()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  result = make() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(barrier)
  return result
