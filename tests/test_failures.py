"""What a run does when things go wrong (issue 5): unreadable checkpoints, NaN/Inf,
a full disk during a save, and bad workdirs. Each ends with one clear error and leaves the
checkpoints already written intact. Kills and SIGTERM are in tests/slow/."""

import copy
import errno
import hashlib
import os

import jax
import numpy as np
import pytest
from etils import epath

from fixed_head import errors
from fixed_head.train import checkpoints
from fixed_head.train import trainer
from test_train import final_params, tiny_config


def run(config, workdir, **kwargs):
  return trainer.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1], **kwargs)


def digest(directory) -> dict[str, str]:
  """{relative path: sha256} of every file under ``directory``."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted 8-step run (checkpoints at 4 and 8) and its final parameters."""
  workdir = tmp_path_factory.mktemp('reference')
  config = tiny_config(steps=8)
  run(config, workdir)
  return config, final_params(str(workdir), config)


@pytest.fixture
def config_and_expected(reference):
  config, expected = reference
  return copy.deepcopy(config), expected


def assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('damage', ['truncate', 'delete'])
def test_unreadable_checkpoint_names_step_and_path_then_falls_back(tmp_path, config_and_expected,
                                                                   damage):
  config, expected = config_and_expected
  run(config, tmp_path, stop_after=8)  # checkpoints 4 and 8
  ckpt = checkpoints.checkpoint_dir(str(tmp_path))
  victim = os.path.join(ckpt, '8', 'params', 'manifest.ocdbt')  # the index of the arrays
  if damage == 'truncate':
    os.truncate(victim, os.path.getsize(victim) // 2)
  else:
    os.remove(victim)
  config.num_train_steps = 12
  before = digest(ckpt)
  with pytest.raises(errors.CheckpointError) as raised:
    run(config, tmp_path)
  message = str(raised.value)
  assert f'checkpoint step 8 at {os.path.join(ckpt, "8")} cannot be restored' in message
  assert 'on_unreadable=fall_back' in message and 'step 4' in message
  assert digest(ckpt) == before  # nothing deleted or overwritten

  # The flag resumes from step 4; step 8 is moved aside, not deleted.
  config.num_train_steps = 8
  config.checkpoint.on_unreadable = 'fall_back'
  run(config, tmp_path)
  aside = checkpoints.set_aside_dir(str(tmp_path))
  (moved,) = os.listdir(aside)
  assert moved.startswith('8-')
  assert digest(os.path.join(aside, moved)) == {
      k[2:]: v for k, v in before.items() if k.startswith('8' + os.sep)}
  assert_same_params(final_params(str(tmp_path), config), expected)


def test_unreadable_checkpoint_in_eval_is_one_clear_error(tmp_path, config_and_expected):
  config, _ = config_and_expected
  run(config, tmp_path, stop_after=4)
  os.remove(os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), '4', 'params',
                         'manifest.ocdbt'))
  with pytest.raises(errors.CheckpointError, match='checkpoint step 4 at .* cannot be'):
    trainer.evaluate(config, str(tmp_path), devices=jax.devices()[:1])


def test_nan_loss_stops_with_the_step_and_writes_no_nan_checkpoint(tmp_path):
  config = tiny_config(steps=30)
  config.checkpoint.every_steps = 1
  config.log_every_steps = 10
  config.optimizer.update(dict(learning_rate=1e30, warmup_steps=0, grad_clip_norm=0.0))
  with pytest.raises(errors.NonFiniteLoss, match=r'at step \d+\. Nothing after step \d+ was '
                     'saved') as raised:
    run(config, tmp_path)
  bad_step = int(str(raised.value).split('at step ')[1].split('.')[0])
  manager = checkpoints.make_manager(str(tmp_path), async_save=False, read_only=True)
  steps = manager.all_steps()
  assert steps and max(steps) < bad_step
  setup = trainer.build_setup(config, jax.devices()[:1])
  for step in steps:
    state, _ = checkpoints.restore(manager, step, setup.abstract_state)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state)), step
  manager.close()


def test_a_full_disk_during_a_save_keeps_the_earlier_checkpoints(tmp_path, config_and_expected,
                                                                 monkeypatch):
  config, expected = config_and_expected
  config.checkpoint.every_steps = 2
  real_write_text = epath.gpath._GPath.write_text  # pylint: disable=protected-access

  def disk_full_from_step_6(self, *args, **kwargs):
    if f'checkpoints{os.sep}6' in os.fspath(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
    return real_write_text(self, *args, **kwargs)

  monkeypatch.setattr(epath.gpath._GPath, 'write_text', disk_full_from_step_6)
  with pytest.raises(errors.CheckpointError, match=r'step 6 .* failed .*No space left on '
                     r'device.*intact: steps \[2, 4\]'):
    run(config, tmp_path)
  monkeypatch.undo()
  manager = checkpoints.make_manager(str(tmp_path), async_save=False, read_only=True)
  assert manager.all_steps() == [2, 4]
  manager.close()
  run(config, tmp_path)  # space is back: the same command resumes from step 4
  assert_same_params(final_params(str(tmp_path), config), expected)


def test_a_workdir_that_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(errors.UsageError, match=r'workdir .*a_file/run cannot be written'):
    run(tiny_config(), blocker / 'run')
  # a bucket with no credentials in reach (no emulator, no gcloud login, not on a VM); the
  # other bucket errors, against a local GCS API, are in tests/slow/test_gcs.py
  for name in ('STORAGE_EMULATOR_HOST', 'GOOGLE_APPLICATION_CREDENTIALS'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('NO_GCE_CHECK', 'True')
  monkeypatch.setenv('CLOUDSDK_CONFIG', str(tmp_path / 'no_gcloud'))
  with pytest.raises(errors.UsageError, match=r'--workdir=gs://bucket/run: no Google Cloud '
                     r'credentials.*gcloud auth application-default login'):
    run(tiny_config(), 'gs://bucket/run')


def test_bad_input_leaves_earlier_checkpoints_intact(tmp_path, config_and_expected):
  config, _ = config_and_expected
  run(config, tmp_path, stop_after=4)
  ckpt = checkpoints.checkpoint_dir(str(tmp_path))
  before = digest(ckpt)
  changed_shape = tiny_config(steps=8, emb_dim=32)
  with pytest.raises(ValueError, match='model.emb_dim: saved 16, now 32'):
    run(changed_shape, tmp_path)
  unknown = tiny_config()
  unknown.unlock()
  unknown.optimizer.lerning_rate = 1.0
  with pytest.raises(ValueError, match='unknown field'):
    run(unknown, tmp_path)
  wrong_vocab = tiny_config()
  wrong_vocab.data.vocab_size = 9
  with pytest.raises(ValueError, match='vocab_size'):
    run(wrong_vocab, tmp_path)
  assert digest(ckpt) == before
