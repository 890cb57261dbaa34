"""fixed_head/files.py: whole files or nothing, with the permissions open() would give."""

import os
import stat

import pytest

from fixed_head import files


def test_written_files_get_the_usual_permissions_not_mkstemps(tmp_path):
  path = tmp_path / 'config.json'
  files.write_atomically(str(path), '{"a": 1}\n')
  assert path.read_text() == '{"a": 1}\n'
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~files._UMASK  # pylint: disable=protected-access
  with open(tmp_path / 'plain', 'w') as f:
    f.write('x')
  assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(tmp_path / 'plain').st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'metrics.json'
  files.write_atomically(str(path), b'old')

  class Unwritable:  # neither str nor bytes: fails inside the write
    pass

  with pytest.raises(TypeError):
    files.write_atomically(str(path), Unwritable())
  assert path.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['metrics.json']
