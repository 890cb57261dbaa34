"""The local-text source: reading, splitting, tokenising, packing, ordering, bad input."""

import os

import jax
import numpy as np
import pytest

from fixed_head.train import trainer
from fixed_head.data import build_source, text

import repo_configs
import resolved

default_config = repo_configs.load('default')

WORDS = 'the a cat dog sat ran on under mat log quickly slowly red blue big small'.split()


def write_corpus(directory, num_files=3, lines=40, seed=0):
  rng = np.random.default_rng(seed)
  for f in range(num_files):
    with open(directory / f'part{f}.txt', 'w', encoding='utf-8') as out:
      for _ in range(lines):
        out.write(' '.join(rng.choice(WORDS, rng.integers(2, 12))) + '\n')
  return str(directory / '*.txt')


def data_config(pattern, **kw):
  return dict(name='text', files=pattern, seq_len=32, vocab_size=259, **kw)


def test_rows_keep_every_token_and_splits_are_disjoint(tmp_path):
  pattern = write_corpus(tmp_path)
  logged = []
  config = dict(data_config(pattern, log=logged.append), seq_len=128)  # no document split
  sources = {s: build_source(config, s) for s in text.SPLITS}
  docs = text.read_documents(pattern)
  train_docs = text.split_documents(docs, 'train', 0.05, 0)
  eval_docs = text.split_documents(docs, 'eval', 0.05, 0)
  assert sorted(train_docs + eval_docs) == sorted(docs) and eval_docs
  for split, split_docs in (('train', train_docs), ('eval', eval_docs)):
    source = sources[split]
    assert source.stats.split == 0 and source.stats.documents == len(split_docs)
    rows = source.get_batch(np.arange(source.num_rows)) if split == 'eval' else source._rows
    decoded = []
    for tokens, segments in zip(rows['tokens'], rows['segment_ids']):
      for seg in range(1, segments.max() + 1):
        decoded.append(source.tokenizer.decode(tokens[segments == seg]))
    assert sorted(decoded) == sorted(split_docs)
  assert any('documents ->' in line and 'tokens dropped' in line for line in logged)


def test_train_order_is_seeded_and_covers_each_epoch(tmp_path):
  pattern = write_corpus(tmp_path)
  a = build_source(data_config(pattern, log=lambda _: None), 'train')
  b = build_source(data_config(pattern, log=lambda _: None), 'train')
  c = build_source(data_config(pattern, shuffle_seed=1, log=lambda _: None), 'train')
  r = a.num_rows
  first, second = a.row_index(np.arange(r)), a.row_index(np.arange(r, 2 * r))
  assert sorted(first) == sorted(second) == list(range(r))
  assert list(first) != list(second)  # a new order each epoch
  np.testing.assert_array_equal(first, b.row_index(np.arange(r)))
  assert list(first) != list(c.row_index(np.arange(r)))


def test_sentencepiece_vocabulary_is_trained_once_and_reused(tmp_path):
  pattern = write_corpus(tmp_path)
  model = tmp_path / 'spm' / 'vocab.model'
  os.makedirs(model.parent)
  config = data_config(pattern, tokenizer='sentencepiece', tokenizer_path=str(model),
                       log=lambda _: None)
  config['vocab_size'] = 40
  first = resolved.source(config, 'train')
  mtime = os.path.getmtime(model)
  again = resolved.source(config, 'eval')
  assert os.path.getmtime(model) == mtime and again.tokenizer.vocab_size == 40
  assert first.get_batch([0])['tokens'].max() < 40
  config['vocab_size'] = 50
  with pytest.raises(ValueError, match='vocab'):
    resolved.source(config, 'train')


def test_sentencepiece_defaults_to_the_workdir(tmp_path):
  config = data_config(write_corpus(tmp_path), tokenizer='sentencepiece', log=lambda _: None)
  config['vocab_size'] = 40
  source = resolved.source(config, 'train', workdir=str(tmp_path / 'run'))
  assert source.tokenizer.model_path == str(tmp_path / 'run' / 'tokenizer' /
                                            'sentencepiece_40.model')
  assert os.path.isfile(source.tokenizer.model_path)


def test_bad_input_names_the_path_or_field(tmp_path):
  with pytest.raises(ValueError, match=r"data.files='.*nothing\*.txt' matches no file"):
    build_source(data_config(str(tmp_path / 'nothing*.txt')), 'train')
  (tmp_path / 'bad.bin').write_bytes(b'fine line\n\xff\xfe broken\n')
  with pytest.raises(ValueError, match=r'bad.bin is not valid UTF-8 \(byte 10'):
    build_source(data_config(str(tmp_path / 'bad.bin')), 'train')
  pattern = write_corpus(tmp_path)
  with pytest.raises(ValueError, match=r'data.vocab_size=300 does not match the byte'):
    build_source(dict(data_config(pattern), vocab_size=300), 'train')
  with pytest.raises(ValueError, match="data.tokenizer_path"):  # no path and no workdir
    resolved.source(data_config(pattern, tokenizer='sentencepiece'), 'train')


@pytest.mark.slow
def test_training_runs_on_a_text_corpus(tmp_path):
  pattern = write_corpus(tmp_path)
  config = default_config.get_config()
  config.data = dict(name='text', files=pattern, seq_len=32, vocab_size=259)
  config.model.update(dict(vocab_size=259, num_layers=1, head_size=32))
  config.update(dict(num_train_steps=6, batch_size=8, log_every_steps=1, eval_every_steps=0))
  config.checkpoint.every_steps = 3
  config.evals.valid = dict(type='lm', split='eval', num_examples=8, batch_size=8)
  result = trainer.train_and_evaluate(config, str(tmp_path / 'run'), devices=jax.devices()[:1])
  assert np.isfinite(result['evals']['valid']['loss'])
  assert 'gap_to_optimal' not in result['evals']['valid']


def test_process_shards_are_disjoint_and_resume_is_exact(tmp_path):
  from fixed_head.data import IndexIterator  # pylint: disable=g-import-not-at-top
  pattern = write_corpus(tmp_path)
  source = build_source(data_config(pattern, log=lambda _: None), 'train')
  shards = [IndexIterator(source, 8, process_index=p, process_count=2) for p in range(2)]
  whole = IndexIterator(source, 8)
  for _ in range(source.num_rows // 8 + 3):  # past the end of an epoch
    parts = [next(it)['tokens'] for it in shards]
    np.testing.assert_array_equal(np.concatenate(parts), next(whole)['tokens'])
  state = whole.get_state()
  expected = [next(whole)['tokens'] for _ in range(3)]
  resumed = IndexIterator(source, 8)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)['tokens'], want)
