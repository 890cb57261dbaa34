"""Input: sources chosen by name in ``config.data``, and checkpointable batch iterators.

A *source* is random access, like a TFDS ``data_source`` or a Grain source:
``len(source)``, ``source[i] -> {'tokens': int32 [n], ...}``, ``source.get_batch(indices)``
(the same dict with a leading batch axis) and ``source.vocab_size``. Rows may carry
``segment_ids`` / ``positions`` (packed documents) and, for the embedded synthetic
language, ``optimal_nll`` (the Bayes-optimal per-token loss).

A *train iterator* yields this process's rows of each global batch as NumPy arrays and
exposes ``get_state()`` / ``set_state(state)`` (JSON-serialisable), saved in every
checkpoint so a resumed run reads exactly the batches it would have read. A source that
streams (TFDS through Grain) provides its own with ``source.train_iterator(global_batch_size,
process_index=, process_count=)``; any other source is read by index (``IndexIterator``).
The 'tfds' source can instead read its train rows from a pre-packed copy made once
(``data.prepacked_dir``; ``python prepack.py``, module ``prepacked``).

Sources only read data. A source of text is given its tokenizer object (``tokenizer=``):
the run resolves it once, before any source is built (``fixed_head.data.vocab``), from
the config fields the source's ``TOKENIZER_FIELDS`` name, and trains it, when it must, on
the texts ``train_texts(data_config)`` yields (each source module's own ``train_texts``).

BERT rows carry ``weight`` [b] (1.0); rows an evaluation pads with have weight 0.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from fixed_head.data import (bert_pretraining, glue, order, rows, squad, synthetic, text,
                             tfds_text, tokenizers)
from fixed_head import renames
from fixed_head.errors import UsageError

Batch = dict[str, np.ndarray]


class Source(NamedTuple):
  """A registry entry: the source class (built as ``cls(split=, num_examples=, [tokenizer=,]
  **options)``) and, for a source of text, its module's ``train_texts(options)``: the raw
  train texts its tokenizer is trained on (no tokenizer needed)."""
  cls: type
  train_texts: Callable[[Mapping[str, Any]], Iterable[str]] | None = None


SOURCES: dict[str, Source] = {
    'synthetic': Source(synthetic.SyntheticCopyLM),  # the embedded default
    'text': Source(text.TextFilesLM, text.train_texts),  # local UTF-8 files
    'tfds': Source(tfds_text.TfdsTextLM, tfds_text.train_texts),  # TFDS through Grain (LM1B)
    # BERT: masked-LM + NSP rows from local text or TFDS (Wikipedia), and fine-tuning data.
    'bert_pretraining': Source(bert_pretraining.BertPretrainingData,
                               bert_pretraining.train_texts),
    'glue': Source(glue.GlueData, glue.train_texts),  # MNLI
    'squad': Source(squad.SquadData, squad.train_texts),  # SQuAD v1.1
}


def batch_spec(data_config: Mapping[str, Any], batch_size: int
               ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of a global batch of ``batch_size`` rows of source
  ``data_config.name`` (its class's ``ROWS``), known from the config alone (no data is read):
  what the train step is compiled for before the first batch, and what ``compile.py``
  compiles without data."""
  return rows.batch_spec(_entry(data_config).cls.ROWS, data_config, batch_size)


def check_batch_spec(batch: Mapping[str, np.ndarray],
                     spec: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
  """Raises ValueError (a bug in a source, not a user error) when a batch's keys, shapes
  or dtypes are not those ``batch_spec`` promised."""
  got = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in batch.items()}
  if got != dict(spec):
    raise ValueError(f'the source gave a batch {got}, not the layout batch_spec promised '
                     f'{dict(spec)}: fix data.batch_spec or the source.')


def _entry(data_config: Mapping[str, Any]) -> Source:
  name = data_config.get('name')
  if name not in SOURCES:
    raise UsageError(f'data.name={name!r} is not one of {sorted(SOURCES)}.')
  renames.check_data_names(data_config)
  return SOURCES[name]


def _as_dict(data_config: Mapping[str, Any]) -> dict[str, Any]:
  return data_config.to_dict() if hasattr(data_config, 'to_dict') else dict(data_config)


def _tokenizer_fields(cls) -> dict[str, Any]:
  return getattr(cls, 'TOKENIZER_FIELDS', {})


def tokenizer_options(data_config: Mapping[str, Any]) -> dict[str, Any] | None:
  """The fields of ``data_config`` that choose its source's tokenizer (the source's
  ``TOKENIZER_FIELDS``, each given or at its default) and ``'tokenizer'``, its kind:
  'byte', 'sentencepiece' or, for the BERT sources, 'wordpiece'. None for a source that
  reads no text (synthetic)."""
  data_config = _as_dict(data_config)
  fields = _tokenizer_fields(_entry(data_config).cls)
  if not fields:
    return None
  options = {k: data_config.get(k, default) for k, default in fields.items()}
  options.setdefault('tokenizer', 'wordpiece')  # the BERT sources name no kind: data.vocab
  return options


def train_texts(data_config: Mapping[str, Any]) -> Iterable[str]:
  """The raw train texts of ``data_config``'s source (its module's ``train_texts`` of the
  config completed with the source's defaults): what its tokenizer is trained on."""
  data_config = _as_dict(data_config)
  entry = _entry(data_config)
  parameters = inspect.signature(entry.cls).parameters.values()
  options = {p.name: p.default for p in parameters if p.default is not p.empty}
  options.update(_tokenizer_fields(entry.cls))
  options.update({k: v for k, v in data_config.items() if k != 'name'})
  return entry.train_texts(options)


def build_source(data_config: Mapping[str, Any], split: str,
                 num_examples: int | None = None, *, tokenizer=None):
  """The source ``data_config.name`` for ``split`` ('train' or 'eval'), reading text with
  ``tokenizer`` (the run's, ``fixed_head.data.vocab.for_run``). Without one, a source of
  text gets the byte tokenizer where the config asks for it; a trained one must be given."""
  data_config = _as_dict(data_config)
  name = data_config.get('name')
  cls = _entry(data_config).cls
  fields = _tokenizer_fields(cls)
  options = {k: v for k, v in data_config.items() if k != 'name' and k not in fields}
  if fields:
    if tokenizer is None:
      tokenizer = _byte_tokenizer(data_config)
    options['tokenizer'] = tokenizer
  try:  # only the options are checked here: a TypeError inside the constructor is a bug
    bound = inspect.signature(cls).bind(split=split, num_examples=num_examples, **options)
  except TypeError as e:  # an unknown or missing option for this source
    raise UsageError(f'data options for data.name={name!r}: {e}') from None
  return cls(*bound.args, **bound.kwargs)


def _byte_tokenizer(data_config: Mapping[str, Any]) -> tokenizers.ByteTokenizer:
  """The tokenizer a source of text reads with when none is given: bytes, if the config
  asks for them."""
  options = tokenizer_options(data_config)
  if options['tokenizer'] != 'byte':
    raise UsageError(
        f"data.name={data_config['name']!r} reads with the {options['tokenizer']} tokenizer: "
        'pass it as build_source(..., tokenizer=...); fixed_head.data.vocab.for_data '
        'resolves (and trains) it.')
  return tokenizers.byte_tokenizer(options['vocab_size'])


def train_iterator(source, global_batch_size: int, *, process_index: int = 0,
                   process_count: int = 1):
  """The checkpointable iterator over this process's rows of each global batch."""
  if hasattr(source, 'train_iterator'):
    return source.train_iterator(global_batch_size, process_index=process_index,
                                 process_count=process_count)
  return IndexIterator(source, global_batch_size, process_index=process_index,
                       process_count=process_count)


class IndexIterator(Iterator[Batch]):
  """Global batch k holds source rows [k * B, (k + 1) * B) (B = global batch size);
  each process yields its own contiguous slice of B / process_count rows.

  The state is the next batch index (and ``order.STATE_VERSION``), so resuming is exact and
  cheap. A state without the version was saved by older code: it is refused unless the source
  reads the same rows as that code did (``READS_V1_STATES``: its order did not change). A source
  with ``ROWS_VERSION`` (BERT pre-training) saves it too, and a state of another version (a
  state without one is version 1) is refused: its rows were made another way.
  """

  def __init__(self, source, global_batch_size: int, *, process_index: int = 0,
               process_count: int = 1, start: int = 0):
    if global_batch_size % process_count:
      raise UsageError(f'batch_size={global_batch_size} is not divisible by the number of '
                       f'processes ({process_count}).')
    self.source = source
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.process_index = process_index
    self.next_batch = start

  def __next__(self) -> Batch:
    first = self.next_batch * self.global_batch_size + self.process_index * self.local_batch_size
    if first + self.local_batch_size > len(self.source):
      raise StopIteration
    self.next_batch += 1
    return self.source.get_batch(np.arange(first, first + self.local_batch_size))

  def get_state(self) -> dict[str, int]:
    state = {'next_batch': self.next_batch, 'version': order.STATE_VERSION}
    if hasattr(self.source, 'ROWS_VERSION'):  # how the source makes its rows from the data
      state['rows_version'] = self.source.ROWS_VERSION
    return state

  def set_state(self, state: Mapping[str, int]) -> None:
    if not ('version' not in state and getattr(self.source, 'READS_V1_STATES', False)):
      order.check_state(state, f'{type(self.source).__name__} read by index')
    rows = getattr(self.source, 'ROWS_VERSION', None)
    if rows is not None and state.get('rows_version', 1) != rows:
      raise UsageError(
          f"the checkpoint's data state was saved when {type(self.source).__name__} made its "
          f"rows another way (rows version {state.get('rows_version', 1)}; this code makes "
          f'version {rows}: {self.source.ROWS_CHANGE}), so the run cannot go on reading the '
          'rows it was reading; start a new --workdir, or resume with the code that wrote the '
          'checkpoint.')
    self.next_batch = int(state['next_batch'])


def num_eval_rows(source, num_examples: int | None) -> int:
  """Rows an evaluation scores: the first ``num_examples`` of the split, or all (None)."""
  return len(source) if num_examples is None else min(num_examples, len(source))


def eval_batches(source, batch_size: int, num_examples: int | None = None, *,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """One deterministic pass over the first ``num_examples`` rows (None: all), in global
  batches of ``batch_size``; this process gets its slice of each.

  Every row is scored once: the last batch, when partial, is filled up with copies of the
  last row that count nothing: their ``weight`` is 0 where rows carry one (BERT), else
  their ``segment_ids`` are 0 (LM padding). Only that batch carries ``segment_ids`` where
  the source has none (ones on its real rows: the same mask).
  """
  if batch_size % process_count:
    raise UsageError(f'eval batch_size={batch_size} is not divisible by the number of '
                     f'processes ({process_count}).')
  total = num_eval_rows(source, num_examples)
  local = batch_size // process_count
  for first in range(0, total, batch_size):
    rows = first + process_index * local + np.arange(local)
    valid = rows < total
    if valid.all():
      yield source.get_batch(rows)
      continue
    batch = source.get_batch(np.minimum(rows, total - 1))
    if 'weight' in batch:
      batch['weight'] = np.where(valid, batch['weight'], 0).astype(np.float32)
      yield batch
      continue
    segments = batch.get('segment_ids', np.ones_like(batch['tokens']))
    batch['segment_ids'] = np.where(valid[:, None], segments, 0).astype(np.int32)
    yield batch
