"""The TFDS text source on mock LM1B (and a tiny prepared ArrayRecord dataset): packing,
seeded order, process shards, exact resume through JSON, errors, training."""

import json
import os
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fixed_head.train import trainer
from fixed_head.data import build_source, packing, tokenizers, train_iterator

import repo_configs
import resolved

default_config = repo_configs.load('default')

NUM_RECORDS = 60  # per mock split; mock texts are 10-19 bytes, so rows of 16 split most


@pytest.fixture(name='mock_lm1b')
def _mock_lm1b():
  with tfds.testing.mock_data(num_examples=NUM_RECORDS):
    yield [r['text'] for r in tfds.data_source('lm1b', split='train', download=False)]


def data_config(**kw):
  return {'name': 'tfds', 'dataset': 'lm1b', 'seq_len': 16, 'vocab_size': 259,
          'tokenizer': 'byte', 'read_threads': 0, 'log': lambda _: None, **kw}


def take(iterator, num_batches):
  return [next(iterator) for _ in range(num_batches)]


def stream_documents(batches):
  """The documents in the order the rows hold them (cut at each bos)."""
  rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  tokens = rows['tokens'][rows['segment_ids'] > 0]  # row-major: the rows' order
  starts = np.flatnonzero(tokens == tokenizers.BOS_ID)
  return np.split(tokens, starts[1:]), rows


def check_rows(rows, n, vocab_size):
  seg, pos, tokens = rows['segment_ids'], rows['positions'], rows['tokens']
  assert all(v.dtype == np.int32 and v.shape[1:] == (n,) for v in rows.values())
  assert tokens.max() < vocab_size and tokens.min() >= 0
  for s, p, t in zip(seg, pos, tokens):
    used = int(np.sum(s > 0))
    assert used and s[0] == 1 and np.all(s[:used] > 0) and not np.any(s[used:])
    assert np.all(np.diff(s[:used]) >= 0) and np.all(np.diff(s[:used]) <= 1)
    assert not np.any(t[used:]) and not np.any(p[used:])
    for segment in range(1, s.max() + 1):
      np.testing.assert_array_equal(p[s == segment], np.arange(np.sum(s == segment)))


def test_rows_hold_every_record_once_per_epoch_packed_as_pack_documents(mock_lm1b):
  source = build_source(data_config(read_threads=2), 'train')  # Grain's reader threads
  batches = take(train_iterator(source, 8), 30)
  docs, rows = stream_documents(batches)
  check_rows(rows, 16, 259)
  texts = [source.tokenizer.decode(d) for d in docs]
  first, second = texts[:NUM_RECORDS], texts[NUM_RECORDS:2 * NUM_RECORDS]
  assert sorted(first) == sorted(second) == sorted(mock_lm1b)  # nothing lost or doubled
  assert first != second  # a new order each epoch
  assert docs[0][-1] == tokenizers.EOS_ID and all(d[0] == tokenizers.BOS_ID for d in docs)
  expected = packing.stack_rows(packing.pack_documents(docs, 16))
  whole = len(expected['tokens']) - 1  # the last stream document may continue unread
  for key, value in expected.items():
    np.testing.assert_array_equal(rows[key][:whole], value[:whole])


def test_order_is_seeded(mock_lm1b):
  del mock_lm1b
  first = take(train_iterator(build_source(data_config(), 'train'), 8), 3)
  again = take(train_iterator(build_source(data_config(), 'train'), 8), 3)
  other = take(train_iterator(build_source(data_config(shuffle_seed=1), 'train'), 8), 3)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['tokens'], b['tokens'])
  assert any(not np.array_equal(a['tokens'], c['tokens']) for a, c in zip(first, other))


def test_process_shards_are_disjoint_and_cover_the_split(mock_lm1b):
  source = build_source(data_config(), 'train')
  shards = []
  for p in range(2):
    batches = take(train_iterator(source, 8, process_index=p, process_count=2), 12)
    assert batches[0]['tokens'].shape == (4, 16)
    docs, _ = stream_documents(batches)
    shards.append({source.tokenizer.decode(d) for d in docs[:NUM_RECORDS // 2]})
  assert not shards[0] & shards[1] and shards[0] | shards[1] == set(mock_lm1b)


@pytest.mark.parametrize('options', [{}, {'packing_mode': 'pad'},
                                     {'long_docs': 'truncate', 'seq_len': 12}])
def test_resume_from_a_json_state_reads_the_same_batches(mock_lm1b, options):
  del mock_lm1b
  config = data_config(**options)
  iterator = train_iterator(build_source(config, 'train'), 8)
  states, batches = [], []
  for _ in range(13):
    states.append(json.loads(json.dumps(iterator.get_state())))
    batches.append(next(iterator))
  untouched = take(train_iterator(build_source(config, 'train'), 8), 13)  # no get_state
  for a, b in zip(batches, untouched):
    np.testing.assert_array_equal(a['tokens'], b['tokens'])
  mid_document = 0
  for k in (1, 4, 5, 8, 9):
    resumed = train_iterator(build_source(config, 'train'), 8)
    resumed.set_state(states[k])
    for want, got in zip(batches[k:k + 3], take(resumed, 3)):
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert resumed.stats.documents == states[k + 3]['processes']['0']['stats']['documents']
    mid_document += states[k]['processes']['0']['doc_piece'] is not None
  if not options:
    assert mid_document  # some states fall inside a document split across rows
  with pytest.raises(ValueError, match='same number of processes'):
    train_iterator(build_source(config, 'train'), 8, process_count=2).set_state(states[1])
  old = {k: v for k, v in states[1].items() if k != 'version'}  # as the code before wrote it
  with pytest.raises(ValueError, match=r'\(the streaming TFDS reader\) is version 1 \(no '
                     'version field\\), this code reads version 2'):
    train_iterator(build_source(config, 'train'), 8).set_state(old)


def test_long_documents_are_counted_and_logged(mock_lm1b):
  del mock_lm1b
  logged = []
  source = build_source(data_config(long_docs='truncate', seq_len=12, log=logged.append),
                        'train')
  iterator = train_iterator(source, 8)
  take(iterator, 4)
  iterator.get_state()
  stats = iterator.stats
  assert stats.truncated > 0 and stats.dropped_tokens > 0 and stats.split == 0
  assert f'{stats.truncated} truncated documents, {stats.dropped_tokens} tokens dropped' in (
      logged[-1])


def test_eval_is_one_pass_in_order(mock_lm1b):
  logged = []
  source = build_source(data_config(log=logged.append), 'eval', num_examples=10)
  assert len(source) == 10 and source.seq_len == 16 and source.vocab_size == 259
  docs = tokenizers.encode_documents(source.tokenizer, mock_lm1b)  # mock splits are equal
  expected = packing.stack_rows(packing.pack_documents(docs, 16))
  batch = source.get_batch(range(10))
  for key, value in expected.items():
    np.testing.assert_array_equal(batch[key], value[:10])
  assert 'the first 10 rows' in logged[0] and 'split' in logged[0]
  whole = build_source(data_config(), 'eval')
  assert len(whole) == len(expected['tokens'])


def test_sentencepiece_is_trained_into_the_workdir_once(mock_lm1b, tmp_path):
  del mock_lm1b
  config = data_config(tokenizer='sentencepiece', vocab_size=40)
  source = resolved.source(config, 'train', workdir=str(tmp_path))
  path = tmp_path / 'tokenizer' / 'sentencepiece_40.model'
  assert source.tokenizer.model_path == str(path)
  mtime = os.path.getmtime(path)
  evaluation = resolved.source(config, 'eval', num_examples=4, workdir=str(tmp_path))
  assert os.path.getmtime(path) == mtime and evaluation.get_batch(range(4))['tokens'].max() < 40
  assert next(train_iterator(source, 4))['tokens'].max() < 40


class FixedHeadTinyCorpus(tfds.core.GeneratorBasedBuilder):
  """A prepared ArrayRecord dataset (text read back as bytes, unlike the mock)."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'sentence': tfds.features.Text(), 'label': tfds.features.Scalar(np.int64)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(40), 'test': self._generate_examples(8)}

  def _generate_examples(self, num):  # pylint: disable=arguments-differ
    for i in range(num):
      yield i, {'sentence': f'doc {i} ' * (i % 4 + 1) + 'é', 'label': i}


@pytest.fixture(name='tiny_corpus', scope='module')
def _tiny_corpus(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  FixedHeadTinyCorpus(data_dir=data_dir, file_format='array_record').download_and_prepare()
  return data_dir


def test_a_prepared_array_record_dataset(tiny_corpus):
  config = data_config(dataset='fixed_head_tiny_corpus', data_dir=tiny_corpus,
                       feature='sentence', seq_len=32)
  source = build_source(config, 'train')
  assert source.read.parses_examples  # the fast path: tf.Example bytes parsed here
  docs, rows = stream_documents(take(train_iterator(source, 4), 12))
  check_rows(rows, 32, 259)
  texts = sorted(source.tokenizer.decode(d) for d in docs[:40])
  assert texts == sorted(f'doc {i} ' * (i % 4 + 1) + 'é' for i in range(40))
  assert len(build_source(config, 'eval')) > 0


def test_errors_name_the_dataset_directory_field_and_fix(tiny_corpus, tmp_path):
  with pytest.raises(ValueError, match=r"data.dataset='lm1b' is not prepared: nothing in "
                     rf'{tmp_path}/lm1b/1.1.0.*python prepare.py lm1b '
                     rf'--data_dir={tmp_path}.*requirements-prepare.txt'):
    build_source(data_config(data_dir=str(tmp_path)), 'train')
  with pytest.raises(ValueError, match=r"data.dataset='no_such_corpus'.*knows no dataset"):
    build_source(data_config(dataset='no_such_corpus', data_dir=str(tmp_path)), 'train')
  tiny = data_config(dataset='fixed_head_tiny_corpus', data_dir=tiny_corpus, feature='sentence')
  with pytest.raises(ValueError, match=r"data.eval_split='validation'.*splits \['test', "
                     r"'train'\]"):
    build_source(dict(tiny, eval_split='validation'), 'eval')
  with pytest.raises(ValueError, match=r"data.feature='text'.*features \['label', "
                     r"'sentence'\]"):
    build_source(dict(tiny, feature='text'), 'train')
  with pytest.raises(ValueError, match=r"data.feature='label'.* not text"):
    build_source(dict(tiny, feature='label'), 'train')
  with pytest.raises(ValueError, match=r'data.vocab_size=300 does not match the byte'):
    build_source(dict(tiny, vocab_size=300), 'train')


@pytest.mark.slow
def test_training_runs_and_resumes_exactly_on_mock_lm1b(mock_lm1b, tmp_path):
  del mock_lm1b
  config = default_config.get_config()
  config.data = data_config(seq_len=32)
  del config.data['log']
  config.model.update(dict(vocab_size=259, num_layers=1, head_size=32))
  config.update(dict(num_train_steps=4, batch_size=8, log_every_steps=1, eval_every_steps=0))
  config.checkpoint.every_steps = 2
  config.evals.valid = dict(type='lm', split='eval', num_examples=8, batch_size=8)
  devices = jax.devices()[:1]
  whole = trainer.train_and_evaluate(config, str(tmp_path / 'whole'), devices=devices)
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), devices=devices, stop_after=2)
  resumed = trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), devices=devices)
  assert np.isfinite(whole['evals']['valid']['loss'])
  assert resumed['train']['loss'] == whole['train']['loss']
  assert resumed['evals']['valid']['loss'] == whole['evals']['valid']['loss']


TWO_PROCESSES = r'''
import json, sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2,
                           process_id=int(sys.argv[1]))
import numpy as np, tensorflow_datasets as tfds
from fixed_head.data import build_source, train_iterator
p = jax.process_index()
with tfds.testing.mock_data(num_examples=60):
  source = build_source(dict(name='tfds', dataset='lm1b', seq_len=16, vocab_size=259,
                             tokenizer='byte', read_threads=0, log=lambda _: None), 'train')
  iterator = train_iterator(source, 8, process_index=p, process_count=2)
  for _ in range(3 + p):  # the processes' states differ
    next(iterator)
  state = json.loads(json.dumps(iterator.get_state()))  # a collective: both call it
  want = next(iterator)['tokens']
  resumed = train_iterator(source, 8, process_index=p, process_count=2)
  resumed.set_state(state)
  print(json.dumps({'state': state, 'exact': bool(np.array_equal(next(resumed)['tokens'],
                                                                  want))}))
'''


@pytest.mark.slow
def test_with_two_processes_every_process_state_is_saved(tmp_path):
  """The trainer saves the data state from process 0 only: it must hold every process's."""
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    address = f'127.0.0.1:{s.getsockname()[1]}'
  script = tmp_path / 'two_processes.py'
  script.write_text(TWO_PROCESSES)
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}  # the script imports the installed package
  procs = [subprocess.Popen([sys.executable, str(script), str(p), address], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for p in range(2)]
  outputs = [proc.communicate(timeout=120) for proc in procs]
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-2000:]
  results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
  assert all(r['exact'] for r in results)
  assert results[0]['state'] == results[1]['state']  # what process 0 saves serves both
  states = results[0]['state']['processes']
  assert sorted(states) == ['0', '1'] and states['0'] != states['1']
