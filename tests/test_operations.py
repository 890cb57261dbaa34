"""The traps a new user fell into: eval.py and the saved config, reruns of a finished run,
Ctrl-C, exit codes of typos and of bugs, one metrics row per step, whole-split evaluation,
and quiet logs."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from fixed_head import errors, evaluators, quiet_logs, tasks
from fixed_head.config import ModelConfig
from fixed_head.tasks import losses
from fixed_head.train import launch, preemption, run_record, trainer
from test_train import REPO, tiny_config

ONE_DEVICE = jax.devices()[:1]


def train(config, workdir, **kwargs):
  return trainer.train_and_evaluate(config, str(workdir), devices=ONE_DEVICE, **kwargs)


def read(path) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def steps_logged(workdir) -> list[int]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line)['step'] for line in f]


# --- eval.py uses the run's saved config; other data never overwrites the run's result ---


@pytest.fixture(name='run', scope='module')
def _run(tmp_path_factory):
  """A finished 4-step run whose data differs from configs/default.py's (copy_prob 0.8)."""
  workdir = tmp_path_factory.mktemp('run')
  config = tiny_config(steps=4)
  config.data.copy_prob = 0.8
  train(config, workdir)
  return workdir, config


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


# --- a rerun keeps config.json true ---------------------------------------------------------


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


def test_accepted_changes_are_recorded_with_their_step(tmp_path):
  train(tiny_config(steps=4), tmp_path)
  longer = tiny_config(steps=6)
  longer.optimizer.learning_rate = 0.02
  train(longer, tmp_path)
  history = run_record.history(str(tmp_path))
  assert [h['step'] for h in history] == [4]
  assert history[0]['changes'] == {'num_train_steps': {'saved': 4, 'now': 6},
                                   'optimizer.learning_rate': {'saved': 0.01, 'now': 0.02}}
  assert run_record.load(str(tmp_path))['optimizer']['learning_rate'] == 0.02


def test_data_changes_are_refused_on_resume(tmp_path):
  train(tiny_config(steps=4), tmp_path)
  before = read(tmp_path / 'config.json')
  other = tiny_config(steps=8)
  other.data.copy_prob = 0.5
  with pytest.raises(errors.UsageError, match=r'incompatible.*data.copy_prob: saved 0.95, '
                     r'now 0.5'):
    train(other, tmp_path)
  assert read(tmp_path / 'config.json') == before


# --- metrics.jsonl: one row per step ----------------------------------------------------------


def test_metrics_hold_one_row_per_step_after_a_resume(tmp_path):
  config = tiny_config(steps=8)
  config.eval_every_steps = 4
  train(config, tmp_path)
  shutil.rmtree(tmp_path / 'checkpoints' / '8')  # as if killed after logging steps 5..8
  train(config, tmp_path)
  assert steps_logged(tmp_path) == list(range(1, 9))
  with open(tmp_path / 'metrics.jsonl', encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  assert 'valid/loss' in rows[3] and 'train/loss' in rows[3]  # step 4: train and eval


# --- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_stops_like_sigterm_and_a_second_one_aborts():
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run as a background job
  with preemption.PreemptionWatcher() as watcher:
    assert not watcher.reached(1)
    os.kill(os.getpid(), signal.SIGINT)
    assert watcher.reached(2) and watcher.interrupted
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before  # the handler it found, restored


# --- exit codes: user errors are one line and 2, bugs keep their traceback --------------------


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
  proc = subprocess.run([sys.executable, 'train.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip() == expected
  assert not os.path.exists(tmp_path / 'run')


# --- evaluation covers the whole split --------------------------------------------------------


def test_whole_split_is_scored_whatever_the_batch_size():
  data = tiny_config().data

  def logits(batch):  # a fixed predictor: the loss depends only on which tokens are scored
    return jax.nn.one_hot(batch['tokens'], 8) * 2.0

  def model_of(_):  # the LM task calls model(tokens, positions=..., segment_ids=..., ...)
    return lambda tokens, **_: logits({'tokens': tokens})

  task = tasks.build_task(tiny_config(), ModelConfig())

  def evaluate(batch_size, **spec):
    evaluator = evaluators.LMEvaluator(dict(type='lm', split='eval', batch_size=batch_size,
                                            **spec), data, task, model_of, lambda b: b)
    return evaluator(None), evaluator.source

  whole, source = evaluate(70, num_examples=70)
  assert whole['num_rows'] == 70 and whole['num_tokens'] == 70 * 7
  padded, _ = evaluate(16, num_examples=70)  # 4 whole batches and one of 6 rows, padded
  assert padded['num_rows'] == 70 and padded['num_tokens'] == whole['num_tokens']
  np.testing.assert_allclose(padded['loss'], whole['loss'], rtol=1e-5)  # f32 sums
  rows = source.get_batch(np.arange(70))
  expected = losses.next_token_stats(logits(rows), rows)
  np.testing.assert_allclose(whole['loss'], expected['nll_sum'] / expected['weight_sum'],
                             rtol=1e-6)
  everything, source = evaluate(2048)  # num_examples absent: the whole split
  assert everything['num_rows'] == len(source) == 10_000


# --- quiet logs -------------------------------------------------------------------------------


def test_evaluation_logs_no_read_only_warnings(run, caplog):
  workdir, _ = run
  with caplog.at_level(logging.WARNING):
    trainer.evaluate(None, str(workdir), devices=ONE_DEVICE)
  assert not [r for r in caplog.records if 'read only' in r.getMessage().lower()
              or 'read_only' in r.getMessage()]


def test_known_harmless_library_lines_are_dropped_and_others_kept(caplog):
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  quiet_logs.install()
  with caplog.at_level(logging.WARNING):
    absl_logging.warning('Variant folder %s has no %s', '/data/downloads/x', 'dataset_info.json')
    absl_logging.warning('Given directory is read only=%s', '/w/checkpoints')
    absl_logging.warning('Variant folder %s has invalid version %s', '/data/lm1b/x', 'x')
  assert [r.getMessage() for r in caplog.records] == [
      'Variant folder /data/lm1b/x has invalid version x']


def test_speed_and_location_fields_may_change_between_runs_of_one_workdir(tmp_path):
  """remat (like attention_impl) changes how a step is computed, not the model: eval.py may
  use another; a moved pre-packed copy (data.prepacked_dir, like data.data_dir) may be
  resumed from. Shapes and what the data is still bind."""
  config = tiny_config()
  config.data.prepacked_dir = ''
  run_record.write_json_atomic(os.path.join(str(tmp_path), run_record.CONFIG),
                               run_record.as_dict(config))
  saved = run_record.load(str(tmp_path))
  changed = config.copy_and_resolve_references()
  changed.model.remat, changed.model.attention_impl = 'full', 'xla'
  assert run_record.eval_target(changed, str(tmp_path), other_data=False) == 'step_{step}.json'
  changed.data.prepacked_dir = '/elsewhere/packed'
  run_record.check_resume(saved, changed, str(tmp_path))  # no error
  changed.model.num_heads += 1
  with pytest.raises(errors.UsageError, match='model.num_heads'):
    run_record.eval_target(changed, str(tmp_path), other_data=True)
  changed.model.num_heads -= 1
  changed.data.seq_len += 1
  with pytest.raises(errors.UsageError, match='data.seq_len'):
    run_record.check_resume(saved, changed, str(tmp_path))
