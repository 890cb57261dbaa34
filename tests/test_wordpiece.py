"""WordPiece: BERT's basic and greedy tokenisation on a Google-layout vocab.txt, training a
vocabulary with SentencePiece, and which vocabulary a run uses."""

import os
import random

import pytest

from fixed_head.data import vocab, wordpiece
from fixed_head.data.wordpiece import WordPieceTokenizer
from fixed_head.errors import UsageError

WORDS = ['un', '##aff', '##able', 'hello', 'world', ',', '!', 'want', '##ed', 'wa', 'runn',
         '##ing', '.', "'", 'don', 't', 'a', '##b', '##c', '日', '本']


def google_vocab(tmp_path, words=WORDS, drop=()):
  """A vocab.txt laid out like Google's: [PAD]=0, [unusedN], [UNK]=100, [CLS]=101, [SEP]=102,
  [MASK]=103, then words."""
  tokens = ['[PAD]'] + [f'[unused{i}]' for i in range(99)] + ['[UNK]', '[CLS]', '[SEP]',
                                                               '[MASK]'] + list(words)
  tokens = [t for t in tokens if t not in drop]
  path = tmp_path / 'vocab.txt'
  path.write_text(''.join(t + '\n' for t in tokens), encoding='utf-8')
  return str(path)


@pytest.fixture(name='tok')
def _tok(tmp_path):
  return WordPieceTokenizer.load(google_vocab(tmp_path))


def test_google_layout_ids(tok):
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
  assert tok.vocab_size == 104 + len(WORDS)
  assert tok.token_to_id('un') == 104 and tok.id_to_token(105) == '##aff'


def test_greedy_longest_match_first(tok):
  assert tok.wordpiece('unaffable') == ['un', '##aff', '##able']
  assert tok.wordpiece('wanted') == ['want', '##ed']  # 'want' before 'wa'
  assert tok.wordpiece('running') == ['runn', '##ing']
  assert tok.wordpiece('abc') == ['a', '##b', '##c']
  assert tok.encode('unaffable') == [104, 105, 106]


def test_uncoverable_or_too_long_word_is_unk(tok):
  assert tok.wordpiece('unaffablex') == ['[UNK]']  # one piece missing: the whole word
  # Google's WordpieceTokenizer: max_input_chars_per_word=200
  assert tok.wordpiece('a' + 'b' * 199) == ['a'] + ['##b'] * 199  # 200 characters: fine
  assert tok.wordpiece('a' + 'b' * 200) == ['[UNK]']  # 201: too long
  assert tok.tokenize('hello zebra world') == ['hello', '[UNK]', 'world']


def test_basic_tokenize_punctuation_accents_case_cjk():
  assert wordpiece.basic_tokenize('Héllo, World!') == ['hello', ',', 'world', '!']
  assert wordpiece.basic_tokenize('Héllo, World!', lower_case=False) == [
      'Héllo', ',', 'World', '!']
  # ASCII symbols count as punctuation for BERT ('$', '+', '^', '`'), as do Unicode P*.
  assert wordpiece.basic_tokenize('a$b+c^d`e «f»') == [
      'a', '$', 'b', '+', 'c', '^', 'd', '`', 'e', '«', 'f', '»']
  # Control characters dropped, any Unicode space splits, CJK characters stand alone.
  assert wordpiece.basic_tokenize('x\x00y\u200bz\u00a0日本語ab\tc\nd') == [
      'xyz', '日', '本', '語', 'ab', 'c', 'd']
  assert wordpiece.basic_tokenize("don't") == ['don', "'", 't']
  assert wordpiece.basic_tokenize('  \n ') == []


def test_ascii_fast_path_agrees_with_the_general_one():
  rng = random.Random(0)
  for lower_case in (True, False):
    for _ in range(300):
      text = ''.join(chr(rng.randrange(128)) for _ in range(rng.randint(0, 40)))
      fast = wordpiece.basic_tokenize(text, lower_case=lower_case)
      # A non-ASCII word appended sends the text down the character-by-character path.
      general = wordpiece.basic_tokenize(text + ' \u00e9', lower_case=lower_case)
      assert general == fast + ['e' if lower_case else '\u00e9'], repr(text)


def test_full_tokenize(tok):
  assert tok.tokenize('Héllo, World! Unaffable.') == [
      'hello', ',', 'world', '!', 'un', '##aff', '##able', '.']
  assert tok.tokenize('日本') == ['日', '本']


def test_encode_words_maps_each_id_to_its_word(tok):
  ids, word_index = tok.encode_words(['Unaffable', "don't", '\x00', 'world!'])
  assert [tok.id_to_token(i) for i in ids] == [
      'un', '##aff', '##able', 'don', "'", 't', 'world', '!']
  assert word_index == [0, 0, 0, 1, 1, 1, 3, 3]  # word 2 gives no id


def test_decode_round_trip(tok):
  ids = tok.encode('Héllo, World! Unaffable wanted.')
  assert tok.decode(ids) == 'hello , world ! unaffable wanted .'
  row = [tok.cls_id, *tok.encode('hello world'), tok.sep_id, tok.pad_id, tok.pad_id]
  assert tok.decode(row) == '[CLS] hello world [SEP]'


def test_save_load_round_trip(tok, tmp_path):
  path = str(tmp_path / 'sub' / 'copy.txt')
  tok.save(path)
  again = WordPieceTokenizer.load(path)
  assert again.vocab == tok.vocab and again.mask_id == 103
  assert [p for p in os.listdir(tmp_path / 'sub')] == ['copy.txt']  # no temp file left


def test_missing_special_token_is_a_usage_error(tmp_path):
  path = google_vocab(tmp_path, drop=('[MASK]', '[SEP]'))
  with pytest.raises(UsageError, match=r'data\.vocab.*lacks \[SEP\] \[MASK\]'):
    WordPieceTokenizer.load(path)
  with pytest.raises(UsageError, match=r'data\.vocab=.*does not exist'):
    WordPieceTokenizer.load(str(tmp_path / 'nope.txt'))


def corpus(num=400, seed=0):
  rng = random.Random(seed)
  words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'unbelievable', 'running', 'jumped', 'Über',
           'naïve', 'quick', 'brown', 'fox', 'zebra', 'quietly', 'x-ray', "it's", '42', '日本']
  return [' '.join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice('.!?;')
          for _ in range(num)]


@pytest.fixture(scope='module', name='trained')
def _trained(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('wp') / 'vocab.txt')
  return wordpiece.train_vocab(corpus(), 300, path), path


def test_train_vocab_size_specials_and_characters(trained):
  tok, path = trained
  assert tok.vocab_size == 300 and len(set(tok.vocab)) == 300
  assert tok.vocab[:5] == ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  chars = {c for text in corpus() for w in wordpiece.basic_tokenize(text) for c in w}
  assert 'ü' not in chars and 'u' in chars  # accents stripped before counting
  for c in chars:
    assert c in tok and '##' + c in tok
  # The small corpus cannot fill 300 tokens: the rest is [unusedN], numbered from 0.
  unused = [t for t in tok.vocab if t.startswith('[unused')]
  assert unused and unused == [f'[unused{i}]' for i in range(len(unused))]
  assert tok.vocab[-len(unused):] == unused
  assert WordPieceTokenizer.load(path).vocab == tok.vocab  # what was saved


def test_trained_vocab_round_trips_corpus_and_learns_words(trained):
  tok, _ = trained
  for text in corpus(50, seed=1):
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == ' '.join(wordpiece.basic_tokenize(text))
  assert tok.tokenize('The quick brown fox') == ['the', 'quick', 'brown', 'fox']
  # BPE ran on basic-tokenised text: punctuation is only ever a token of one character.
  words = [t.removeprefix('##') for t in tok.vocab if not t.startswith('[')]
  assert {'x', 'ray', '-', 'it', "'", 's'} <= set(words)
  assert all(len(w) == 1 for w in words if any(wordpiece.is_punctuation(c) for c in w))


def test_train_vocab_trims_to_a_small_size_and_is_deterministic(tmp_path):
  a = wordpiece.train_vocab(corpus(), 90, str(tmp_path / 'a.txt'))
  b = wordpiece.train_vocab(corpus(), 90, str(tmp_path / 'b.txt'))
  assert a.vocab_size == 90 and a.vocab == b.vocab
  assert not any(t.startswith('[unused') for t in a.vocab)
  assert 'the' in a  # a frequent word survives the trim
  with pytest.raises(UsageError, match='data.vocab_size=3'):
    wordpiece.train_vocab(corpus(), 3, str(tmp_path / 'c.txt'))


def test_for_run_precedence(tmp_path, trained):
  _, trained_path = trained
  calls, lines = [], []

  def texts_fn():
    calls.append(1)
    return corpus(100)

  def run(**kw):
    args = dict(vocab=None, vocab_size=300, workdir=None, init_from=None, texts_fn=texts_fn,
                log=lines.append)
    return vocab.wordpiece_vocab(**{**args, **kw})

  workdir, init_from = tmp_path / 'run', tmp_path / 'pretrain'
  # Nothing there: trained on texts_fn() and saved as workdir/vocab.txt, with one line.
  first = run(workdir=str(workdir))
  assert calls == [1] and (workdir / 'vocab.txt').is_file()
  assert len(lines) == 1 and '100 texts' in lines[0] and str(workdir) in lines[0]
  assert first.path == str(workdir / 'vocab.txt')
  # Resume: the workdir's vocabulary, nothing trained.
  assert run(workdir=str(workdir)).vocab == first.vocab and calls == [1]
  # init_from/vocab.txt comes before the workdir's.
  other = google_vocab(tmp_path, words=[f'w{i}' for i in range(300 - 104)])
  os.makedirs(init_from)
  os.replace(other, init_from / 'vocab.txt')
  tok = run(workdir=str(workdir), init_from=str(init_from))
  assert tok.path == str(init_from / 'vocab.txt') and tok.unk_id == 100
  # data.vocab comes first of all.
  tok = run(vocab=trained_path, workdir=str(workdir), init_from=str(init_from))
  assert tok.path == trained_path and calls == [1]
  # init_from without a vocab.txt falls through to the workdir's.
  assert run(workdir=str(workdir), init_from=str(tmp_path / 'empty')).path == first.path


def test_for_run_errors(tmp_path, trained):
  _, trained_path = trained
  with pytest.raises(UsageError, match=r'data\.vocab_size=512 .*\(300 tokens\).*'
                                       r'model\.vocab_size to 300'):
    vocab.wordpiece_vocab(vocab=trained_path, vocab_size=512, workdir=None, init_from=None,
                      texts_fn=list)
  with pytest.raises(UsageError, match=r"data\.vocab='.*missing.txt' does not exist"):
    vocab.wordpiece_vocab(vocab=str(tmp_path / 'missing.txt'), vocab_size=300,
                          workdir=str(tmp_path), init_from=None, texts_fn=list)
  with pytest.raises(UsageError, match=r'data\.vocab is unset and there is no workdir'):
    vocab.wordpiece_vocab(vocab=None, vocab_size=300, workdir=None, init_from=None,
                          texts_fn=list)
