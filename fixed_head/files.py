"""Writing a file whole or not at all, for everything a run keeps (configs, metrics,
vocabularies, tokenizer models): a reader, or a run killed mid-write, never sees half."""

from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, data: str | bytes) -> None:
  """Writes ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file in the
  same directory, flushed to disk and then renamed over ``path``; on any failure the
  temporary file is removed and ``path`` is left as it was. The directory must exist."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp',
                                  dir=directory)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data.encode('utf-8') if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise
