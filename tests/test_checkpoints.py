"""fixed_head/train/checkpoints.py: an unreadable checkpoint is one clear error naming its step
and path (with on_unreadable=fall_back, set aside and resumed from the one before), and a full
disk during a save keeps the checkpoints already written."""

import copy
import errno
import hashlib
import os

import jax
import numpy as np
import pytest
from etils import epath

from fixed_head import errors
from fixed_head.train import checkpoints, trainer

from test_train import final_params


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


@pytest.fixture
def config_and_expected(reference_run):
  config, expected = reference_run
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
