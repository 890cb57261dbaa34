"""fixed_head/train/trainer.py: training stops at a NaN loss, refuses bad input and a workdir it
cannot write before writing anything, leaves a finished run as it was, and trains tensor2tensor's
and BERT's recipes; evaluation uses the run's saved config and never overwrites its results."""

import copy
import json
import math
import os

import jax
import numpy as np
import pytest

from fixed_head import errors
from fixed_head.train import checkpoints, run_record, trainer

import repo_configs
from test_checkpoints import digest
from test_train import tiny_config

ONE_DEVICE = jax.devices()[:1]


def train(config, workdir, **kwargs):
  return trainer.train_and_evaluate(config, str(workdir), devices=ONE_DEVICE, **kwargs)


def read(path) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


@pytest.fixture
def config_and_expected(reference_run):
  config, expected = reference_run
  return copy.deepcopy(config), expected


# --- a NaN loss, a workdir it cannot write, bad input: one clear error, nothing lost ----------


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_writes_no_nan_checkpoint(tmp_path):
  config = tiny_config(steps=30)
  config.checkpoint.every_steps = 1
  config.log_every_steps = 10
  config.optimizer.update(dict(learning_rate=1e30, warmup_steps=0, grad_clip_norm=0.0))
  with pytest.raises(errors.NonFiniteLoss, match=r'at step \d+\. Nothing after step \d+ was '
                     'saved') as raised:
    train(config, tmp_path)
  bad_step = int(str(raised.value).split('at step ')[1].split('.')[0])
  manager = checkpoints.make_manager(str(tmp_path), async_save=False, read_only=True)
  steps = manager.all_steps()
  assert steps and max(steps) < bad_step
  setup = trainer.build_setup(config, jax.devices()[:1])
  for step in steps:
    state, _ = checkpoints.restore(manager, step, setup.abstract_state)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state)), step
  manager.close()


def test_a_workdir_that_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(errors.UsageError, match=r'workdir .*a_file/run cannot be written'):
    train(tiny_config(), blocker / 'run')
  # a bucket with no credentials in reach (no emulator, no gcloud login, not on a VM); the
  # other bucket errors, against a local GCS API, are in tests/slow/test_gcs.py
  for name in ('STORAGE_EMULATOR_HOST', 'GOOGLE_APPLICATION_CREDENTIALS'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('NO_GCE_CHECK', 'True')
  monkeypatch.setenv('CLOUDSDK_CONFIG', str(tmp_path / 'no_gcloud'))
  with pytest.raises(errors.UsageError, match=r'--workdir=gs://bucket/run: no Google Cloud '
                     r'credentials.*gcloud auth application-default login'):
    train(tiny_config(), 'gs://bucket/run')


def test_bad_input_leaves_earlier_checkpoints_intact(tmp_path, config_and_expected):
  config, _ = config_and_expected
  train(config, tmp_path, stop_after=4)
  ckpt = checkpoints.checkpoint_dir(str(tmp_path))
  before = digest(ckpt)
  changed_shape = tiny_config(steps=8, emb_dim=32)
  with pytest.raises(ValueError, match='model.emb_dim: saved 16, now 32'):
    train(changed_shape, tmp_path)
  unknown = tiny_config()
  unknown.unlock()
  unknown.optimizer.lerning_rate = 1.0
  with pytest.raises(ValueError, match='unknown field'):
    train(unknown, tmp_path)
  wrong_vocab = tiny_config()
  wrong_vocab.data.vocab_size = 9
  with pytest.raises(ValueError, match='vocab_size'):
    train(wrong_vocab, tmp_path)
  assert digest(ckpt) == before


# --- tensor2tensor's and BERT's recipes, a batch in tokens ------------------------------------


@pytest.mark.slow
def test_the_t2t_objective_trains_and_is_reported_beside_the_plain_loss(tmp_path):
  config = tiny_config(steps=3)
  config.model.update(dict(position_embedding='sinusoidal', scale_embeddings=True,
                           attention_use_bias=False, embed_init_std=16 ** -0.5))
  config.optimizer.update(dict(name='adam', b2=0.997, weight_decay=0.01,
                               weight_decay_mode='l2'))
  config.task.label_smoothing = 0.1
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with open(os.path.join(tmp_path, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  assert all(r['train/objective'] > r['train/loss'] > 0 for r in rows)
  assert 'valid/objective' not in rows[-1] and 'valid/loss' in rows[-1]


@pytest.mark.slow
def test_bert_adamw_trains(tmp_path):
  config = tiny_config(steps=3)
  config.optimizer.update(dict(name='bert_adamw', schedule='bert', b2=0.999, eps=1e-6))
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with open(os.path.join(tmp_path, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f if 'train/loss' in line]
  assert len(rows) == 3 and all(math.isfinite(r['train/loss']) for r in rows)


def test_a_batch_given_in_tokens_trains_and_is_saved_in_rows(tmp_path):
  config = tiny_config(steps=2)  # 16 rows of seq_len 8
  config.batch_size = None
  config.batch_tokens = 16 * 8
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with open(os.path.join(tmp_path, 'config.json'), encoding='utf-8') as f:
    saved = json.load(f)
  assert (saved['batch_size'], saved['batch_tokens']) == (16, 128)
  assert trainer.evaluate(None, str(tmp_path), devices=jax.devices()[:1])['step'] == 2


# --- eval.py uses the run's saved config; other data never overwrites the run's result ---


@pytest.fixture(name='run', scope='module')
def _run(tmp_path_factory, copy_prob_run):
  """A copy of ``copy_prob_run``, and its config: the tests write evaluations into it."""
  workdir, config = copy_prob_run
  return repo_configs.copy_run(workdir, str(tmp_path_factory.mktemp('run') / 'run')), config


def test_eval_without_config_uses_the_saved_config(run):
  workdir, config = run
  result = trainer.evaluate(None, str(workdir), devices=ONE_DEVICE)
  assert result['path'] == os.path.join(str(workdir), 'eval', 'step_4.json')
  again = trainer.evaluate(config, str(workdir), devices=ONE_DEVICE)  # the same run config
  assert again['path'] == result['path'] and again['evals'] == result['evals']


def test_eval_with_other_data_is_refused_or_written_apart(run):
  workdir, config = run
  trainer.evaluate(None, str(workdir), devices=ONE_DEVICE)
  own = os.path.join(str(workdir), 'eval', 'step_4.json')
  before = read(own)
  other = tiny_config(steps=4)  # copy_prob 0.95: the default data, not the run's
  with pytest.raises(errors.UsageError, match=r'other data.*data.copy_prob: saved 0.8, now '
                     r'0.95.*--other_data'):
    trainer.evaluate(other, str(workdir), devices=ONE_DEVICE)
  result = trainer.evaluate(other, str(workdir), devices=ONE_DEVICE, other_data=True)
  assert result['path'] != own and read(own) == before
  with open(result['path'], encoding='utf-8') as f:
    written = json.load(f)
  assert written['data']['copy_prob'] == 0.95  # the file says what it scored
  own_loss = json.loads(before)['evals']['valid']['loss']
  assert written['evals']['valid']['loss'] != own_loss


def test_eval_of_another_model_is_refused(run):
  workdir, _ = run
  with pytest.raises(errors.UsageError, match=r'another model.*model.num_heads: saved 4, '
                     r'now 2'):
    trainer.evaluate(tiny_config(steps=4, num_heads=2), str(workdir), devices=ONE_DEVICE)


# --- a rerun keeps config.json true -----------------------------------------------------------


def test_rerun_of_a_finished_run_changes_nothing(run, capsys):
  workdir, config = run
  before = read(os.path.join(workdir, 'config.json'))
  changed = tiny_config(steps=4)
  changed.data.copy_prob = 0.8
  changed.optimizer.learning_rate = 0.5
  assert train(changed, workdir)['step'] == 4
  assert 'already finished at step 4' in capsys.readouterr().out
  assert read(os.path.join(workdir, 'config.json')) == before
  assert not os.path.exists(os.path.join(workdir, run_record.HISTORY))
