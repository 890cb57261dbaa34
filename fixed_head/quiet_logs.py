"""Known-harmless library log messages, dropped so that real warnings stand out.

Each entry names the message (its format string, as the library logs it) and why it is
harmless here; everything else a library logs is kept.
"""

from __future__ import annotations

import logging

HARMLESS: dict[str, str] = {
    # Orbax, on every evaluation: the manager is read-only on purpose (eval never writes).
    'Given directory is read only': 'eval opens checkpoints read-only',
    # TFDS, scanning data_dir for a dataset's versions: folders that are not prepared
    # datasets (downloads/, extracted archives, other tools' files) have no metadata.
    'Variant folder %s has no %s': 'a folder in data_dir that is not a prepared dataset',
    'Skipping invalid variant directory': 'a folder in data_dir that is not a version',
    # gcsfs, opening a gs:// path without credentials for Storage Control (a local
    # emulator, or a bucket readable anonymously): it asks whether the bucket has a
    # hierarchical namespace and, not told, uses the plain bucket API, which is what we use.
    'Could not determine bucket type for bucket name': 'gcsfs uses the plain bucket API',
}


class _DropHarmless(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(tuple(HARMLESS))


_FILTER = _DropHarmless()


def install() -> None:
  """Drops the ``HARMLESS`` messages from the absl logger (Orbax and TFDS log there) and
  gcsfs's. Idempotent."""
  for name in ('absl', 'gcsfs'):
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)
