"""The run's tokenizer (fixed_head/data/vocab.py): resolved once, recorded in the workdir,
refused on resume when its file changed, never trained by an evaluation; build_source maps
only argument errors to UsageError."""

import json
import os

import jax
import pytest

from fixed_head import data as data_lib
from fixed_head import files
from fixed_head.data import vocab
from fixed_head.errors import UsageError
from fixed_head.train import trainer

import repo_configs
from test_text_source import write_corpus

default_config = repo_configs.load('default')


def text_config(pattern, **data):
  config = default_config.get_config()
  config.data = dict(name='text', files=pattern, seq_len=32, vocab_size=40,
                     tokenizer='sentencepiece', **data)
  config.model.update(dict(vocab_size=40, num_layers=1, head_size=32))
  config.update(dict(num_train_steps=4, batch_size=8, log_every_steps=2, eval_every_steps=0))
  config.checkpoint.every_steps = 2
  config.evals.valid = dict(type='lm', split='eval', num_examples=8, batch_size=8)
  return config


@pytest.mark.slow
def test_the_run_records_its_tokenizer_and_refuses_another_on_resume(tmp_path):
  config = text_config(write_corpus(tmp_path))
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1], stop_after=2)
  model = os.path.join(workdir, 'tokenizer', 'sentencepiece_40.model')
  with open(os.path.join(workdir, vocab.RECORD), encoding='utf-8') as f:
    record = json.load(f)
  assert record == {'kind': 'sentencepiece', 'path': model, 'vocab_size': 40,
                    'sha256': files.sha256(model)}
  # Another model in its place (trained on fewer sentences): the resumed run is refused.
  os.remove(model)
  vocab.sentencepiece(40, model_path=model, max_sentences=20,
                      texts_fn=lambda: data_lib.train_texts(config.data))
  assert files.sha256(model) != record['sha256']
  with pytest.raises(UsageError, match=r'tokenizer.json: this run was trained with the '
                     r'sentencepiece tokenizer .* now reads .*restore that file'):
    trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  with pytest.raises(UsageError, match=r'tokenizer.json: this run was trained with'):
    trainer.evaluate(None, workdir, devices=jax.devices()[:1])
  # No model at all: an evaluation trains none and says what to do, in one line.
  os.remove(model)
  with pytest.raises(UsageError, match=r'^SentencePiece model .* does not exist and '
                     r'evaluation trains none: evaluate the workdir') as info:
    trainer.evaluate(None, workdir, devices=jax.devices()[:1])
  assert '\n' not in str(info.value) and not os.path.exists(model)


def test_synthetic_data_has_no_tokenizer_and_no_record(tmp_path):
  config = default_config.get_config()
  assert vocab.for_run(config, str(tmp_path)) is None
  vocab.record(str(tmp_path), None)
  assert not os.listdir(tmp_path)


def test_wordpiece_keeps_a_copy_in_every_workdir(tmp_path):
  from test_wordpiece import corpus  # pylint: disable=g-import-not-at-top
  (tmp_path / 'corpus.txt').write_text('\n\n'.join(corpus(60)))
  data = dict(name='bert_pretraining', files=str(tmp_path / 'corpus.txt'), vocab_size=120,
              seq_len=24, max_predictions_per_seq=4, eval_fraction=0.2)
  first = vocab.for_data(data, workdir=str(tmp_path / 'pretrain'), log=lambda _: None)
  finetune = vocab.for_data(data, workdir=str(tmp_path / 'finetune'),
                            init_from=str(tmp_path / 'pretrain'))
  assert finetune.path == str(tmp_path / 'pretrain' / 'vocab.txt')
  # Resolving it writes nothing: a run refused after this (its data missing, say) leaves its
  # new workdir as it was. The run keeps its copy when it starts (record).
  assert not (tmp_path / 'finetune').exists()
  vocab.record(str(tmp_path / 'finetune'), finetune)
  copy = tmp_path / 'finetune' / 'vocab.txt'
  assert copy.read_bytes() == (tmp_path / 'pretrain' / 'vocab.txt').read_bytes()
  assert vocab.describe(first)['sha256'] == files.sha256(str(copy))
  with pytest.raises(UsageError, match=r'does not exist and evaluation trains no vocabulary'):
    vocab.for_data(data, workdir=str(tmp_path / 'other'), train=False)


class _Broken:
  """A source whose constructor has a bug."""

  def __init__(self, *, split, num_examples=None, seq_len=8):
    del split, num_examples, seq_len
    raise TypeError('a bug inside the source')


def test_build_source_maps_only_argument_errors(monkeypatch):
  monkeypatch.setitem(data_lib.SOURCES, 'broken', data_lib.Source(_Broken))
  with pytest.raises(UsageError, match=r"^data options for data.name='broken': .*'colour'"):
    data_lib.build_source({'name': 'broken', 'colour': 1}, 'train')
  with pytest.raises(TypeError, match='a bug inside the source'):
    data_lib.build_source({'name': 'broken', 'seq_len': 4}, 'train')
