"""Tokenizers for text sources: UTF-8 bytes, or a SentencePiece model trained in Python.

Both share one interface: ``encode(text) -> list[int]``, ``encode_batch(texts)`` (a list of
those), ``decode(ids) -> str`` (special ids skipped), ``vocab_size``, ``pad_id`` (0),
``bos_id`` (1) and ``eos_id`` (2). Id 0 is padding everywhere, matching ``segment_ids == 0``
in packed rows (``fixed_head.data.packing``).
``encode`` adds no bos/eos: the caller chooses, e.g. ``[tok.bos_id, *tok.encode(t), tok.eos_id]``.

Which tokenizer a run reads with, and where its file is kept, is decided once for the run
(``fixed_head.data.vocab``).

No TensorFlow: SentencePiece models are trained from any iterable of strings with the
``sentencepiece`` package and written atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable, Sequence

from fixed_head import files
from fixed_head.errors import UsageError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


class ByteTokenizer:
  """UTF-8 bytes shifted by 3: id = byte + 3; ids 0/1/2 are pad/bos/eos."""

  KIND = 'byte'
  _OFFSET = 3
  pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

  def __init__(self, vocab_size: int = 259):
    if vocab_size < 256 + self._OFFSET:
      raise UsageError(f'vocab_size={vocab_size} is too small for byte tokens: set it to at '
                       f'least {256 + self._OFFSET} (256 bytes + pad/bos/eos).')
    self._vocab_size = vocab_size

  @property
  def vocab_size(self) -> int:
    return self._vocab_size

  def encode(self, text: str) -> list[int]:
    """``text`` -> ids in [3, 259), one per UTF-8 byte."""
    return [b + self._OFFSET for b in text.encode('utf-8')]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """``encode`` of each text."""
    return [self.encode(text) for text in texts]

  def decode(self, ids: Iterable[int]) -> str:
    """Ids -> text; ids below 3 (specials) or above the byte range are skipped; invalid UTF-8
    sequences become U+FFFD."""
    data = bytes(int(i) - self._OFFSET for i in ids
                 if self._OFFSET <= int(i) < 256 + self._OFFSET)
    return data.decode('utf-8', errors='replace')


class SentencePieceTokenizer:
  """A SentencePiece model with pad 0, bos 1, eos 2, unk 3 (as trained by ``train``)."""

  KIND = 'sentencepiece'

  def __init__(self, processor, model_path: str | None = None):
    self._sp = processor
    self.model_path = model_path

  @property
  def vocab_size(self) -> int:
    return int(self._sp.get_piece_size())

  @property
  def pad_id(self) -> int:
    return int(self._sp.pad_id())

  @property
  def bos_id(self) -> int:
    return int(self._sp.bos_id())

  @property
  def eos_id(self) -> int:
    return int(self._sp.eos_id())

  @property
  def unk_id(self) -> int:
    return int(self._sp.unk_id())

  def encode(self, text: str) -> list[int]:
    """``text`` -> piece ids (no bos/eos added)."""
    return list(self._sp.encode(text, out_type=int))

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """``encode`` of each text, in one call into SentencePiece's C++ batch encoder."""
    return self._sp.encode(list(texts), out_type=int)

  def decode(self, ids: Iterable[int]) -> str:
    """Piece ids -> text; control ids (pad/bos/eos) are skipped, unk decodes to ' ⁇ '."""
    return self._sp.decode([int(i) for i in ids])

  @classmethod
  def load(cls, model_path: str, expected_vocab_size: int | None = None
           ) -> 'SentencePieceTokenizer':
    """Loads ``model_path``; checks its vocabulary size against ``expected_vocab_size``."""
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    model_path = os.fspath(model_path)
    if not files.is_file(model_path):
      raise UsageError(
          f'SentencePiece model {model_path!r} does not exist: train it with '
          'SentencePieceTokenizer.train (train.py trains it on first use), or fix the path.')
    # read as bytes, so a gs:// model loads like a local one
    processor = spm.SentencePieceProcessor(model_proto=files.read_bytes(model_path))
    tokenizer = cls(processor, model_path)
    if expected_vocab_size is not None and tokenizer.vocab_size != expected_vocab_size:
      raise UsageError(
          f'SentencePiece model {model_path!r} has vocab size {tokenizer.vocab_size}, but '
          f'{expected_vocab_size} was expected: set data.vocab_size={tokenizer.vocab_size}, or '
          'delete the file (or choose another path) to train a new model.')
    return tokenizer

  @classmethod
  def train(cls, texts: Iterable[str], model_path: str, vocab_size: int, *,
            max_sentences: int = 1_000_000, max_sentence_length: int = 4192,
            character_coverage: float = 0.9995, model_type: str = 'unigram',
            seed: int = 0, num_threads: int = 1) -> 'SentencePieceTokenizer':
    """Trains on the first ``max_sentences`` non-empty strings of ``texts``; writes
    ``model_path`` atomically (temp file in the same directory, then ``os.replace``).

    Deterministic: the sample is the first ``max_sentences`` strings (never shuffled) and the
    trainer's global RNG is seeded with ``seed`` (which then has no effect on 'unigram' or
    'bpe'). The same input and ``num_threads`` give a byte-identical file; ``num_threads`` is
    recorded in the file, so other thread counts give different bytes (on the tested
    corpora, the same pieces and scores). Strings longer than ``max_sentence_length`` bytes
    are skipped by the trainer. A trainer error or a vocabulary of the wrong size raises
    ValueError and writes nothing.
    """
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    model_path = os.fspath(model_path)
    if vocab_size <= UNK_ID + 1:
      raise UsageError(f'vocab_size={vocab_size} is too small: set data.vocab_size above '
                       f'{UNK_ID + 1} (pad, bos, eos and unk are reserved).')
    if max_sentences <= 0:
      raise UsageError(f'max_sentences={max_sentences} must be positive.')
    sample = list(itertools.islice((t for t in texts if t and t.strip()), max_sentences))
    if not sample:
      raise UsageError(f'No non-empty text to train SentencePiece model {model_path!r}: '
                       'check the texts passed to train().')
    files.make_dirs(os.path.dirname(files.absolute(model_path)))
    spm.set_random_generator_seed(seed)
    proto = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(sample), model_writer=proto,
          vocab_size=vocab_size, model_type=model_type,
          character_coverage=character_coverage,
          pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
          input_sentence_size=0, shuffle_input_sentence=False,  # 0: all of `sample`
          max_sentence_length=max_sentence_length, num_threads=num_threads,
          minloglevel=2)
    except RuntimeError as e:  # e.g. 'Vocabulary size too high (5000). Please set it to ...'
      raise UsageError(f'Training SentencePiece model {model_path!r} (data.vocab_size='
                       f'{vocab_size}, {len(sample)} sentences) failed: {e}') from e
    trained = spm.SentencePieceProcessor(model_proto=proto.getvalue()).get_piece_size()
    if trained != vocab_size:  # model_type='char' sizes the vocabulary itself
      raise UsageError(f'SentencePiece model {model_path!r} (model_type={model_type!r}) came out '
                       f'with {trained} pieces, not data.vocab_size={vocab_size}: set '
                       f'data.vocab_size={trained} or use another model_type. Nothing was written.')
    files.write_atomically(model_path, proto.getvalue())
    return cls.load(model_path, expected_vocab_size=vocab_size)


def default_model_path(workdir: str, vocab_size: int) -> str:
  """Where a run keeps the SentencePiece model it trains: ``workdir/tokenizer/``."""
  return files.join(files.absolute(workdir), 'tokenizer', f'sentencepiece_{vocab_size}.model')


def byte_tokenizer(vocab_size: int) -> ByteTokenizer:
  """The byte tokenizer of a config with ``data.vocab_size``, which must be its 259 ids."""
  tokenizer = ByteTokenizer()
  if tokenizer.vocab_size != vocab_size:
    raise UsageError(f'data.vocab_size={vocab_size} does not match the byte tokenizer '
                     f'({tokenizer.vocab_size} ids); set data.vocab_size and model.vocab_size '
                     f'to {tokenizer.vocab_size}.')
  return tokenizer


def encode_documents(tokenizer, texts: Iterable[str], *, add_bos: bool = True,
                     add_eos: bool = True) -> Iterable[Sequence[int]]:
  """Lazily encodes each text, wrapped in bos/eos as asked: input to ``pack_documents``."""
  for text in texts:
    ids = tokenizer.encode(text)
    yield ([tokenizer.bos_id] if add_bos else []) + ids + ([tokenizer.eos_id] if add_eos else [])
