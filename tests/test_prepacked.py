"""The pre-packed copy of a TFDS split (fixed_head/data/prepacked.py) on ArrayRecord files
written by TFDS: rows equal to the packer's, metadata, refusals, shards, exact resume, a
killed preparation, the CLI."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fixed_head import files
from fixed_head.data import build_source, order, packing, prepacked, train_iterator
from fixed_head.errors import UsageError

import cli
import resolved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_RECORDS = 300
ROWS_PER_FILE = 64


class FixedHeadPrepackCorpus(tfds.core.GeneratorBasedBuilder):
  """Sentences of 8-70 bytes (some longer than a row of 32: split), one with no text."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'text': tfds.features.Text(), 'label': tfds.features.Scalar(np.int64)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(NUM_RECORDS), 'test': self._generate_examples(8)}

  def _generate_examples(self, num):  # pylint: disable=arguments-differ
    for i in range(num):
      text = f'doc {i} ' + 'word ' * (i % 13) + ('é' if i % 5 == 0 else '')
      yield i, {'text': text, 'label': i}


@pytest.fixture(name='corpus', scope='module')
def _corpus(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  FixedHeadPrepackCorpus(data_dir=data_dir, file_format='array_record').download_and_prepare()
  return data_dir


def data_config(corpus, **kw):
  return {'name': 'tfds', 'dataset': 'fixed_head_prepack_corpus', 'data_dir': corpus,
          'feature': 'text', 'seq_len': 32, 'vocab_size': 259, 'tokenizer': 'byte',
          'read_threads': 0, 'log': lambda _: None, **kw}


def prepare(config, directory, *, workdir=None, rows_per_file=ROWS_PER_FILE):
  source = resolved.source(dict(config, prepacked_dir=''), 'train', workdir=workdir)
  return prepacked.prepare(source, str(directory), rows_per_file=rows_per_file,
                           log=lambda _: None)


@pytest.fixture(name='packed', scope='module')
def _packed(corpus, tmp_path_factory):
  directory = tmp_path_factory.mktemp('packed')
  return str(directory), prepare(data_config(corpus), directory)


def read_all(config, directory):
  source = build_source(dict(config, prepacked_dir=directory), 'train')
  return source, source.prepacked.read(np.arange(len(source.prepacked)))


def file_bytes(directory):
  return {name: open(os.path.join(directory, name), 'rb').read()
          for name in sorted(os.listdir(directory))}


@pytest.mark.parametrize('options', [{}, {'packing_mode': 'pad'},
                                     {'long_docs': 'truncate', 'seq_len': 20}])
def test_rows_equal_the_packers_in_stored_order(corpus, packed, tmp_path, options):
  config = data_config(corpus, **options)
  directory = packed[0] if not options else str(tmp_path)
  if options:
    prepare(config, directory, rows_per_file=7)
  source, rows = read_all(config, directory)
  streaming = build_source(config, 'train')  # the current path: one pass in stored order
  held = streaming.get_batch(range(len(streaming)))
  documents = streaming.read(np.arange(NUM_RECORDS))
  pack = packing.pad_documents if options.get('packing_mode') == 'pad' else packing.pack_documents
  expected = packing.stack_rows(pack(documents, config['seq_len'],
                                     long_docs=options.get('long_docs', 'split')))
  assert len(source) == len(expected['tokens']) == len(held['tokens'])
  for key, value in expected.items():
    assert rows[key].dtype == np.int32
    np.testing.assert_array_equal(rows[key], value)
    np.testing.assert_array_equal(held[key], value)
  np.testing.assert_array_equal(source.get_batch([3, 1])['tokens'], expected['tokens'][[3, 1]])


def test_metadata(corpus, packed):
  directory, metadata = packed
  with open(os.path.join(directory, prepacked.METADATA), encoding='utf-8') as f:
    assert json.load(f) == metadata
  expected_stats = build_source(data_config(corpus), 'train')
  len(expected_stats)  # packs the split once
  assert metadata['stats'] == {**vars(expected_stats.stats), 'fill': expected_stats.stats.fill}
  assert metadata['stats']['split'] > 0 and metadata['stats']['documents'] == NUM_RECORDS
  rows = metadata['rows']
  assert {k: metadata[k] for k in ('dataset', 'split', 'feature', 'seq_len', 'packing_mode',
                                   'long_docs', 'tokenizer', 'vocab_size', 'tokenizer_sha256',
                                   'records', 'format_version', 'rows_per_file')} == {
      'dataset': 'fixed_head_prepack_corpus', 'split': 'train', 'feature': 'text',
      'seq_len': 32, 'packing_mode': 'pack', 'long_docs': 'split', 'tokenizer': 'byte',
      'vocab_size': 259, 'tokenizer_sha256': None, 'records': NUM_RECORDS,
      'format_version': prepacked.FORMAT_VERSION, 'rows_per_file': ROWS_PER_FILE}
  assert rows == metadata['stats']['rows'] and rows > 2 * ROWS_PER_FILE
  assert [e['rows'] for e in metadata['files']] == (
      [ROWS_PER_FILE] * (rows // ROWS_PER_FILE) + [rows % ROWS_PER_FILE])
  assert metadata['record'] == {'tokens': '<u2', 'bytes': 32 * 3,
                                'segments': metadata['record']['segments']}
  assert sorted(os.listdir(directory)) == sorted(
      [prepacked.METADATA] + [e['name'] for e in metadata['files']])


def test_the_same_config_gives_byte_identical_files(corpus, packed, tmp_path):
  prepare(data_config(corpus, read_threads=2), tmp_path)  # reader threads change nothing
  assert file_bytes(str(tmp_path)) == file_bytes(packed[0])
  logged = []  # a finished copy is left alone
  source = build_source(data_config(corpus), 'train')
  prepacked.prepare(source, str(tmp_path), log=logged.append)
  assert 'already prepared' in logged[0]


def test_segments_and_positions_come_back_from_one_byte(corpus):
  del corpus
  rows = packing.stack_rows(packing.pack_documents(
      [np.arange(1, 3, dtype=np.int32)] * 300 + [np.arange(5, dtype=np.int32)], 700))
  assert rows['segment_ids'].max() == 301  # past 255: the stored byte wraps
  records = [prepacked.encode_row({k: v[i] for k, v in rows.items()}, np.dtype('<i4'))
             for i in range(len(rows['tokens']))]
  back = prepacked.decode_rows(records, 700, np.dtype('<i4'))
  for key, value in rows.items():
    np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize('change, field', [
    ({'seq_len': 24}, 'data.seq_len=24'),
    ({'packing_mode': 'pad'}, "data.packing_mode='pad'"),
    ({'long_docs': 'truncate'}, "data.long_docs='truncate'"),
    ({'train_split': 'train[:50%]'}, "data.train_split='train[:50%]'"),
    ({'dataset': 'lm1b'}, "data.dataset='lm1b'"),
    ({'feature': 'label'}, "data.feature='label'"),
    ({'tokenizer': 'sentencepiece', 'vocab_size': 40}, "data.tokenizer='sentencepiece'"),
])
def test_a_copy_made_otherwise_is_refused(corpus, packed, change, field, tmp_path):
  with pytest.raises(UsageError, match=rf'^{re.escape(field)}, but data.prepacked_dir=.* was '
                     r'made with .*; set data\..*, or prepare a copy for this config'):
    # the run's tokenizer first (a SentencePiece model is trained into the workdir)
    resolved.source(dict(data_config(corpus, **change), prepacked_dir=packed[0]), 'train',
                    workdir=str(tmp_path))


def test_another_tokenizer_or_changed_records_are_refused(corpus, tmp_path):
  config = data_config(corpus, tokenizer='sentencepiece', vocab_size=40)
  directory = str(tmp_path / 'packed')
  metadata = prepare(config, directory, workdir=str(tmp_path / 'a'))
  model = tmp_path / 'a' / 'tokenizer' / 'sentencepiece_40.model'
  assert metadata['tokenizer_sha256'] == files.sha256(str(model))
  assert metadata['tokenizer_path'] == str(model)
  resolved.source(dict(config, prepacked_dir=directory), 'train', workdir=str(tmp_path / 'a'))
  with pytest.raises(UsageError, match=r'was made with another tokenizer_path \(SentencePiece '
                     r'model sha256 [0-9a-f]{64}\).*set data.tokenizer_path to the model'):
    resolved.source(dict(config, prepacked_dir=directory, tokenizer_max_sentences=50), 'train',
                    workdir=str(tmp_path / 'b'))  # trains another model on fewer sentences
  with open(os.path.join(directory, prepacked.METADATA), encoding='utf-8') as f:
    saved = json.load(f)
  saved['records'] = NUM_RECORDS + 1
  with open(os.path.join(directory, prepacked.METADATA), 'w', encoding='utf-8') as f:
    json.dump(saved, f)
  with pytest.raises(UsageError, match=rf'made from {NUM_RECORDS + 1} records of '
                     rf'data.train_split, which now has {NUM_RECORDS}: the dataset changed'):
    resolved.source(dict(config, prepacked_dir=directory), 'train', workdir=str(tmp_path / 'a'))


def test_missing_unfinished_old_or_damaged_copies_are_refused(corpus, packed, tmp_path):
  config = data_config(corpus)
  with pytest.raises(UsageError, match=r'holds no pre-packed copy \(no metadata.json\); make '
                     r'it with `python prepack.py'):
    build_source(dict(config, prepacked_dir=str(tmp_path)), 'train')
  copy_dir = tmp_path / 'copy'
  copy_dir.mkdir()
  for name, data in file_bytes(packed[0]).items():
    (copy_dir / name).write_bytes(data)
  (copy_dir / packed[1]['files'][1]['name']).write_bytes(b'short')
  with pytest.raises(UsageError, match=r'rows-00001.array_record is 5 bytes, not the'):
    build_source(dict(config, prepacked_dir=str(copy_dir)), 'train')
  metadata = dict(packed[1], format_version=0)
  (copy_dir / prepacked.METADATA).write_text(json.dumps(metadata))
  with pytest.raises(UsageError, match=r'is format version 0, this code reads 1'):
    build_source(dict(config, prepacked_dir=str(copy_dir)), 'train')


def test_two_processes_read_halves_of_the_global_batches_every_row_once_an_epoch(corpus,
                                                                                 packed):
  source = build_source(dict(data_config(corpus), prepacked_dir=packed[0]), 'train')
  num_rows = len(source)
  stream = order.EpochOrder(num_rows, 0)  # the one train order of the copy's rows
  steps = 2 * num_rows // 8 + 1
  halves = []
  for p in range(2):
    indices = prepacked.BatchIndices(num_rows, 4, seed=0, process_index=p, process_count=2)
    iterator = train_iterator(source, 8, process_index=p, process_count=2)
    for k in range(steps):  # process p reads rows [8k + 4p, 8k + 4p + 4) of the stream
      want_rows = stream.take(8 * k + 4 * p + np.arange(4))
      np.testing.assert_array_equal(indices[k], want_rows)
      batch, want = next(iterator), source.prepacked.read(want_rows)
      for key in want:
        np.testing.assert_array_equal(batch[key], want[key])
    halves.append(np.concatenate([indices[k] for k in range(steps)]))
  together = np.stack([h.reshape(steps, 4) for h in halves], 1).reshape(-1)
  first, second = together[:num_rows], together[num_rows:2 * num_rows]
  assert sorted(first) == sorted(second) == list(range(num_rows))  # every row once an epoch
  assert not np.array_equal(first, second)  # a new order each epoch
  np.testing.assert_array_equal(first, order.permutation(num_rows, 0, 0))
  other = prepacked.BatchIndices(num_rows, 4, seed=1, process_index=0, process_count=2)
  assert not np.array_equal(other[0], halves[0][:4])  # seeded


@pytest.mark.parametrize('threads', [0, 2])
def test_resume_from_a_json_state_reads_the_same_batches(corpus, packed, threads):
  config = dict(data_config(corpus, read_threads=threads), prepacked_dir=packed[0])
  source = build_source(config, 'train')
  iterator = train_iterator(source, 32)
  states, batches = [], []
  for _ in range(40):  # about 2.5 epochs of rows: batches span epochs
    states.append(json.loads(json.dumps(iterator.get_state())))
    batches.append(next(iterator))
  for k in (0, 1, 15, 16, 33):
    resumed = train_iterator(build_source(config, 'train'), 32)
    resumed.set_state(states[k])
    for want, got in zip(batches[k:k + 4], [next(resumed) for _ in range(4)]):
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])
  with pytest.raises(UsageError, match='same number of processes'):
    train_iterator(source, 32, process_count=2).set_state(states[1])
  with pytest.raises(UsageError, match=r"written by the streaming reader \(data.prepacked_dir="
                     r"''\)"):
    iterator.set_state({'process_count': 1, 'processes': {'0': {}}})
  with pytest.raises(UsageError, match=r'written reading a pre-packed copy'):
    train_iterator(build_source(data_config(corpus), 'train'), 32).set_state(states[1])
  with pytest.raises(UsageError, match=r'for a pre-packed copy of 5 rows'):
    iterator.set_state(dict(states[1], prepacked_rows=5))
  old = {k: v for k, v in states[1].items() if k != 'version'}  # as the code before wrote it
  with pytest.raises(UsageError, match=r'\(the pre-packed copy reader\) is version 1'):
    iterator.set_state(old)


@pytest.mark.slow
def test_training_reads_the_copy_and_resumes_exactly(corpus, packed, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  import repo_configs  # pylint: disable=g-import-not-at-top
  from fixed_head.train import trainer  # pylint: disable=g-import-not-at-top
  config = repo_configs.load('default').get_config()
  config.data = dict(data_config(corpus), prepacked_dir=packed[0])
  del config.data['log']
  config.model.update(dict(vocab_size=259, num_layers=1, head_size=32))
  config.update(dict(num_train_steps=4, batch_size=8, log_every_steps=1, eval_every_steps=0))
  config.checkpoint.every_steps = 2
  config.evals.valid = dict(type='lm', split='eval', num_examples=8, batch_size=8)
  devices = jax.devices()[:1]
  whole = trainer.train_and_evaluate(config, str(tmp_path / 'whole'), devices=devices)
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), devices=devices, stop_after=2)
  resumed = trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), devices=devices)
  assert np.isfinite(whole['train']['loss'])
  assert resumed['train']['loss'] == whole['train']['loss']
  assert resumed['evals']['valid']['loss'] == whole['evals']['valid']['loss']


class Killed(Exception):
  pass


def test_a_killed_preparation_looks_unfinished_and_a_rerun_completes(corpus, packed, tmp_path,
                                                                    monkeypatch):
  config = data_config(corpus)
  encode, calls = prepacked.encode_row, [0]

  def dies_midway(row, dtype):
    calls[0] += 1
    if calls[0] == 2 * ROWS_PER_FILE + 10:  # inside the third file
      raise Killed()
    return encode(row, dtype)

  monkeypatch.setattr(prepacked, 'encode_row', dies_midway)
  with pytest.raises(Killed):
    prepare(config, tmp_path)
  left = sorted(os.listdir(tmp_path))
  assert left == [prepacked.PROGRESS, 'rows-00000.array_record', 'rows-00001.array_record']
  with pytest.raises(UsageError, match=r'holds a copy not finished yet \(no metadata.json\); '
                     'finish it with'):
    build_source(dict(config, prepacked_dir=str(tmp_path)), 'train')
  first = os.stat(tmp_path / 'rows-00000.array_record')
  calls[0] = -10**9  # dies no more
  (tmp_path / 'rows-00002.array_record').write_bytes(b'left by a kill after its rename')
  (tmp_path / 'metadata.json.x1y2.tmp').write_bytes(b'left by a kill inside its write')
  prepare(config, tmp_path)
  assert file_bytes(str(tmp_path)) == file_bytes(packed[0])
  assert os.stat(tmp_path / 'rows-00000.array_record').st_mtime_ns == first.st_mtime_ns
  assert calls[0] == -10**9 + packed[1]['rows'] - 2 * ROWS_PER_FILE  # only the rest written

  other = tmp_path / 'other'  # killed inside its first file: nothing but its directory
  calls[0] = 0
  with pytest.raises(Killed):
    prepare(config, other, rows_per_file=10**6)
  assert os.listdir(other) == []

  half = tmp_path / 'half'  # an unfinished copy is resumed only by the same config
  calls[0] = ROWS_PER_FILE + 5  # dies inside the second file
  with pytest.raises(Killed):
    prepare(config, half)
  with pytest.raises(UsageError, match=r'^data.seq_len=24, but .* was made with seq_len=32; .*'
                     r'\(It holds an unfinished copy: delete the directory to start over.\)$'):
    prepare(data_config(corpus, seq_len=24), half)


def test_preparation_mistakes_are_usage_errors(corpus, packed, tmp_path):
  config = data_config(corpus)
  with pytest.raises(UsageError, match=r"^data.prepacked_dir='': set "
                     r'--config.data.prepacked_dir=DIR'):
    prepare(config, '')
  with pytest.raises(UsageError, match=r'--rows_per_file=0: must be a positive integer'):
    prepare(config, tmp_path, rows_per_file=0)
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(UsageError, match=r'holds other files \(notes.txt\); choose a new or '
                     'empty directory'):
    prepare(config, tmp_path)
  assert os.listdir(tmp_path) == ['notes.txt']
  with pytest.raises(UsageError, match=r'^data.seq_len=24, but data.prepacked_dir=.* was made '
                     r'with seq_len=32'):
    prepare(data_config(corpus, seq_len=24), packed[0])
  (tmp_path / 'file').write_text('')
  with pytest.raises(UsageError, match=r'is a file; choose a directory'):
    prepare(config, tmp_path / 'file')


def run_cli(*args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, 'prepack.py', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
def test_the_cli_prepares_once_and_mistakes_are_one_line_exit_2(corpus, packed, tmp_path):
  args = ['--config=configs/lm1b.py:fixed', f'--workdir={tmp_path / "run"}',
          '--config.data.dataset=fixed_head_prepack_corpus', f'--config.data.data_dir={corpus}',
          '--config.data.tokenizer=byte', '--config.data.vocab_size=259',
          '--config.data.seq_len=32']
  done = cli.run('prepack.py', *args)  # mistakes in this process, the real run in its own
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip() == ("error: data.prepacked_dir='': set "
                                 '--config.data.prepacked_dir=DIR, the directory the pre-packed '
                                 'copy is written to.')
  done = run_cli(*args, f'--config.data.prepacked_dir={tmp_path / "packed"}',
                 f'--rows_per_file={ROWS_PER_FILE}')
  assert done.returncode == 0, done.stderr
  assert f'{NUM_RECORDS} documents -> {packed[1]["rows"]} rows of 32 tokens' in done.stdout
  assert file_bytes(str(tmp_path / 'packed')) == file_bytes(packed[0])
  done = cli.run('prepack.py', '--config=configs/default.py', f'--workdir={tmp_path / "run"}')
  assert done.returncode == 2 and done.stderr.count('\n') == 1
  assert "data.name='synthetic': pre-packed copies are made of data.name='tfds'" in done.stderr


def test_eval_keeps_its_own_path(corpus):
  config = dict(data_config(corpus), prepacked_dir='/nonexistent/prepacked')
  with pytest.raises(UsageError, match='holds no pre-packed copy'):
    build_source(config, 'train')
  assert build_source(config, 'eval').prepacked is None and len(build_source(config, 'eval'))


def test_a_prepacked_dir_in_a_bucket_is_refused_in_one_line(corpus):
  with pytest.raises(UsageError, match=r"^data.prepacked_dir='gs://b/packed': the pre-packed "
                     r'copy is read with the local file API; copy it to a local disk'):
    build_source(dict(data_config(corpus), prepacked_dir='gs://b/packed'), 'train')
