"""Byte and SentencePiece tokenizers: round trips, saved-model reuse, errors, atomic writes."""

import os
import random

import pytest

from fixed_head.data import tokenizers, vocab
from fixed_head.errors import UsageError
from fixed_head.data.tokenizers import ByteTokenizer, SentencePieceTokenizer, encode_documents

VOCAB = 120


def _corpus(num=300, seed=0):
  rng = random.Random(seed)
  subjects = ['the cat', 'a dog', 'my friend', 'the teacher', 'an old man', 'la niña',
              'der Vogel', 'el niño', 'our neighbours', 'the committee']
  verbs = ['eats', 'sees', 'likes', 'reads', 'writes about', 'runs to', 'sings for', 'paints',
           'forgets', 'remembers']
  objects = ['the apple', 'a book', 'the river', 'green fields', 'über Brücken', 'café crème',
             'the moon', 'stars', 'a long letter', 'the harbour']
  return [f'{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} '
          f'{rng.randint(0, 999)} times.' for _ in range(num)]


@pytest.fixture(scope='module')
def sp_model(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('sp') / 'spm.model')
  return SentencePieceTokenizer.train(_corpus(), path, VOCAB)


def test_byte_round_trip_with_non_ascii():
  tok = ByteTokenizer()
  text = 'héllo, wörld — 日本語 ☃ \n\t end'
  ids = tok.encode(text)
  assert len(ids) == len(text.encode('utf-8'))
  assert min(ids) >= 3 and max(ids) < 259 == tok.vocab_size
  assert tok.encode('A') == [ord('A') + 3]
  assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id, tok.pad_id]) == text
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.decode([]) == '' and tok.encode('') == []


def test_byte_vocab_too_small_is_refused():
  with pytest.raises(ValueError, match='vocab_size=100 is too small'):
    ByteTokenizer(100)


def test_sentencepiece_round_trip_and_specials(sp_model):
  tok = sp_model
  assert tok.vocab_size == VOCAB
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
  for text in _corpus(20, seed=1) + ['über Brücken café crème']:
    ids = tok.encode(text)
    assert ids and all(4 <= i < VOCAB for i in ids)  # No unk: every character was seen.
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == text
  # Characters not in the training text are unk (lossy), not an error.
  assert tok.unk_id in tok.encode('café!')
  # Encoding is more compact than bytes on in-domain text.
  text = ' '.join(_corpus(5, seed=2))
  assert len(tok.encode(text)) < 0.75 * len(text.encode('utf-8'))


def test_sentencepiece_training_is_deterministic(sp_model, tmp_path):
  again = SentencePieceTokenizer.train(iter(_corpus()), str(tmp_path / 'again.model'), VOCAB)
  with open(sp_model.model_path, 'rb') as a, open(again.model_path, 'rb') as b:
    assert a.read() == b.read()


def test_train_uses_a_bounded_sample(tmp_path):
  def endless():
    rng = random.Random(0)
    while True:
      yield rng.choice(_corpus(50))

  tok = SentencePieceTokenizer.train(endless(), str(tmp_path / 'b.model'), 60,
                                     max_sentences=200)
  assert tok.vocab_size == 60


def test_load_or_train_reuses_the_saved_model(tmp_path, monkeypatch):
  path = str(tmp_path / 'sub' / 'reuse.model')
  calls = []

  def texts_fn():
    calls.append(1)
    return _corpus()

  first = vocab.sentencepiece(VOCAB, model_path=path, texts_fn=texts_fn)
  assert calls == [1] and os.path.isfile(path)
  mtime = os.stat(path).st_mtime_ns

  def no_training(*args, **kwargs):
    raise AssertionError('load_or_train retrained an existing model')

  monkeypatch.setattr(SentencePieceTokenizer, 'train', no_training)
  second = vocab.sentencepiece(VOCAB, model_path=path, texts_fn=texts_fn)
  assert calls == [1] and os.stat(path).st_mtime_ns == mtime
  text = 'the cat reads a book 7 times.'
  assert second.encode(text) == first.encode(text)
  # The same through the run's resolver.
  assert vocab.for_data({'name': 'text', 'files': '', 'tokenizer': 'sentencepiece',
                         'tokenizer_path': path, 'vocab_size': VOCAB}).vocab_size == VOCAB


def test_vocab_mismatch_error_names_path_sizes_and_field(sp_model):
  with pytest.raises(ValueError) as info:
    vocab.sentencepiece(VOCAB + 8, model_path=sp_model.model_path, texts_fn=_corpus)
  message = str(info.value)
  assert sp_model.model_path in message
  assert str(VOCAB) in message and str(VOCAB + 8) in message
  assert 'data.vocab_size' in message


def test_missing_model_error_names_the_path(tmp_path):
  path = str(tmp_path / 'nope.model')
  with pytest.raises(UsageError, match="nope.model"):
    SentencePieceTokenizer.load(path)
  with pytest.raises(UsageError, match="nope.model"):
    vocab.sentencepiece(VOCAB, model_path=path)


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
  path = tmp_path / 'atomic.model'
  replaced = []
  real_replace = os.replace

  def spy_replace(src, dst):
    replaced.append((os.path.dirname(src), os.path.exists(dst)))
    real_replace(src, dst)

  monkeypatch.setattr(tokenizers.os, 'replace', spy_replace)
  SentencePieceTokenizer.train(_corpus(100), str(path), 60)
  assert replaced == [(str(tmp_path), False)]  # Temp file in the same directory.
  assert os.listdir(tmp_path) == ['atomic.model']


def test_failed_training_writes_nothing(tmp_path):
  path = tmp_path / 'big.model'
  with pytest.raises(ValueError, match='data.vocab_size=5000'):
    SentencePieceTokenizer.train(_corpus(50), str(path), 5000)
  with pytest.raises(ValueError, match='No non-empty text'):
    SentencePieceTokenizer.train(['', '  '], str(path), 60)
  assert os.listdir(tmp_path) == []


def test_encode_documents_adds_bos_and_eos():
  tok = ByteTokenizer()
  assert list(encode_documents(tok, ['ab', ''])) == [[1, 100, 101, 2], [1, 2]]
  assert list(encode_documents(tok, ['ab'], add_bos=False, add_eos=False)) == [[100, 101]]


def test_unknown_kind_is_refused():
  with pytest.raises(ValueError, match="kind='wordpiece' is not one of"):
    vocab.for_data({'name': 'text', 'files': '', 'tokenizer': 'wordpiece', 'vocab_size': VOCAB})
