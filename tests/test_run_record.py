"""fixed_head/train/run_record.py: what every entry point that reads a workdir checks first,
eval.py on a run it may read but not write, and which config changes a resumed run or eval.py
accepts (those accepted recorded with their step)."""

import os
import shutil
import subprocess
import sys

import pytest

from fixed_head import errors, files
from fixed_head.experiments import attention_stats, ngram
from fixed_head.train import run_record, trainer

import repo_configs
from test_train import tiny_config
from test_trainer import read, train

default = repo_configs.load('default')


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
  """No Google Cloud credentials in reach: no emulator, no gcloud login, not on a VM."""
  for name in ('STORAGE_EMULATOR_HOST', 'GOOGLE_APPLICATION_CREDENTIALS'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('NO_GCE_CHECK', 'True')
  monkeypatch.setenv('CLOUDSDK_CONFIG', str(tmp_path / 'no_gcloud'))


@pytest.mark.parametrize('read', [
    lambda w: run_record.load_config(w),  # eval.py without --config, sample.py
    lambda w: trainer.evaluate(None, w),  # eval.py
    lambda w: trainer.load_model(w),  # notebooks
    lambda w: attention_stats.restore(w),  # analyze.py
    lambda w: ngram.floor_for_run(w),  # floor.py --workdir
], ids=['load_config', 'evaluate', 'load_model', 'analyze', 'floor'])
def test_a_bucket_without_credentials_is_one_line_at_once(no_credentials, read):
  with pytest.raises(errors.UsageError, match=r'^--workdir=gs://bucket/run: no Google Cloud '
                     r'credentials to read gs://bucket/run: run `gcloud auth application-default '
                     r'login`'):
    read('gs://bucket/run')


def test_a_writable_directory_and_one_that_cannot_be(tmp_path):
  files.check_writable_dir(str(tmp_path / 'new' / 'deeper'))  # its parent will hold it
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(PermissionError, match='a_file cannot be written'):
    files.check_writable_dir(str(blocker / 'eval'))


@pytest.fixture(scope='module')
def run(tmp_path_factory, tiny_lm_run):
  return repo_configs.copy_run(tiny_lm_run,
                                 str(tmp_path_factory.mktemp('read_only') / 'run'))


def _without_root_powers(*args):
  """The command, run as root without the capabilities that let root write any file."""
  drop = '-dac_override,-dac_read_search'
  return ['setpriv', f'--bounding-set={drop}', f'--inh-caps={drop}', *args]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('setpriv') is None, reason='needs setpriv (util-linux)')
def test_eval_py_on_a_run_it_cannot_write_is_one_line_or_goes_to_output(run, tmp_path):
  copy = tmp_path / 'run'
  shutil.copytree(run, copy)
  subprocess.run(['chmod', '-R', 'a-w', str(copy)], check=True)
  before = sorted(os.listdir(copy))
  try:
    got = subprocess.run(_without_root_powers(sys.executable, 'eval.py', f'--workdir={copy}'),
                         cwd=repo_configs.REPO, capture_output=True, text=True, timeout=300)
    assert got.returncode == 2, got.stderr[-2000:]
    assert got.stderr.strip().splitlines() == [
        f'error: {copy} cannot be written (Permission denied); eval.py writes its results to '
        f'{copy}/eval: fix its permissions, or give --output=DIR (a writable directory) for '
        'them.'], got.stderr[-2000:]
    assert 'eval valid' not in got.stdout  # refused before evaluating
    out = tmp_path / 'results'
    got = subprocess.run(_without_root_powers(sys.executable, 'eval.py', f'--workdir={copy}',
                                              f'--output={out}'),
                         cwd=repo_configs.REPO, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert os.listdir(out) == ['step_4.json'] and sorted(os.listdir(copy)) == before
  finally:
    subprocess.run(['chmod', '-R', 'u+w', str(copy)], check=True)


# --- config changes on resume and in evaluation -------------------------------------------


def test_label_smoothing_may_change_when_a_run_resumes_the_task_may_not(tmp_path):
  saved = run_record.as_dict(default.get_config())
  config = default.get_config()
  config.task.label_smoothing = 0.1
  run_record.check_resume(saved, config, str(tmp_path))  # only the objective changes
  config.task.name = 'classification'
  with pytest.raises(errors.UsageError, match=r"task.name: saved 'lm', now 'classification'"):
    run_record.check_resume(saved, config, str(tmp_path))


@pytest.mark.slow
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
