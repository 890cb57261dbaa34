"""fixed_head/train/run_record.py: what every entry point that reads a workdir checks first,
and eval.py on a run it may read but not write."""

import os
import shutil
import subprocess
import sys

import pytest

from fixed_head import errors, files
from fixed_head.experiments import attention_stats, ngram
from fixed_head.train import run_record, trainer

import repo_configs


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
def run(tmp_path_factory):
  return repo_configs.tiny_byte_lm(str(tmp_path_factory.mktemp('read_only') / 'run'))


def _without_root_powers(*args):
  """The command, run as root without the capabilities that let root write any file."""
  drop = '-dac_override,-dac_read_search'
  return ['setpriv', f'--bounding-set={drop}', f'--inh-caps={drop}', *args]


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
