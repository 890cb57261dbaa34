"""Several JAX processes on one machine (issue 5, point 6): two processes with two CPU
devices each, joined by jax.distributed on 127.0.0.1, against one process with four."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(REPO, 'tests', 'slow', 'multiprocess_driver.py')
sys.path[:0] = [os.path.join(REPO, 'tests'), os.path.join(REPO, 'tests', 'slow')]
from test_train import final_params  # noqa: E402  pylint: disable=g-import-not-at-top
import kill_config  # noqa: E402  pylint: disable=g-import-not-at-top

TIMEOUT = 240
BATCH = kill_config.get_config().batch_size


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def train(workdir, steps: int, num_processes: int) -> None:
  """Runs the driver in ``num_processes`` processes to ``steps`` and waits for all."""
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen([sys.executable, DRIVER, str(workdir), str(steps), str(p),
                             str(num_processes), str(port)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for p in range(num_processes)]
  try:
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]


def rows(workdir, steps, process) -> list[int]:
  with open(os.path.join(workdir, f'rows_{steps}_{process}.json')) as f:
    return json.load(f)


def params(workdir):
  return final_params(str(workdir), kill_config.get_config())


def assert_close(a, b):
  """Equal within float32 rounding, except the key bias: it adds a constant to each query's
  scores, which the softmax removes, so its exact gradient is 0 and Adam turns the rounding
  noise of a different all-reduce order into O(lr) steps (as in tests/test_train.py)."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" not in name:
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Steps 1-8 (of a 12-step schedule) with 1 process x 4 devices and with 2 processes x 2
  devices."""
  one, two = tmp_path_factory.mktemp('one_process'), tmp_path_factory.mktemp('two_processes')
  train(one, 8, 1)
  train(two, 8, 2)
  return one, two


def test_two_processes_match_one_process_with_four_devices(runs):
  one, two = runs
  assert_close(params(two), params(one))


def test_each_process_reads_only_its_own_shard(runs):
  one, two = runs
  mine, theirs, everything = rows(two, 8, 0), rows(two, 8, 1), rows(one, 8, 0)
  assert not set(mine) & set(theirs)
  assert sorted(mine + theirs) == sorted(everything) == list(range(8 * BATCH))
  half = BATCH // 2  # process p reads rows [k B + p B/2, k B + (p + 1) B/2) of batch k
  assert mine[:half] == list(range(half)) and theirs[:half] == list(range(half, BATCH))


@pytest.mark.parametrize('first,then', [(2, 1), (1, 2)])
def test_a_checkpoint_continues_with_another_process_count(runs, tmp_path, first, then):
  """Steps 1-8 with `first` processes, 9-12 with `then`, equal to 12 steps with one."""
  reference = tmp_path / 'reference'
  train(reference, 12, 1)
  moved = tmp_path / 'moved'
  shutil.copytree(runs[0 if first == 1 else 1], moved)
  train(moved, 12, then)
  assert_close(params(moved), params(reference))
  assert rows(moved, 12, 0)[0] == 8 * BATCH  # continued at batch 8
