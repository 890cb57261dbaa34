"""Preparing the paper's TFDS datasets with their real builders, offline, then training on them.

``python prepare.py ... --fake_sources`` runs the real lm1b, glue/mnli, squad
and wikipedia builders of tensorflow-datasets (download manager redirected to the stand-ins of
fixed_head/data/fake_sources.py) in a subprocess, as a user runs it: TensorFlow is imported
there, never in this process, where the prepared records are read and trained on through the
configs' runlocal variants, and TensorFlow must still be absent at the end.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fixed_head.data import fake_sources, prepare, tfds_text
from fixed_head.errors import UsageError
from fixed_head.train import trainer
import cli
from repo_configs import REPO, load

DATASETS = ('lm1b', 'glue/mnli', 'squad', 'wikipedia/20230601.en')
# The builders' splits and records on the stand-ins: LM1B 3 x 1,000 train sentences and 200
# held out; MNLI 2,000 / 500 / 500 / 100 / 100 pairs; SQuAD 2,040 and 312 questions;
# Wikipedia 42 pages less a redirect and a talk page, which the builder drops.
SPLITS = {'lm1b': {'test': 200, 'train': 3000},
          'glue/mnli': {'test_matched': 100, 'test_mismatched': 100, 'train': 2000,
                        'validation_matched': 500, 'validation_mismatched': 500},
          'squad': {'train': 2040, 'validation': 312},
          'wikipedia/20230601.en': {'train': 40}}
ONE = jax.devices()[:1]


def prepare_cli(*args):
  return subprocess.run([sys.executable, 'prepare.py', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(name='prepared', scope='module')
def _prepared(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds') / 'fake')
  result = prepare_cli(*DATASETS, '--fake_sources', f'--data_dir={data_dir}', '--num_workers=1')
  assert result.returncode == 0, result.stderr[-3000:]
  return data_dir, result.stdout


@pytest.mark.slow
def test_the_real_builders_prepare_every_dataset_from_fake_sources(prepared):
  data_dir, stdout = prepared
  for name, splits in SPLITS.items():
    counts = ', '.join(f'{split} {n:,}' for split, n in splits.items())
    assert f'{name}: prepared in ' in stdout and f': {counts} records.' in stdout
    builder = tfds.builder(name, data_dir=data_dir)
    assert tfds_text.prepared_format(builder) == 'array_record'
    assert {s: v.num_examples for s, v in builder.info.splits.items()} == splits
  assert stdout.rstrip().endswith(f'train on them with --config.data.data_dir={data_dir}')
  assert os.path.exists(os.path.join(data_dir, prepare.FAKE_MARKER))


@pytest.mark.slow
def test_the_records_are_what_the_builders_make_of_the_sources(prepared):
  data_dir, _ = prepared
  lm1b = tfds.data_source('lm1b', split='train', data_dir=data_dir)
  assert lm1b[0]['text'].decode().endswith((' .', ' ?', ' !'))  # tokenised, as LM1B is
  mnli = tfds.data_source('glue/mnli', split='validation_matched', data_dir=data_dir)
  assert sorted({int(mnli[i]['label']) for i in range(30)}) == [0, 1, 2]
  assert int(tfds.data_source('glue/mnli', split='test_matched', data_dir=data_dir)[0]['label']
             ) == -1  # no gold labels in the test files
  squad = tfds.data_source('squad', split='validation', data_dir=data_dir)
  for i in range(0, 312, 31):
    record = squad[i]
    context, answers = record['context'].decode(), record['answers']
    assert len(answers['text']) == 3
    start = int(answers['answer_start'][0])
    assert context[start:start + len(answers['text'][0])] == answers['text'][0].decode()
  wiki = tfds.data_source('wikipedia/20230601.en', split='train', data_dir=data_dir)
  texts = [wiki[i]['text'].decode() for i in range(len(wiki))]
  titles = {wiki[i]['title'].decode() for i in range(len(wiki))}
  assert titles == {f'Page {i}' for i in range(1, 41)}  # the redirect and talk page dropped
  assert not any("'''" in t or '[[' in t or '{{' in t for t in texts)  # wikicode stripped


@pytest.mark.slow
def test_training_runs_on_each_prepared_dataset_without_tensorflow(prepared, tmp_path):
  data_dir, _ = prepared
  lm = load('lm1b').get_config('fixed,runlocal')
  lm.data.data_dir = data_dir
  lm.num_train_steps, lm.model.num_layers = 4, 1  # one layer: the data is what is tested
  result = trainer.train_and_evaluate(lm, str(tmp_path / 'lm1b'), devices=ONE)
  assert np.isfinite(result['evals']['valid']['loss']) and result['step'] == 4

  bert = load('bert')
  pretrain = bert.get_config('fixed_d512_h32,runlocal')
  pretrain.data.update(dict(dataset=['wikipedia/20230601.en'], files=None, data_dir=data_dir,
                            train_split='train[:80%]', eval_split='train[80%:]'))
  pretrain.num_train_steps, pretrain.model.num_layers = 4, 1
  result = trainer.train_and_evaluate(pretrain, str(tmp_path / 'pt'), devices=ONE)
  assert np.isfinite(result['evals']['valid']['loss'])

  for task, evals in (('mnli', ('matched', 'mismatched')), ('squad', ('squad',))):
    config = bert.get_config(f'fixed_d512_h32,runlocal,task={task}')
    config.update(dict(init_from=str(tmp_path / 'pt'), num_train_steps=4))
    config.model.num_layers = 1  # the pre-trained encoder's
    config.data.data_dir = data_dir
    for spec in config.evals.values():  # a few rows of each split (runlocal reads hundreds)
      spec.num_examples = 16
    result = trainer.train_and_evaluate(config, str(tmp_path / task), devices=ONE)
    assert sorted(result['evals']) == sorted(evals)
  assert 'tensorflow' not in sys.modules


@pytest.mark.slow
def test_preparing_again_leaves_the_data_as_it_is(prepared):
  data_dir, _ = prepared
  before = sorted(os.walk(data_dir))
  result = prepare_cli('squad', '--fake_sources', f'--data_dir={data_dir}')
  assert result.returncode == 0, result.stderr
  assert f'squad: already prepared in {data_dir}/squad/v1.1/3.0.0.' in result.stdout
  assert sorted(os.walk(data_dir)) == before


@pytest.mark.slow
def test_fake_and_real_data_never_share_a_directory(prepared, tmp_path):
  data_dir, _ = prepared
  result = cli.run('prepare.py', 'lm1b', f'--data_dir={data_dir}')  # real, where a fake one is
  assert result.returncode == 2 and result.stderr.count('\n') == 1
  assert 'holds data prepared from --fake_sources' in result.stderr
  real = tmp_path / 'real'
  (real / 'lm1b').mkdir(parents=True)
  result = cli.run('prepare.py', 'squad', '--fake_sources', f'--data_dir={real}')
  assert result.returncode == 2 and 'already holds data that is not from' in result.stderr
  assert os.listdir(real) == ['lm1b']


@pytest.mark.parametrize('args, message', [
    ((), 'usage: python prepare.py NAME'),
    (('no_such_corpus', '--data_dir=DIR'), "'no_such_corpus': tensorflow-datasets 4.9.10 knows "
     'no dataset'),
    (('lm1b', '--no_such_flag'), 'Unknown command line flag'),
])
def test_mistakes_on_the_command_line_are_one_line_and_exit_2(args, message, tmp_path):
  args = tuple(a.replace('DIR', str(tmp_path / 'd')) for a in args)
  result = cli.run('prepare.py', *args)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1 and message in result.stderr
  assert not os.path.exists(tmp_path / 'd')  # nothing written


@pytest.mark.parametrize('name, data_dir, message', [
    ('lm1b', None, '--fake_sources needs a --data_dir of its own'),
    ('glue/cola', 'DIR', "no stand-in for 'glue/cola'"),
])
def test_fake_sources_refuse_what_they_cannot_do_before_writing(name, data_dir, message,
                                                                 tmp_path):
  data_dir = data_dir and str(tmp_path / 'd')
  with pytest.raises(UsageError, match=message):
    prepare.prepare(name, data_dir, fake=True)
  assert not os.path.exists(tmp_path / 'd')


def test_a_missing_package_names_the_install_command(monkeypatch):
  real_find_spec = prepare.importlib.util.find_spec
  monkeypatch.setattr(prepare.importlib.util, 'find_spec',
                      lambda name: None if name in ('tensorflow', 'mwxml') else
                      real_find_spec(name))
  with pytest.raises(UsageError, match=r'preparing lm1b needs tensorflow .*`pip install -r '
                     r'requirements-prepare.txt` first'):
    prepare.check_installed('lm1b')
  with pytest.raises(UsageError, match=r'wikipedia/20230601.en needs tensorflow, mwxml'):
    prepare.check_installed('wikipedia/20230601.en')


def test_a_builder_asking_for_another_file_fails_loudly(tmp_path):
  sources = fake_sources.write('squad', str(tmp_path))
  with fake_sources.redirect_downloads(sources) as asked:
    manager = tfds.download.DownloadManager(download_dir=str(tmp_path / 'dl'))
    assert manager.download_and_extract({'train': 'https://x/train-v1.1.json'}) == {
        'train': sources['train-v1.1.json']}
    with pytest.raises(KeyError, match='no stand-in for https://x/other.zip'):
      manager.download('https://x/other.zip')
  assert asked == ['train-v1.1.json']
  assert tfds.download.DownloadManager.download.__name__ == 'download'  # put back


def test_the_error_for_an_unprepared_dataset_names_the_command_that_works(tmp_path):
  with pytest.raises(UsageError, match=r'python prepare\.py glue/mnli '
                     rf'--data_dir={tmp_path}` \(needs `pip install -r requirements-prepare'):
    tfds_text.open_split('glue/mnli', 'train', data_dir=str(tmp_path))
