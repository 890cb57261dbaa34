"""Hard kills and preemption of a real `python train.py` process.

A run killed with SIGKILL at random points (also while an asynchronous checkpoint is being
written) and restarted with the same command ends bit-identical to an uninterrupted run;
SIGTERM (Ctrl-C) makes the trainer checkpoint the current step and exit with code 75 (130).
"""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fixed_head import errors, files
from fixed_head.train import checkpoints

# Test helpers: pytest puts tests/ (conftest.py's folder) and tests/slow on sys.path.
import kill_config
from test_train import final_params

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` leaves them out

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, 'tests', 'slow', 'kill_config.py')

TIMEOUT = 180  # seconds for one train.py process


def start(workdir) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  return subprocess.Popen(
      [sys.executable, 'train.py', f'--config={CONFIG}', f'--workdir={workdir}'], cwd=REPO,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, step: int) -> int:
  """Reads progress lines until one at ``step`` or later; returns that step."""
  deadline = time.time() + TIMEOUT
  for line in proc.stdout:
    if line.startswith('step '):
      seen = int(line.split()[1].split('/')[0])
      if seen >= step:
        return seen
    if time.time() > deadline:
      break
  proc.kill()
  raise AssertionError(f'no progress line for step {step}: {proc.stderr.read()[-2000:]}')


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  out, err = proc.communicate(timeout=TIMEOUT)
  return proc.returncode, out, err


def tmp_dirs(workdir) -> list[str]:
  return glob.glob(os.path.join(checkpoints.checkpoint_dir(workdir), '*orbax-checkpoint-tmp*'))


def complete_steps(workdir) -> list[int]:
  manager = checkpoints.make_manager(workdir, async_save=False, read_only=True)
  steps = manager.all_steps()
  manager.close()
  return sorted(steps)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  code, _, err = finish(start(workdir))
  assert code == 0, err[-2000:]
  return final_params(workdir, kill_config.get_config())


def assert_bit_identical(workdir, expected):
  got = final_params(workdir, kill_config.get_config())
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_sigkill_at_random_points_then_restart_is_bit_identical(tmp_path, reference, seed):
  rng = random.Random(seed)
  workdir = str(tmp_path)
  kills_during_save = 0
  for _ in range(2):  # two kills, then a run to the end
    proc = start(workdir)
    wait_for_step(proc, rng.randint(3, 30))
    if seed == 0:  # kill while an asynchronous save is being written
      deadline = time.time() + 30
      while not tmp_dirs(workdir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.0005)
    else:
      time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    kills_during_save += bool(tmp_dirs(workdir))
    steps = complete_steps(workdir)
    assert steps, 'no complete checkpoint after the kill'
    # Every step listed is complete: the restart resumes from the newest without error.
  if seed == 0:
    assert kills_during_save, 'the kills did not land inside a checkpoint write'
  code, out, err = finish(start(workdir))
  assert code == 0, err[-2000:]
  assert 'Resuming from step' in out
  assert not tmp_dirs(workdir)  # half-written checkpoints were cleaned up, never used
  assert_bit_identical(workdir, reference)
  assert logged_steps(workdir) == list(range(1, 41))  # rows past a restored step dropped


def logged_steps(workdir) -> list[int]:
  """The step of every row of metrics.jsonl (a local or gs:// workdir)."""
  rows = files.read_text(files.join(workdir, 'metrics.jsonl')).splitlines()
  return [json.loads(line)['step'] for line in rows]


@pytest.mark.parametrize('signum,code,said', [
    (signal.SIGTERM, errors.Preempted.exit_code, 'preempted at step '),
    (signal.SIGINT, errors.Interrupted.exit_code, 'interrupted (Ctrl-C) at step '),
])
def test_sigterm_and_ctrl_c_checkpoint_the_current_step_and_exit(tmp_path, reference, signum,
                                                                  code, said):
  workdir = str(tmp_path)
  proc = start(workdir)
  wait_for_step(proc, 10)
  proc.send_signal(signum)
  got, out, err = finish(proc)
  assert got == code and code in (75, 130), err[-2000:]
  assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err[-2000:]
  stopped = int(err.split(said)[1].split()[0])
  assert stopped >= 10
  assert f'{signal.Signals(signum).name} received: saved a checkpoint of step' in out
  assert complete_steps(workdir)[-1] == stopped  # durable before exit
  code, out, err = finish(start(workdir))
  assert code == 0, err[-2000:]
  assert f'Resuming from step {stopped}:' in out
  assert_bit_identical(workdir, reference)
