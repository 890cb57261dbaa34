"""fixed_head/files.py: whole files or nothing, with the permissions open() would give."""

import os
import stat

import pytest

from fixed_head import files


def test_written_files_get_the_usual_permissions_not_mkstemps(tmp_path):
  path = tmp_path / 'config.json'
  files.write_atomically(str(path), '{"a": 1}\n')
  assert path.read_text() == '{"a": 1}\n'
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~files._UMASK  # pylint: disable=protected-access
  with open(tmp_path / 'plain', 'w') as f:
    f.write('x')
  assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(tmp_path / 'plain').st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'metrics.json'
  files.write_atomically(str(path), b'old')

  class Unwritable:  # neither str nor bytes: fails inside the write
    pass

  with pytest.raises(TypeError):
    files.write_atomically(str(path), Unwritable())
  assert path.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['metrics.json']


# --- the same functions on gs://, against a local GCS JSON API ---------------------------

import gcs_emulator  # pylint: disable=g-import-not-at-top,wrong-import-position
from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def bucket():
  with gcs_emulator.running('fixed-head-files'):
    yield 'gs://fixed-head-files'


def test_paths_and_urls():
  assert files.is_url('gs://b/run') and not files.is_url('/tmp/run')
  assert files.absolute('gs://b/run/') == 'gs://b/run'
  assert files.absolute('~/run') == os.path.join(os.path.expanduser('~'), 'run')
  assert files.bucket('gs://b/run/checkpoints/3') == 'gs://b'
  assert files.join('gs://b/run', 'eval', 'step_3.json') == 'gs://b/run/eval/step_3.json'


def test_a_whole_object_is_written_and_a_failed_write_keeps_the_old_one(bucket):
  path = f'{bucket}/run/config.json'
  files.write_atomically(path, '{"a": 1}\n')
  assert files.read_text(path) == '{"a": 1}\n' and files.exists(path)

  class Unwritable:
    pass

  with pytest.raises(TypeError):
    files.write_atomically(path, Unwritable())
  assert files.read_bytes(path) == b'{"a": 1}\n'


@pytest.mark.parametrize('where', ['local', 'gs'])
def test_line_log_keeps_every_line_across_flushes_and_reopening(where, bucket, tmp_path):
  """gcsfs opens 'a' as 'w' (appends do not exist on GCS): a naive append would keep only
  the last flush."""
  path = str(tmp_path / 'metrics.jsonl') if where == 'local' else f'{bucket}/log/metrics.jsonl'
  log = files.LineLog(path)
  log.write('{"step": 1}')
  log.flush()
  log.write('{"step": 2}\n')
  log.flush()
  assert files.read_text(path) == '{"step": 1}\n{"step": 2}\n'
  log.write('{"step": 3}')
  log.close()
  again = files.LineLog(path)
  again.write('{"step": 4}')
  again.close()
  assert files.read_text(path).splitlines() == [f'{{"step": {i}}}' for i in (1, 2, 3, 4)]


@pytest.mark.parametrize('where', ['local', 'gs'])
def test_move_tree_moves_every_file_and_leaves_no_source(where, bucket, tmp_path):
  root = str(tmp_path) if where == 'local' else f'{bucket}/tree'
  source, target = files.join(root, 'checkpoints', '12'), files.join(root, 'aside', '12-x')
  for name in ('_CHECKPOINT_METADATA', 'params/manifest.ocdbt', 'params/d/abc'):
    files.make_dirs(os.path.dirname(files.join(source, name)))
    files.write_atomically(files.join(source, name), name)
  files.make_dirs(os.path.dirname(target))
  files.move_tree(source, target)
  assert sorted(files.files_under(target)) == ['_CHECKPOINT_METADATA', 'params/d/abc',
                                               'params/manifest.ocdbt']
  assert files.read_text(files.join(target, 'params/d/abc')) == 'params/d/abc'
  assert not epath.Path(source).exists()


def test_the_tokenizers_a_run_trains_are_kept_in_a_bucket_workdir(bucket):
  """SentencePiece and WordPiece, trained on first use into a gs:// workdir, then read back
  from it by the resumed run without training again."""
  from fixed_head.data import vocab  # pylint: disable=g-import-not-at-top
  from test_tokenizers import VOCAB, _corpus  # pylint: disable=g-import-not-at-top
  from test_wordpiece import corpus  # pylint: disable=g-import-not-at-top
  texts = _corpus() + corpus(100)
  calls = []

  def texts_fn():
    calls.append(1)
    return iter(texts)

  workdir = f'{bucket}/tokenized'
  sp = vocab.sentencepiece(VOCAB, workdir=workdir, texts_fn=texts_fn)
  assert sp.model_path == f'{workdir}/tokenizer/sentencepiece_{VOCAB}.model'
  again = vocab.sentencepiece(VOCAB, workdir=workdir, texts_fn=texts_fn)
  assert calls == [1] and again.encode(texts[3]) == sp.encode(texts[3])
  wp = vocab.wordpiece_vocab(vocab=None, vocab_size=300, workdir=workdir, init_from=None,
                             texts_fn=texts_fn, log=lambda _: None)
  assert files.exists(f'{workdir}/vocab.txt') and calls == [1, 1]
  resumed = vocab.wordpiece_vocab(vocab=None, vocab_size=300, workdir=workdir,
                                  init_from=None, texts_fn=texts_fn, log=lambda _: None)
  assert resumed.vocab == wp.vocab and resumed.path == f'{workdir}/vocab.txt' and calls == [1, 1]
