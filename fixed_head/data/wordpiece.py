"""BERT's WordPiece tokenizer in plain Python, and training a vocabulary for it.

``WordPieceTokenizer`` reads and writes Google BERT's ``vocab.txt`` (one token per line, id =
line number) and tokenises as BERT's ``tokenization.FullTokenizer``: a basic pass (clean
control characters, split on whitespace, lower-case and strip accents when ``lower_case``,
punctuation and CJK characters as tokens of their own), then greedy longest-match-first
WordPiece with the ``##`` continuation prefix. Google's released vocabularies load as they
are ([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103).

``train_vocab`` makes a vocabulary from text without TensorFlow: SentencePiece (BPE) is
trained on basic-tokenised text (so no piece crosses punctuation), its pieces become
WordPiece tokens ('▁word' -> 'word', 'piece' -> '##piece') after [PAD]=0, [UNK]=1, [CLS]=2,
[SEP]=3, [MASK]=4 and every character seen (bare and ``##``), and the list is padded with
``[unused0]``, ``[unused1]``, ... to exactly ``vocab_size`` when the corpus yields fewer
pieces. Which vocabulary a run reads with (``data.vocab``, the one of the run it is
initialised from, the one in its workdir, or a newly trained one saved there) is decided once
for the run (``fixed_head.data.vocab``).
"""

from __future__ import annotations

import collections
import functools
import io
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence

from fixed_head import files
from fixed_head.errors import UsageError

PAD, UNK, CLS, SEP, MASK = '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in a vocabulary train_vocab makes
VOCAB_FILE = 'vocab.txt'
MAX_INPUT_CHARS_PER_WORD = 200  # longer words become [UNK], as Google BERT's WordpieceTokenizer
SP_WORD_START = '\u2581'  # SentencePiece's word-start marker '▁'


# BERT's character classes (tokenization.py: _is_whitespace, _is_control, _is_punctuation,
# BasicTokenizer._is_chinese_char).

def is_whitespace(char: str) -> bool:
  """Space, tab, newline, carriage return or any Unicode 'Zs'."""
  return char in ' \t\n\r' or unicodedata.category(char) == 'Zs'


def is_control(char: str) -> bool:
  """Unicode 'Cc' or 'Cf', except tab, newline and carriage return (whitespace)."""
  return char not in '\t\n\r' and unicodedata.category(char) in ('Cc', 'Cf')


def is_punctuation(char: str) -> bool:
  """ASCII 33-47, 58-64, 91-96, 123-126 (so '$', '+', '^', '`' too) or Unicode 'P*'."""
  cp = ord(char)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(char).startswith('P')


_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(char: str) -> bool:
  """A CJK Unified Ideograph (BERT's blocks; not Hiragana, Katakana or Hangul)."""
  cp = ord(char)
  return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _strip_accents(text: str) -> str:
  return ''.join(c for c in unicodedata.normalize('NFD', text)
                 if unicodedata.category(c) != 'Mn')


# ASCII text (most of it) takes a faster path with the same result: control characters
# deleted, tab/newline/return to spaces, punctuation spaced out.
_ASCII_CLEAN = {c: None for c in range(128) if is_control(chr(c))} | {
    ord(c): ' ' for c in '\t\n\r'}
_ASCII_PUNCTUATION = re.compile(r'([!-/:-@\[-`{-~])')


def basic_tokenize(text: str, *, lower_case: bool = True) -> list[str]:
  """BERT's BasicTokenizer: ``text`` -> words, punctuation marks and CJK characters."""
  if text.isascii():
    text = text.translate(_ASCII_CLEAN)
    return _ASCII_PUNCTUATION.sub(r' \1 ', text.lower() if lower_case else text).split()
  chars = []
  for c in text:
    if c in ('\x00', '\ufffd') or is_control(c):
      continue
    if is_whitespace(c):
      chars.append(' ')
    elif is_cjk(c):
      chars.extend((' ', c, ' '))
    else:
      chars.append(c)
  out = []
  for word in ''.join(chars).split():
    if lower_case:
      word = _strip_accents(word.lower())
    current = []
    for c in word:
      if is_punctuation(c):
        if current:
          out.append(''.join(current))
          current = []
        out.append(c)
      else:
        current.append(c)
    if current:
      out.append(''.join(current))
  return out


def _vocab_text(tokens: Sequence[str]) -> str:
  """vocab.txt's contents: one token a line, line i holding the token of id i."""
  return ''.join(token + '\n' for token in tokens)


class WordPieceTokenizer:
  """A WordPiece vocabulary (token i has id i) and BERT's tokenisation with it.

  ``lower_case`` must match the vocabulary: True for 'uncased' BERT models (and for
  vocabularies ``train_vocab`` makes with its default), False for 'cased' ones.
  """

  KIND = 'wordpiece'

  def __init__(self, vocab: Sequence[str], *, lower_case: bool = True,
               path: str | None = None):
    self._tokens = list(vocab)
    self._ids = {token: i for i, token in enumerate(self._tokens)}  # a repeat: the last wins
    self.lower_case = lower_case
    self.path = path
    self._pieces = functools.lru_cache(maxsize=1 << 18)(self._wordpiece)  # words repeat
    missing = [t for t in SPECIAL_TOKENS if t not in self._ids]
    if missing:
      where = f' {path!r}' if path else ''
      raise UsageError(f'data.vocab{where}: the vocabulary lacks {" ".join(missing)}; give a BERT '
                       'vocab.txt that has [PAD] [UNK] [CLS] [SEP] [MASK] (one token a line).')

  @classmethod
  def load(cls, path: str, *, lower_case: bool = True) -> 'WordPieceTokenizer':
    """Reads a BERT ``vocab.txt``: one token per line (surrounding whitespace stripped)."""
    path = os.fspath(path) if files.is_url(path) else os.path.expanduser(os.fspath(path))
    if not files.is_file(path):
      raise UsageError(f'data.vocab={path!r} does not exist: give the path of a BERT '
                       'vocab.txt, or leave data.vocab unset to train one in the workdir.')
    try:
      tokens = [line.strip() for line in files.read_text(path).splitlines()]
    except UnicodeDecodeError as e:
      raise UsageError(f'data.vocab={path!r} is not valid UTF-8 (byte {e.start}: {e.reason}); '
                       'give a BERT vocab.txt.') from None
    while tokens and not tokens[-1]:  # a trailing newline is not a token
      tokens.pop()
    return cls(tokens, lower_case=lower_case, path=path)

  def save(self, path: str) -> None:
    """Writes ``vocab.txt`` (one token a line) atomically: temp file, then ``os.replace``."""
    path = files.absolute(path)
    files.make_dirs(os.path.dirname(path))
    files.write_atomically(path, _vocab_text(self._tokens))
    self.path = path

  @property
  def vocab(self) -> list[str]:
    """The tokens, in id order."""
    return list(self._tokens)

  @property
  def vocab_size(self) -> int:
    return len(self._tokens)

  @property
  def pad_id(self) -> int:
    return self._ids[PAD]

  @property
  def unk_id(self) -> int:
    return self._ids[UNK]

  @property
  def cls_id(self) -> int:
    return self._ids[CLS]

  @property
  def sep_id(self) -> int:
    return self._ids[SEP]

  @property
  def mask_id(self) -> int:
    return self._ids[MASK]

  @property
  def special_ids(self) -> tuple[int, ...]:
    """Ids of [PAD] [UNK] [CLS] [SEP] [MASK]."""
    return tuple(self._ids[t] for t in SPECIAL_TOKENS)

  def __contains__(self, token: str) -> bool:
    return token in self._ids

  def token_to_id(self, token: str) -> int:
    """The id of ``token``; [UNK]'s for a token not in the vocabulary."""
    return self._ids.get(token, self.unk_id)

  def id_to_token(self, token_id: int) -> str:
    return self._tokens[int(token_id)]

  def basic_tokenize(self, text: str) -> list[str]:
    """BERT's BasicTokenizer with this vocabulary's ``lower_case``."""
    return basic_tokenize(text, lower_case=self.lower_case)

  def wordpiece(self, word: str) -> list[str]:
    """Greedy longest-match-first pieces of one word ('unaffable' -> ['un', '##aff',
    '##able']); ['[UNK]'] when the word is over MAX_INPUT_CHARS_PER_WORD (200) characters or
    cannot be covered."""
    return list(self._pieces(word))

  def _wordpiece(self, word: str) -> tuple[str, ...]:
    if len(word) > MAX_INPUT_CHARS_PER_WORD:
      return (UNK,)
    pieces, start = [], 0
    while start < len(word):
      for end in range(len(word), start, -1):
        piece = word[start:end] if start == 0 else '##' + word[start:end]
        if piece in self._ids:
          break
      else:
        return (UNK,)
      pieces.append(piece)
      start = end
    return tuple(pieces)

  def tokenize(self, text: str) -> list[str]:
    """``text`` -> WordPiece tokens (BERT's FullTokenizer.tokenize)."""
    return [piece for word in self.basic_tokenize(text) for piece in self._pieces(word)]

  def encode(self, text: str) -> list[int]:
    """``text`` -> token ids (no [CLS] / [SEP] added)."""
    return [self._ids[piece] for piece in self.tokenize(text)]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """``encode`` of each text."""
    return [self.encode(text) for text in texts]

  def encode_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Already-split words (SQuAD's whitespace words) -> (ids, word index of each id).

    Each word is tokenised on its own, as BERT's run_squad.py does, so a word may give
    several ids ('don't' -> don ' t) or none (only control characters)."""
    ids, word_index = [], []
    for i, word in enumerate(words):
      pieces = self.encode(word)
      ids.extend(pieces)
      word_index.extend([i] * len(pieces))
    return ids, word_index

  def decode(self, ids: Iterable[int]) -> str:
    """Ids -> text: tokens joined by spaces, '##' pieces glued to the one before; [PAD] is
    skipped, other special tokens appear as written ('[CLS] hello , world ! [SEP]')."""
    tokens = [self._tokens[int(i)] for i in ids if int(i) != self.pad_id]
    return ' '.join(tokens).replace(' ##', '').strip()


# Training a vocabulary.

def _training_lines(texts: Iterable[str], lower_case: bool, max_sentences: int
                    ) -> tuple[list[str], collections.Counter, int]:
  """The first ``max_sentences`` non-empty lines of ``texts``, basic-tokenised and joined by
  spaces; the characters of their words, counted; how many texts were read."""
  lines, chars, num_texts = [], collections.Counter(), 0
  for text in texts:
    num_texts += 1
    for line in text.splitlines():
      words = basic_tokenize(line, lower_case=lower_case)
      if words:
        lines.append(' '.join(words))
        for word in words:
          chars.update(word)
        if len(lines) >= max_sentences:
          return lines, chars, num_texts
  return lines, chars, num_texts


_SP_TOO_HIGH = re.compile(r'value <= (\d+)')
_SP_TOO_LOW = re.compile(r'smaller than required_chars\. \d+ vs (\d+)')


def _sentencepiece_pieces(lines: list[str], size: int, model_type: str, seed: int
                          ) -> list[str]:
  """SentencePiece's pieces (normal ones only, best first) trained on ``lines``; asks for
  fewer when the corpus cannot give ``size`` (the trainer says how many it can), and for
  more when ``size`` cannot hold the characters (the caller keeps the ones it needs)."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  spm.set_random_generator_seed(seed)
  for _ in range(3):
    proto = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(lines), model_writer=proto, vocab_size=size,
          model_type=model_type, character_coverage=0.9995,
          normalization_rule_name='identity',  # basic_tokenize normalised already
          split_by_whitespace=True, add_dummy_prefix=True,  # so every word starts with '▁'
          pad_id=-1, bos_id=-1, eos_id=-1, unk_id=0,
          input_sentence_size=0, shuffle_input_sentence=False,
          max_sentence_length=1 << 20, num_threads=1, minloglevel=2)
    except RuntimeError as e:  # 'Vocabulary size too high (5000). Please set it to ... <= 77.'
      high, low = _SP_TOO_HIGH.search(str(e)), _SP_TOO_LOW.search(str(e))
      if high and 2 <= int(high.group(1)) < size:
        size = int(high.group(1))
        continue
      if low and int(low.group(1)) > size:
        size = int(low.group(1))
        continue
      raise UsageError(f'data.vocab_size: training the WordPiece vocabulary with SentencePiece '
                       f'({len(lines)} sentences) failed: {e}') from e
    processor = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())
            if not (processor.is_unknown(i) or processor.is_control(i) or
                    processor.is_unused(i))]
  raise UsageError(f'data.vocab_size={size}: SentencePiece could not train a vocabulary on '
                   f'{len(lines)} sentences; give more text or another data.vocab_size.')


def wordpiece_vocab(pieces: Iterable[str], chars: collections.Counter, vocab_size: int
                    ) -> list[str]:
  """The five special tokens, every character in ``chars`` bare and with '##' (when they do
  not all fit, only the most frequent, in half the vocabulary), then SentencePiece
  ``pieces`` in WordPiece form, without repeats, padded with [unusedN] to ``vocab_size``."""
  vocab = dict.fromkeys(SPECIAL_TOKENS)
  room = (vocab_size - len(vocab)) // 2  # characters that fit, 2 tokens each
  for c, _ in chars.most_common(room if len(chars) <= room else room // 2):
    vocab.setdefault(c)
    vocab.setdefault('##' + c)
  for piece in pieces:
    if len(vocab) >= vocab_size:
      break
    token = piece[1:] if piece.startswith(SP_WORD_START) else '##' + piece
    if token and token != '##':
      vocab.setdefault(token)
  tokens = list(vocab)[:vocab_size]
  tokens.extend(f'[unused{i}]' for i in range(vocab_size - len(tokens)))
  return tokens


def train_vocab(texts: Iterable[str], vocab_size: int, path: str, *, lower_case: bool = True,
                model_type: str = 'bpe', max_sentences: int = 1_000_000, seed: int = 0
                ) -> WordPieceTokenizer:
  """Trains a WordPiece vocabulary of exactly ``vocab_size`` tokens on the first
  ``max_sentences`` non-empty lines of ``texts``; saves it to ``path`` (atomically).

  [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4; then every character of the basic-tokenised
  text, bare and with '##' (so no word of the corpus becomes [UNK]; only when they cannot
  all fit are the most frequent kept, in half the vocabulary), then SentencePiece's pieces
  (``model_type`` 'bpe' or 'unigram', trained in memory) converted to WordPiece. A corpus too
  small to give that many pieces is padded with '[unused0]', '[unused1]', ... (harmless:
  those ids are never produced). Deterministic for the same input.
  """
  if model_type not in ('bpe', 'unigram'):
    raise UsageError(f"model_type={model_type!r}: must be 'bpe' or 'unigram'.")
  if not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 2:
    raise UsageError(f'data.vocab_size={vocab_size!r} is too small for a WordPiece vocabulary: '
                     f'set it to at least {len(SPECIAL_TOKENS) + 2} (30522 is BERT\'s).')
  lines, chars, _ = _training_lines(texts, lower_case, max_sentences)
  if not lines:
    raise UsageError(f'No text to train the WordPiece vocabulary {path!r} on: check the '
                     'documents of data.files / data.dataset.')
  pieces = _sentencepiece_pieces(lines, vocab_size, model_type, seed)
  tokenizer = WordPieceTokenizer(wordpiece_vocab(pieces, chars, vocab_size),
                                 lower_case=lower_case)
  tokenizer.save(path)
  return tokenizer
