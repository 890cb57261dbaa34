"""fixed_head/train/launch.py: what the entry points share when they parse their flags."""

import subprocess
import sys

import pytest

import repo_configs


@pytest.mark.parametrize('flag', ['--help', '--helpfull'])
def test_help_is_asked_for_and_given_exit_0(flag):
  got = subprocess.run([sys.executable, 'train.py', flag], cwd=repo_configs.REPO,
                       capture_output=True, text=True, timeout=120)
  assert got.returncode == 0, got.stderr[-2000:]
  assert '--workdir' in got.stdout + got.stderr


def test_an_unknown_flag_is_still_one_line_and_exit_2():
  got = subprocess.run([sys.executable, 'eval.py', '--no_such_flag'], cwd=repo_configs.REPO,
                       capture_output=True, text=True, timeout=120)
  assert got.returncode == 2
  assert got.stderr.strip().splitlines() == ["error: Unknown command line flag 'no_such_flag'"]
