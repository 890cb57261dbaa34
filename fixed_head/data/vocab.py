"""The run's tokenizer: resolved once, before any source is built, and recorded.

``for_run(config, workdir)`` is the one place that decides which tokenizer a run reads
with; the sources and evaluators are handed the object (``data.build_source(...,
tokenizer=)``) and only read data. The fields that name it are the source's
``TOKENIZER_FIELDS`` (``data.tokenizer_options``):

  'byte'           UTF-8 bytes (259 ids), no file.
  'sentencepiece'  ``data.tokenizer_path``, by default ``WORKDIR/tokenizer/sentencepiece_<V>.model``;
                   trained there on the first ``data.tokenizer_max_sentences`` train texts
                   when it is missing.
  'wordpiece'      (the BERT sources) ``data.vocab``, else ``INIT_FROM/vocab.txt`` (fine-tuning
                   reuses the pre-training run's), else ``WORKDIR/vocab.txt`` (a resumed run),
                   else one trained on the train texts and saved as ``WORKDIR/vocab.txt``.
                   Every workdir keeps a copy of the vocabulary it used, so a run started
                   from it finds it, however long the chain.

The train texts come from the source's module (``data.train_texts``), read only when a
tokenizer must be trained. With several JAX processes only process 0 trains; the others
wait at a barrier (``files.on_process_zero``), then read the file, so the workdir must be on
a file system all processes see. ``evaluate`` (``train=False``) never trains.

The record: ``WORKDIR/tokenizer.json`` ({kind, path, vocab_size, sha256}), written by process
0 when the run first trains. A resumed run, or an evaluation, whose tokenizer file now
differs from the recorded one is refused: it would read other tokens than the checkpoints
were trained on.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ml_collections

from fixed_head import data as data_lib
from fixed_head import files
from fixed_head.data import tokenizers, wordpiece
from fixed_head.errors import UsageError

RECORD = 'tokenizer.json'
TextsFn = Callable[[], Iterable[str]]


def sentencepiece(vocab_size: int, *, model_path: str | None = None,
                  workdir: str | None = None, texts_fn: TextsFn | None = None,
                  max_sentences: int = 1_000_000) -> tokenizers.SentencePieceTokenizer:
  """The SentencePiece model at ``model_path`` (default ``default_model_path(workdir)``),
  trained there on the first ``max_sentences`` of ``texts_fn()`` when missing (process 0;
  ``texts_fn=None``: never trained, a missing model is a UsageError)."""
  if not model_path:
    if not workdir:
      raise UsageError("data.tokenizer='sentencepiece' needs data.tokenizer_path (the model "
                       'file, read or trained on first use) when no workdir is given.')
    model_path = tokenizers.default_model_path(workdir, vocab_size)
  model_path = files.absolute(model_path)

  def load_or_train():
    if files.is_file(model_path):
      return tokenizers.SentencePieceTokenizer.load(model_path, expected_vocab_size=vocab_size)
    if texts_fn is None:
      raise UsageError(f'SentencePiece model {model_path} does not exist and evaluation trains '
                       'none: evaluate the workdir train.py trained it in, or set '
                       'data.tokenizer_path to the model the run trained with.')
    return tokenizers.SentencePieceTokenizer.train(texts_fn(), model_path, vocab_size,
                                                   max_sentences=max_sentences)

  if texts_fn is None:
    return load_or_train()
  tokenizer = files.on_process_zero(load_or_train, f'sentencepiece:{model_path}')
  if tokenizer is None:  # another process trained or checked it
    tokenizer = tokenizers.SentencePieceTokenizer.load(model_path,
                                                       expected_vocab_size=vocab_size)
  return tokenizer


def wordpiece_vocab(*, vocab: str | None, vocab_size: int, workdir: str | None,
                    init_from: str | None = None, texts_fn: TextsFn | None = None,
                    lower_case: bool = True, max_sentences: int = 1_000_000,
                    log: Callable[[str], None] = print) -> wordpiece.WordPieceTokenizer:
  """The vocabulary of a run, the first of: ``vocab`` (``data.vocab``, a path);
  ``init_from/vocab.txt``; ``workdir/vocab.txt``; else one trained on ``texts_fn()`` (called
  only then; None: never trained) and saved as ``workdir/vocab.txt``. Its size must be
  ``vocab_size``. ``record`` keeps a copy in the workdir once the run starts (a run refused
  before that leaves its new workdir as it was)."""
  if vocab:
    path = files.absolute(vocab)
    if not files.is_file(path):
      raise UsageError(f'data.vocab={vocab!r} does not exist: give the path of a BERT '
                       'vocab.txt, or leave data.vocab unset to train one in the workdir.')
  else:
    candidates = [files.join(files.absolute(d), wordpiece.VOCAB_FILE)
                  for d in (init_from, workdir) if d]
    path = next((p for p in candidates if files.is_file(p)), None)
  if path is None:
    if not workdir:
      raise UsageError('data.vocab is unset and there is no workdir to train one in: set '
                       'data.vocab to a BERT vocab.txt.')
    path = files.join(files.absolute(workdir), wordpiece.VOCAB_FILE)
    if texts_fn is None:
      raise UsageError(f'{path} does not exist and evaluation trains no vocabulary: evaluate '
                       'the workdir train.py trained it in, or set data.vocab to the '
                       'vocab.txt the run trained with.')

    def train():
      read = itertools.count()
      counted = (t for t, _ in zip(texts_fn(), read))
      wordpiece.train_vocab(counted, vocab_size, path, lower_case=lower_case,
                            max_sentences=max_sentences)
      log(f'wordpiece: trained a {vocab_size}-token vocabulary on {next(read)} texts; saved '
          f'{path}')

    files.on_process_zero(train, f'wordpiece:{path}')
  tokenizer = wordpiece.WordPieceTokenizer.load(path, lower_case=lower_case)
  if tokenizer.vocab_size != vocab_size:
    raise UsageError(f'data.vocab_size={vocab_size} does not match the vocabulary {path!r} '
                     f'({tokenizer.vocab_size} tokens); set data.vocab_size and '
                     f'model.vocab_size to {tokenizer.vocab_size}.')
  return tokenizer


def _keep_copy(path: str, workdir: str | None) -> None:
  """Copies the vocabulary a run uses to ``workdir/vocab.txt`` (process 0) when it came from
  elsewhere, so every workdir holds its own: a run started from it (``init_from``) finds it,
  however long the chain (pre-training stage 1 -> stage 2 -> fine-tuning)."""
  if not workdir:
    return
  import jax  # pylint: disable=g-import-not-at-top
  workdir = files.absolute(workdir)
  copy = files.join(workdir, wordpiece.VOCAB_FILE)
  if jax.process_index() != 0 or files.exists(copy) or files.absolute(path) == copy:
    return
  files.make_dirs(workdir)
  files.write_atomically(copy, files.read_bytes(path))


def for_data(data_config: Mapping[str, Any], *, workdir: str | None = None,
             init_from: str | None = None, train: bool = True,
             log: Callable[[str], None] = print):
  """The tokenizer ``data_config`` names (see the module doc), trained on its source's
  train texts when it must be and ``train``; None for a source that reads no text."""
  options = data_lib.tokenizer_options(data_config)
  if options is None:
    return None
  kind, vocab_size = options['tokenizer'], options['vocab_size']
  texts_fn = (lambda: data_lib.train_texts(data_config)) if train else None
  if 'vocab' in options:  # the BERT sources' fields: data.vocab, a WordPiece vocabulary
    return wordpiece_vocab(vocab=options['vocab'], vocab_size=vocab_size, workdir=workdir,
                           init_from=init_from, texts_fn=texts_fn,
                           lower_case=options['lower_case'], log=log)
  if kind == 'byte':
    return tokenizers.byte_tokenizer(vocab_size)
  if kind == 'sentencepiece':
    return sentencepiece(vocab_size, model_path=options['tokenizer_path'], workdir=workdir,
                         texts_fn=texts_fn, max_sentences=options['tokenizer_max_sentences'])
  raise UsageError(f"data.tokenizer: kind={kind!r} is not one of ['byte', 'sentencepiece'] "
                   "(the BERT sources read WordPiece, data.vocab).")


def describe(tokenizer) -> dict[str, Any]:
  """What the run record keeps of a tokenizer: kind, path, vocab_size and the sha256 of its
  file (None for bytes)."""
  path = getattr(tokenizer, 'model_path', None) or getattr(tokenizer, 'path', None)
  return {'kind': tokenizer.KIND, 'path': path, 'vocab_size': tokenizer.vocab_size,
          'sha256': files.sha256(path) if path else None}


def recorded(workdir: str) -> dict[str, Any] | None:
  """The workdir's ``tokenizer.json``, or None."""
  path = files.join(workdir, RECORD)
  return json.loads(files.read_text(path)) if files.is_file(path) else None


def check(workdir: str, used: Mapping[str, Any]) -> None:
  """Refuses a tokenizer other than the one ``workdir`` recorded (kind, size or file)."""
  saved = recorded(workdir)
  if saved is None or all(saved.get(k) == used[k] for k in ('kind', 'vocab_size', 'sha256')):
    return
  raise UsageError(
      f'{files.join(workdir, RECORD)}: this run was trained with the {saved.get("kind")} '
      f'tokenizer {saved.get("path")} ({saved.get("vocab_size")} ids, sha256 '
      f'{saved.get("sha256")}), but it now reads the {used["kind"]} tokenizer {used["path"]} '
      f'({used["vocab_size"]} ids, sha256 {used["sha256"]}): its checkpoints would read other '
      'tokens; restore that file (or data.tokenizer_path / data.vocab), or start a new '
      '--workdir.')


def record(workdir: str, tokenizer) -> None:
  """Writes ``workdir/tokenizer.json`` (process 0's call) when the run has none yet, and a
  copy of a WordPiece vocabulary read from elsewhere as ``workdir/vocab.txt``."""
  if isinstance(tokenizer, wordpiece.WordPieceTokenizer) and tokenizer.path:
    _keep_copy(tokenizer.path, workdir)
  if tokenizer is None or recorded(workdir) is not None:
    return
  files.write_atomically(files.join(workdir, RECORD),
                         json.dumps(describe(tokenizer), indent=2) + '\n')


def for_run(config: ml_collections.ConfigDict, workdir: str, *, train: bool = True,
            log: Callable[[str], None] = print):
  """The tokenizer of the run in ``workdir`` with the validated ``config``
  (``Setup.config``): ``for_data`` of ``config.data`` (``config.init_from``'s vocabulary
  first), refused if it differs from the one the workdir recorded. ``train=False``
  (evaluation) reads it and never trains one."""
  tokenizer = for_data(config.data, workdir=workdir, init_from=config.get('init_from') or None,
                       train=train, log=log)
  if tokenizer is not None:
    check(workdir, describe(tokenizer))
  return tokenizer
