"""fixed_head/train/launch.py: what the entry points share when they parse their flags, and
their exit codes: a user error is one line and exit 2, a bug keeps its traceback."""

import os
import subprocess
import sys

import pytest

from fixed_head import errors
from fixed_head.train import launch

import cli
import repo_configs


@pytest.mark.slow
@pytest.mark.parametrize('flag', ['--help', '--helpfull'])
def test_help_is_asked_for_and_given_exit_0(flag):
  got = subprocess.run([sys.executable, 'train.py', flag], cwd=repo_configs.REPO,
                       capture_output=True, text=True, timeout=120)
  assert got.returncode == 0, got.stderr[-2000:]
  assert '--workdir' in got.stdout + got.stderr


def test_an_unknown_flag_is_still_one_line_and_exit_2():
  got = cli.run('eval.py', '--no_such_flag')
  assert got.returncode == 2
  assert got.stderr.strip().splitlines() == ["error: Unknown command line flag 'no_such_flag'"]


def test_only_the_projects_user_errors_exit_2(capsys):
  def fails(error):
    def main(argv):
      del argv
      raise error
    return launch.user_errors(main)

  with pytest.raises(SystemExit) as stop:
    fails(errors.UsageError('config.x=1: must be 2.'))([])
  assert stop.value.code == 2
  assert capsys.readouterr().err == 'error: config.x=1: must be 2.\n'
  with pytest.raises(ValueError, match='a bug'):  # not turned into exit 2
    fails(ValueError('a bug'))([])
  with pytest.raises(SystemExit) as stop:
    fails(KeyboardInterrupt())([])
  assert stop.value.code == errors.Interrupted.exit_code == 130


@pytest.mark.parametrize('flag,expected', [
    ('--config.model.num_head=4',
     "error: --config.model.num_head: the config has no field 'num_head'; did you mean "
     '--config.model.num_heads?'),
    ('--config=configs/default.py:nope', "error: configs/default.py:nope: use ':fixed' or "
     "':baseline'."),
])
def test_command_line_mistakes_are_one_line_and_exit_2(tmp_path, flag, expected):
  args = ['--config=configs/default.py', f'--workdir={tmp_path / "run"}', flag]
  proc = cli.run('train.py', *args)
  assert proc.returncode == 2
  assert proc.stderr.strip() == expected
  assert not os.path.exists(tmp_path / 'run')
