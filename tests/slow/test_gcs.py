"""A gs:// workdir, end to end, against a local GCS JSON API.

Real `train.py` and `eval.py` processes write a run into a bucket of gcp-storage-emulator
(tests/gcs_emulator.py) through the same clients a TPU VM uses with Cloud Storage: gcsfs
under etils.epath (config.json, metrics.jsonl, eval JSON), google-cloud-storage under
tensorboardX (events) and TensorStore under Orbax (checkpoints). The run is stopped with
SIGTERM, killed with SIGKILL, resumed, and must end bit-identical to the same run on a local
disk; eval.py reads it back; an unreadable checkpoint is set aside in the bucket; a bucket
that does not exist, or no credentials, is one line and exit 2.
"""

import json
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from etils import epath

from fixed_head import files

import gcs_emulator
import kill_config
from test_kill_resume import CONFIG, REPO, TIMEOUT, finish, logged_steps, wait_for_step
from test_train import final_params, losses

pytestmark = pytest.mark.slow  # real processes: `-m "not slow"` leaves them out

BUCKET = 'fixed-head-test'
READ_ONLY = 'fixed-head-read-only'  # uploads refused with 403, as without objects.create
STEPS = 12
# kill_config's run, shortened: each checkpoint is ~50 requests to a one-thread emulator.
OVERRIDES = [f'--config.num_train_steps={STEPS}', '--config.checkpoint.every_steps=3']


def config():
  c = kill_config.get_config()
  c.num_train_steps = STEPS
  return c


def command(script, workdir, *flags):
  return [sys.executable, script, f'--workdir={workdir}', *flags]


def start(workdir, env, *flags) -> subprocess.Popen:
  return subprocess.Popen(command('train.py', workdir, f'--config={CONFIG}', *OVERRIDES, *flags),
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def run(args, env):
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=TIMEOUT)


def eval_line(stdout: str) -> str:
  return next(line for line in stdout.splitlines() if line.startswith('eval valid @'))


def errors(stderr: str) -> list[str]:
  """stderr's lines, less TensorStore's note that it uses the emulator's test token."""
  return [line for line in stderr.strip().splitlines()
          if 'Using GOOGLE_AUTH_TOKEN_FOR_TESTING' not in line]


@pytest.fixture(scope='module')
def gcs():
  """The emulator, with this process pointed at it too (final_params reads the bucket
  through Orbax here). Yields the environment for child processes."""
  with gcs_emulator.running(BUCKET, read_only=(READ_ONLY,)) as env:
    yield dict(env, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')


@pytest.fixture(scope='module')
def local(tmp_path_factory, gcs):
  """The same run on a local disk, uninterrupted: (workdir, its eval.py line)."""
  workdir = str(tmp_path_factory.mktemp('local'))
  code, _, err = finish(start(workdir, gcs))
  assert code == 0, err[-2000:]
  evaluated = run(command('eval.py', workdir), gcs)
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  return workdir, eval_line(evaluated.stdout)


@pytest.fixture(scope='module')
def stopped_and_killed(gcs):
  """gs://BUCKET/run, stopped by SIGTERM, then killed by SIGKILL, then run to the end.
  Returns (workdir, the last process's stdout and stderr)."""
  workdir = f'gs://{BUCKET}/run'
  proc = start(workdir, gcs)
  wait_for_step(proc, 4)
  proc.send_signal(signal.SIGTERM)
  code, out, err = finish(proc)
  assert code == 75, err[-2000:]  # preempted: the current step was saved first
  assert 'SIGTERM received: saved a checkpoint of step' in out
  # Orbax may warn (a slow save, a step still being written); the last line says why it stopped
  assert errors(err)[-1].startswith('stopped: preempted at step') and 'Traceback' not in err, err
  proc = start(workdir, gcs)
  wait_for_step(proc, 8)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=TIMEOUT)
  code, out, err = finish(start(workdir, gcs))
  assert code == 0, err[-2000:]
  return workdir, out, err


def test_a_run_in_a_bucket_resumes_bit_identical_to_a_local_one(gcs, local, stopped_and_killed):
  workdir, out, err = stopped_and_killed
  assert 'Resuming from step' in out
  assert 'Traceback' not in err and 'Could not determine bucket type' not in err, err[-2000:]
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir, config()),
               final_params(local[0], config()))
  run_dir = epath.Path(workdir)
  # one row per step, though metrics.jsonl was rewritten (not appended) at every flush
  assert logged_steps(workdir) == list(range(1, STEPS + 1)) == logged_steps(local[0])
  config_json = lambda d: json.loads(files.read_text(files.join(d, 'config.json')))
  assert config_json(workdir) == config_json(local[0])
  assert any(p.name.startswith('events.out.tfevents') for p in (run_dir / 'tensorboard').iterdir())
  assert not (run_dir / '.write_check').exists()
  assert not [p for p in (run_dir / 'checkpoints').iterdir() if 'tmp' in p.name]


def test_eval_py_reads_the_bucket_like_a_local_workdir(gcs, local, stopped_and_killed):
  workdir = stopped_and_killed[0]
  evaluated = run(command('eval.py', workdir), gcs)
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  assert eval_line(evaluated.stdout) == local[1]
  written = json.loads(epath.Path(workdir, 'eval', f'step_{STEPS}.json').read_text())
  assert written['step'] == STEPS
  assert f'wrote {workdir}/eval/step_{STEPS}.json' in evaluated.stdout


def test_an_unreadable_checkpoint_in_a_bucket_is_set_aside_and_training_falls_back(
    gcs, local, stopped_and_killed):
  workdir = stopped_and_killed[0]
  step_dir = epath.Path(workdir, 'checkpoints', str(STEPS))
  damaged = [p for p in (step_dir / 'params').iterdir() if p.name.startswith('ocdbt')]
  assert damaged
  for p in damaged:
    p.rmtree() if p.is_dir() else p.unlink()
  refused = run(command('eval.py', workdir), gcs)
  assert refused.returncode == 2 and 'on_unreadable=fall_back' in refused.stderr
  code, out, err = finish(start(workdir, gcs, '--config.checkpoint.on_unreadable=fall_back'))
  assert code == 0, out[-1500:] + str([l for l in err.splitlines() if 'rror' in l][-8:])
  aside = list(epath.Path(workdir, 'checkpoints_set_aside').iterdir())
  assert [p.name.split('-')[0] for p in aside] == [str(STEPS)]
  assert (aside[0] / '_CHECKPOINT_METADATA').exists()  # moved whole, deleting nothing
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir, config()),
               final_params(local[0], config()))


def test_a_bucket_that_does_not_exist_is_one_line_and_exit_2(gcs):
  got = run(command('train.py', 'gs://no-such-bucket/run', f'--config={CONFIG}', *OVERRIDES),
            gcs)
  assert got.returncode == 2, got.stderr[-2000:]
  assert len(errors(got.stderr)) == 1, got.stderr[-2000:]
  assert 'bucket gs://no-such-bucket does not exist' in got.stderr
  assert 'gcloud storage buckets create gs://no-such-bucket' in got.stderr
  assert not epath.Path('gs://no-such-bucket').exists()


def test_no_permission_to_write_is_one_line_and_exit_2(gcs):
  got = run(command('train.py', f'gs://{READ_ONLY}/run', f'--config={CONFIG}', *OVERRIDES),
            gcs)
  assert got.returncode == 2, got.stderr[-2000:]
  assert len(errors(got.stderr)) == 1, got.stderr[-2000:]
  assert f'--workdir=gs://{READ_ONLY}/run: gs://{READ_ONLY}/run cannot be written' in got.stderr
  assert 'Forbidden' in got.stderr
  assert f'roles/storage.objectAdmin on gs://{READ_ONLY}' in got.stderr
  assert not list(epath.Path(f'gs://{READ_ONLY}').iterdir())  # nothing written


def test_no_credentials_is_one_line_and_exit_2(gcs, tmp_path):
  env = {k: v for k, v in gcs.items() if k not in (
      'STORAGE_EMULATOR_HOST', 'TENSORSTORE_GCS_HTTP_URL', 'GOOGLE_AUTH_TOKEN_FOR_TESTING',
      'GOOGLE_APPLICATION_CREDENTIALS')}
  env.update(NO_GCE_CHECK='True', CLOUDSDK_CONFIG=str(tmp_path))  # no VM, no gcloud login
  got = run(command('train.py', f'gs://{BUCKET}/other', f'--config={CONFIG}', *OVERRIDES), env)
  assert got.returncode == 2, got.stderr[-2000:]
  assert len(errors(got.stderr)) == 1, got.stderr[-2000:]
  assert 'no Google Cloud credentials' in got.stderr
  assert 'gcloud auth application-default login' in got.stderr
  assert not epath.Path(f'gs://{BUCKET}/other').exists()


def test_two_processes_share_a_bucket_workdir_like_one_process(gcs, tmp_path):
  """Two train.py processes (mesh (1, 2, 2): each writes its half of every checkpoint) into
  one bucket run, against one process with four devices on a local disk."""
  import test_multiprocess as mp  # pylint: disable=g-import-not-at-top
  workdir = f'gs://{BUCKET}/two_processes'
  mp.train_one_process(tmp_path / 'one', mp.STOP)
  mp.train_two_processes(workdir, mp.STOP)
  assert losses(workdir) == losses(tmp_path / 'one')
  assert len(losses(workdir)) == mp.STOP
  mp.assert_same_params(workdir, tmp_path / 'one')
  rows = [json.loads(epath.Path(workdir, f'rows_{mp.STOP}_{i}.json').read_text())
          for i in range(2)]
  assert sorted(rows[0] + rows[1]) == list(range(mp.STOP * mp.BATCH))
