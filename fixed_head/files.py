"""Files a run keeps (configs, metrics, vocabularies, tokenizer models): written whole or not
at all, so a reader, or a run killed mid-write, never sees half; and made by one process
when several share them.

Every path the project reads or writes goes through here, as a local path or a URL such as
``gs://bucket/run``: ``etils.epath`` (which Orbax and TFDS use too) reaches a bucket through
gcsfs. Local files are written to a temporary file and renamed; an object store has no
rename, but an object appears whole or not at all, so a URL is written as one object.
Object stores cannot append either: ``LineLog`` rewrites a URL's whole object at each flush.

Where TensorFlow is installed (requirements-prepare.txt, or a TPU VM image that ships it),
epath would send every URL through ``tf.io.gfile`` instead, importing TensorFlow into the run;
``EPATH_USE_TF=false`` (set at import, unless the environment sets it) keeps gcsfs, the
backend that is tested, and TensorFlow out.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import TypeVar

os.environ.setdefault('EPATH_USE_TF', 'false')  # before epath picks a backend (cached)
from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position

from fixed_head import quiet_logs

quiet_logs.install()  # gcsfs's harmless bucket-type warning, on every gs:// path

T = TypeVar('T')


def _read_umask() -> int:
  mask = os.umask(0)  # the only way to read it; set back at once, at import (one thread)
  os.umask(mask)
  return mask


_UMASK = _read_umask()


def is_url(path: str | os.PathLike) -> bool:
  """Whether ``path`` names a remote location (``gs://...``) rather than a local file."""
  return '://' in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
  """A local path made absolute (``~`` expanded); a URL as given, without a trailing /."""
  path = os.fspath(path)
  return path.rstrip('/') if is_url(path) else os.path.abspath(os.path.expanduser(path))


def join(base: str | os.PathLike, *names: str) -> str:
  return os.path.join(os.fspath(base), *names)


def exists(path: str | os.PathLike) -> bool:
  return epath.Path(path).exists()


def is_dir(path: str | os.PathLike) -> bool:
  return epath.Path(path).is_dir()


def is_file(path: str | os.PathLike) -> bool:
  return epath.Path(path).is_file()


def read_text(path: str | os.PathLike) -> str:
  return epath.Path(path).read_text(encoding='utf-8')


def read_bytes(path: str | os.PathLike) -> bytes:
  return epath.Path(path).read_bytes()


def sha256(path: str | os.PathLike) -> str:
  """The hex sha256 of the file's bytes, read a MiB at a time."""
  digest = hashlib.sha256()
  with epath.Path(path).open('rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def make_dirs(path: str | os.PathLike) -> None:
  """Creates the directory ``path`` and its parents (a URL's are implicit: nothing to do)."""
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def glob(directory: str | os.PathLike, pattern: str) -> list[str]:
  """The paths in ``directory`` whose names match ``pattern`` (not recursive), sorted."""
  return sorted(os.fspath(p) for p in epath.Path(directory).glob(pattern))


def files_under(directory: str | os.PathLike) -> Iterator[str]:
  """Every file under ``directory``, recursively, as paths relative to it (a bucket has no
  recursive glob: this lists one level at a time)."""
  root = os.fspath(epath.Path(directory))
  pending = [epath.Path(directory)]
  while pending:
    for entry in pending.pop().iterdir():
      if entry.is_dir():
        pending.append(entry)
      else:
        yield os.fspath(entry)[len(root) + 1:]


def move_tree(source: str, target: str) -> None:
  """Moves the directory ``source`` to ``target`` (which must not exist). Local: one rename.
  URL: every object is copied, then the source deleted, so a process killed midway leaves
  the source whole (and a partial copy at ``target``)."""
  if not is_url(source):
    os.rename(source, target)
    return
  for name in list(files_under(source)):
    epath.Path(source, name).copy(epath.Path(target, name))
  epath.Path(source).rmtree()


def bucket(url: str) -> str:
  """'gs://bucket' of 'gs://bucket/run/...'."""
  scheme, _, rest = url.partition('://')
  return f'{scheme}://{rest.split("/", 1)[0]}'


def _check_credentials(url: str, verb: str) -> None:
  """PermissionError saying what to do when a gs:// ``url`` has no Google Cloud credentials
  in reach (none needed for a local emulator)."""
  if url.startswith('gs://') and not os.environ.get('STORAGE_EMULATOR_HOST'):
    import google.auth  # pylint: disable=g-import-not-at-top
    import google.auth.exceptions  # pylint: disable=g-import-not-at-top
    try:
      google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
      raise PermissionError(
          f'no Google Cloud credentials to {verb} {url}: run `gcloud auth application-default '
          'login` (on a TPU or GCE VM, the VM\'s service account is used)') from None


def check_url_readable(url: str) -> None:
  """Raises ``PermissionError`` (no credentials) or ``FileNotFoundError`` (no such bucket),
  each saying what to do, before anything is read from ``url``: without credentials gcsfs
  retries for about a minute and then fails with pages of tracebacks."""
  _check_credentials(url, 'read')
  if not epath.Path(bucket(url)).exists():
    raise FileNotFoundError(
        f'bucket {bucket(url)} does not exist or this account cannot see it: check the path')


def check_writable_dir(path: str) -> None:
  """Raises ``PermissionError`` saying what to fix unless files can be made in the directory
  ``path`` (or, if it does not exist yet, in its nearest existing parent). Local paths ask
  the kernel (``os.access``); a URL writes and deletes one probe object
  (``check_url_writable``)."""
  if is_url(path):
    check_url_writable(path)
    return
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not (os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK)):
    raise PermissionError(f'{existing} cannot be written (Permission denied)')


def check_url_writable(url: str) -> None:
  """Raises ``PermissionError`` (no credentials, no permission) or ``FileNotFoundError`` (no
  such bucket), each saying what to do, unless an object can be written under ``url``. It
  writes and deletes one empty object, ``url/.write_check``; nothing else is touched."""
  _check_credentials(url, 'write')
  if not epath.Path(bucket(url)).exists():
    raise FileNotFoundError(
        f'bucket {bucket(url)} does not exist or this account cannot see it: create it '
        f'(`gcloud storage buckets create {bucket(url)}`) or give another path')
  probe = epath.Path(url, '.write_check')
  try:
    probe.write_bytes(b'')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise PermissionError(
        f'{url} cannot be written ({type(e).__name__}: {first}): grant this account '
        f'roles/storage.objectAdmin on {bucket(url)}, or give another path') from e


def write_atomically(path: str, data: str | bytes) -> None:
  """Writes ``data`` (text as UTF-8, or bytes) to ``path``, whole or not at all.

  Local: through a temporary file in the same directory, flushed to disk and then renamed
  over ``path``; on any failure the temporary file is removed and ``path`` is left as it
  was. The directory must exist. The file gets the permissions ``open`` would give it (0666
  less the umask). URL: one object upload, which the store makes visible only when
  complete."""
  data = data.encode('utf-8') if isinstance(data, str) else data
  if is_url(path):
    if not isinstance(data, bytes):
      raise TypeError(f'write_atomically takes str or bytes, not {type(data).__name__}')
    epath.Path(path).write_bytes(data)
    return
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp',
                                  dir=directory)
  try:
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide the file from others
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


class LineLog:
  """A text file that grows by whole lines (metrics.jsonl, config_history.jsonl).

  Local: opened for appending, and flushed at each ``flush``. URL: object stores cannot
  append (gcsfs silently overwrites), so the text is kept in memory and the whole object
  rewritten at each ``flush``: a reader sees the file as of a flush, never a torn line.
  """

  def __init__(self, path: str):
    self.path = path
    if is_url(path):
      self._text = read_text(path) if exists(path) else ''
      self._file = None
    else:
      self._file = open(path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with
    self._pending = []

  def write(self, line: str) -> None:
    self._pending.append(line if line.endswith('\n') else line + '\n')

  def flush(self) -> None:
    if not self._pending:
      return
    text, self._pending = ''.join(self._pending), []
    if self._file is None:
      self._text += text
      write_atomically(self.path, self._text)
    else:
      self._file.write(text)
      self._file.flush()

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()


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
