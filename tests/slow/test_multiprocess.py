"""Several JAX processes on one machine.

Two processes with two CPU devices each, joined through train.py's own flags
(``--coordinator_address=127.0.0.1:PORT --num_processes=2 --process_id=I``, which call
``jax.distributed.initialize``; CPU collectives go through gloo, JAX's default), against
one process with four devices (this test process). The mesh (1, 2, 2) puts 'fsdp' across
the two processes, so each of them holds, and writes into every checkpoint, its own half
of the parameters. Every collective then has two participants, and a + b = b + a in floating
point, so the runs agree bit for bit.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fixed_head.train import trainer

# Test helpers: pytest puts tests/ (conftest.py's folder) and tests/slow on sys.path.
import kill_config
from test_train import final_params, losses

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` leaves them out

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(REPO, 'tests', 'slow', 'multiprocess_driver.py')
CONFIG = os.path.join(REPO, 'tests', 'slow', 'kill_config.py')

STEPS, STOP = 12, 8  # the schedule's length; where the first part of a run stops
OVERRIDES = {'num_train_steps': STEPS, 'checkpoint.every_steps': 4, 'log_every_steps': 1,
             'mesh.data': 1, 'mesh.fsdp': 2, 'mesh.tensor': 2}
TIMEOUT = 150  # seconds for both processes together: a hang fails instead of blocking CI


def config():
  c = kill_config.get_config()
  c.update_from_flattened_dict(OVERRIDES)
  return c


BATCH = config().batch_size


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_two_processes(workdir, stop_after: int,
                      overrides: dict | None = None) -> list[tuple[int, str]]:
  """(exit code, output) of each of two train.py processes with 2 CPU devices each."""
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='2')
  args = [sys.executable, DRIVER, f'--stop_after={stop_after}', f'--config={CONFIG}',
          *(f'--config.{k}={v}' for k, v in {**OVERRIDES, **(overrides or {})}.items()),
          f'--workdir={workdir}', f'--coordinator_address=127.0.0.1:{port}',
          '--num_processes=2']
  procs = [subprocess.Popen([*args, f'--process_id={i}'], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  deadline = time.monotonic() + TIMEOUT
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=max(deadline - time.monotonic(), 1))[0])
  except subprocess.TimeoutExpired:
    for proc in procs:
      proc.kill()
    tails = [proc.communicate()[0][-2000:] for proc in procs]
    pytest.fail(f'two-process run still going after {TIMEOUT}s; output tails: {tails}')
  return [(proc.returncode, out) for proc, out in zip(procs, outputs)]


def train_two_processes(workdir, stop_after: int) -> None:
  """Trains to ``stop_after`` in two train.py processes."""
  for i, (code, out) in enumerate(run_two_processes(workdir, stop_after)):
    assert code == 0, f'process {i}:\n{out[-3000:]}'


def train_one_process(workdir, stop_after: int | None = None) -> None:
  """The same run in this process, on four of its eight CPU devices."""
  trainer.train_and_evaluate(config(), str(workdir), devices=jax.devices()[:4],
                             stop_after=stop_after)


def rows(workdir, stop_after: int, process: int) -> list[int]:
  with open(os.path.join(workdir, f'rows_{stop_after}_{process}.json')) as f:
    return json.load(f)


def assert_same_params(workdir, expected_workdir):
  got, expected = (final_params(str(w), config()) for w in (workdir, expected_workdir))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(got)):
    np.testing.assert_array_equal(b, a, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Workdirs of 'one' (1 process x 4 devices) and 'two' (2 processes x 2 devices), both
  stopped after step STOP, and of 'straight' (1 process, not stopped)."""
  root = tmp_path_factory.mktemp('multiprocess')
  workdirs = {name: root / name / 'run' for name in ('one', 'two', 'straight')}
  train_one_process(workdirs['one'], STOP)
  train_two_processes(workdirs['two'], STOP)  # into a workdir that does not exist yet
  train_one_process(workdirs['straight'])
  return workdirs


def test_two_processes_match_one_process_with_four_devices(runs):
  assert losses(runs['two']) == losses(runs['one'])  # every step, written by process 0
  assert len(losses(runs['two'])) == STOP
  assert_same_params(runs['two'], runs['one'])


def test_each_process_reads_only_its_own_rows(runs):
  first, second = rows(runs['two'], STOP, 0), rows(runs['two'], STOP, 1)
  assert len(first) == len(second) == STOP * BATCH // 2
  assert not set(first) & set(second)
  assert sorted(first + second) == list(range(STOP * BATCH))  # every row of every batch
  half = BATCH // 2  # process p reads rows [k B + p B/2, k B + (p + 1) B/2) of batch k
  assert first[:half] == list(range(half)) and second[:half] == list(range(half, BATCH))


def test_a_two_process_checkpoint_continues_in_one_process(runs, tmp_path):
  shutil.copytree(runs['two'], tmp_path / 'run')
  train_one_process(tmp_path / 'run')
  assert losses(tmp_path / 'run') == losses(runs['straight'])
  assert_same_params(tmp_path / 'run', runs['straight'])


def test_a_one_process_checkpoint_continues_in_two_processes(runs, tmp_path):
  shutil.copytree(runs['one'], tmp_path / 'run')
  train_two_processes(tmp_path / 'run', STEPS)
  assert losses(tmp_path / 'run') == losses(runs['straight'])
  assert_same_params(tmp_path / 'run', runs['straight'])
  first, second = rows(tmp_path / 'run', STEPS, 0), rows(tmp_path / 'run', STEPS, 1)
  assert sorted(first + second) == list(range(STOP * BATCH, STEPS * BATCH))  # from batch 8
  assert not set(first) & set(second)


def test_a_mesh_whose_batch_slices_span_processes_is_refused(tmp_path):
  """With mesh (1, 1, 4) every device needs the whole batch, but each process reads only
  half of it: without the check, the two halves train as if each were the batch."""
  for code, out in run_two_processes(tmp_path / 'run', STOP, {'mesh.fsdp': 1,
                                                              'mesh.tensor': 4}):
    assert code == 2, out[-3000:]
    assert 'error: config.mesh (data=1, fsdp=1, tensor=4) over 2 processes' in out
    assert 'Traceback' not in out
  assert not os.path.exists(tmp_path / 'run')  # refused before anything was written
