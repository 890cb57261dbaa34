"""A TFDS text dataset as a language-modelling source (``config.data.name = 'tfds'``).

Any TFDS dataset with a text feature (``data.dataset``, ``data.feature``; LM1B first) is
read without TensorFlow: ``tfds.data_source`` opens its prepared ArrayRecord files for
random access and Grain reads them. Each record's text is tokenised with the run's tokenizer
(SentencePiece, trained on ``train_texts``, the first ``data.tokenizer_max_sentences``
train records, the first time and kept in the workdir; or bytes), wrapped in bos/eos, and
packed into rows of n tokens by ``packing.Packer`` (mode 'pack' as ``pack_documents``, or
'pad', one document per row).

Train (``train_iterator``): the records in the one seeded order of ``order.EpochOrder``
(seed ``data.shuffle_seed``, a new permutation each epoch, endless); process p of P reads
documents p, p + P, p + 2P, ... of it (so every record is read once an epoch over all
processes), packs them and batches the rows. The iterator state is a few integers per
process: the position of the next document in that endless order, how many pieces of a
document split across a row boundary are already placed, and the packing counts. A resumed
run reads exactly the rows an uninterrupted one would.

Train from a pre-packed copy (``data.prepacked_dir``, see ``prepacked``): the same rows,
packed once from the split in stored order, read a batch at a time in a new seeded order
of rows each epoch, with no Python per sentence.

Eval (and ``get_batch`` / ``len`` on any split): one pass in stored order, packed; the first
``num_examples`` rows are held in memory (read from the pre-packed copy when there is one).

Prepare a dataset once (this needs TensorFlow; see requirements-prepare.txt, docs/data.md,
"Preparing TFDS datasets"):

  python prepare.py lm1b --data_dir=DIR
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import grain
import numpy as np

from fixed_head import files, quiet_logs
from fixed_head.data import order, packing, prepacked, rows
from fixed_head.errors import UsageError

quiet_logs.install()

SPLITS = ('train', 'eval')
PACKING_MODES = packing.MODES
DOCS_PER_READ = 256  # records read and encoded per call; saved iterator states count in these
Row = dict[str, np.ndarray]


def prepare_command(dataset: str, data_dir: str | None) -> str:
  """The shell command that prepares ``dataset`` for ``tfds.data_source``
  (``prepare.py``; TFDS's ``tfds build`` needs apache-beam and mlcroissant
  to start)."""
  return (f'python prepare.py {dataset}'
          + (f' --data_dir={data_dir}' if data_dir else ''))


def prepared_format(builder) -> str:
  """The file format a prepared builder's records are in ('array_record', 'tfrecord', ...),
  or '' when its info does not say."""
  file_format = getattr(builder.info, 'file_format', None)
  return str(getattr(file_format, 'value', file_format or ''))


def _data_dir_field(data_dir: str | None) -> str:
  return (f'data.data_dir={data_dir!r}' if data_dir else
          'data.data_dir unset: $TFDS_DATA_DIR, else ~/tensorflow_datasets')


def _how_to_prepare(dataset: str, data_dir: str | None) -> str:
  return (f'prepare it once with `{prepare_command(dataset, data_dir)}` (needs '
          '`pip install -r requirements-prepare.txt`; see docs/data.md, "Preparing TFDS datasets"), or set '
          'data.data_dir to the directory where it is prepared')


# Builders tensorflow-datasets does not register until their module is imported (importing
# them needs no TensorFlow): 'glue/mnli' and 'wikipedia/...' would otherwise be unknown names.
BUILDER_MODULES = {'glue': 'tensorflow_datasets.text.glue',
                   'wikipedia': 'tensorflow_datasets.text.wikipedia'}


def register(dataset: str) -> None:
  """Imports the module that registers ``dataset``'s builder, where TFDS needs that."""
  module = BUILDER_MODULES.get(dataset.split('/')[0].split(':')[0])
  if module:
    importlib.import_module(module)


def open_split(dataset: str, split: str, *, data_dir: str | None = None,
               feature: str = 'text', split_field: str = 'data.train_split',
               dataset_field: str | None = None):
  """``tfds.data_source`` of a prepared split, checked: records hold text at ``feature``.

  Raises one UsageError naming the dataset, the directory searched, the config field and
  the fix for an unknown dataset, an unprepared one (never downloads), one prepared in a
  format that cannot be read by index, a missing split, an empty split or a missing feature.
  ``dataset_field`` is how the messages name the dataset's config field (default
  ``data.dataset=<dataset>``; a source that picks the dataset from another field names that,
  e.g. ``data.task='mnli' (TFDS 'glue/mnli')``).
  """
  dataset_field = dataset_field or f'data.dataset={dataset!r}'
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  register(dataset)
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UsageError(
        f'{dataset_field}: tensorflow-datasets {tfds.__version__} knows no dataset of '
        f'that name and none is prepared in the data directory ({_data_dir_field(data_dir)}). '
        'Check the name against https://www.tensorflow.org/datasets/catalog/overview, or '
        'point data.data_dir at its prepared files.') from None
  where = str(builder.data_dir)
  try:
    records = tfds.data_source(dataset, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except
    if not builder.is_prepared():
      raise UsageError(f'{dataset_field} is not prepared: nothing in {where} '
                       f'({_data_dir_field(data_dir)}); {_how_to_prepare(dataset, data_dir)}.'
                       ) from None
    splits = sorted(builder.info.splits)
    if split.split('[')[0] not in splits:
      raise UsageError(f'{split_field}={split!r}: {dataset} in {where} has the splits {splits}; '
                       f'set {split_field} to one of them (a slice such as '
                       f"'{splits[0]}[:1%]' works too).") from None
    file_format = prepared_format(builder)
    if file_format and file_format not in ('array_record', 'parquet'):
      raise UsageError(f'{dataset_field} in {where} is prepared as {file_format}, which '
                       'cannot be read by index; prepare it again with '
                       f'`{prepare_command(dataset, "ANOTHER_DIR")}` and set data.data_dir, or '
                       f'delete {where} first.') from None
    raise UsageError(f'{dataset_field}, {split_field}={split!r} in {where} cannot be '
                     f'opened ({type(e).__name__}: {e}).') from e
  if len(records) == 0:  # pylint: disable=g-explicit-length-test
    raise UsageError(f'{split_field}={split!r} of {dataset} in {where} holds no records; '
                     'choose another split.')
  first = records[0]
  if feature not in first:
    raise UsageError(f'data.feature={feature!r}: the records of {dataset} in {where} have the '
                     f'features {sorted(first)}; set data.feature to the text one.')
  if not isinstance(first[feature], (str, bytes)):
    raise UsageError(f'data.feature={feature!r} of {dataset} holds {type(first[feature]).__name__}'
                     ', not text; set data.feature to a text feature.')
  return records


def decode_text(value: str | bytes) -> str:
  """A TFDS Text value as str: prepared datasets read back UTF-8 bytes, tfds.testing.mock_data
  gives str."""
  return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else value


def open_raw(dataset: str, split: str, data_dir: str | None):
  """The same split as serialized tf.Example bytes (None if TFDS cannot give them)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(dataset, split=split, data_dir=data_dir, download=False,
                            deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  except Exception:  # pylint: disable=broad-except
    return None


def example_text(serialized: bytes, feature: str) -> str:
  """The text feature ``feature`` of a serialized tf.Example (TFDS's on-disk record)."""
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
  values = tf_example_pb2.Example.FromString(serialized).features.feature[feature].bytes_list
  return values.value[0].decode('utf-8', errors='replace') if values.value else ''


class ReadDocuments:
  """Record indices int [k] -> their documents: token ids wrapped in bos/eos (as
  ``tokenizers.encode_documents``), a list of k int32 [len_i] arrays.

  Reads the k records in one ``__getitems__`` call (ArrayRecord reads them in parallel: on
  a 2-core VM about 25 us a record, against 300-400 us one ``[i]`` at a time), takes the
  text out of the serialized tf.Example itself when ``raw`` gives them (2 us a record,
  against about 30 us for TFDS's general decoder; checked equal on record 0), and encodes
  them in one ``tokenizer.encode_batch`` call.
  """

  def __init__(self, records, feature: str, tokenizer=None, raw=None):
    self.feature, self.tokenizer = feature, tokenizer
    self._source, self._parse = records, lambda record: decode_text(record[feature])
    self.parses_examples = False  # whether it reads tf.Example bytes and parses them here
    if raw is not None:
      try:
        self.parses_examples = example_text(raw[0], feature) == decode_text(records[0][feature])
      except Exception:  # pylint: disable=broad-except
        pass
      if self.parses_examples:
        self._source, self._parse = raw, lambda record: example_text(record, feature)
    try:
      self._source.__getitems__([0])
      self._batched = True
    except (AttributeError, TypeError):  # tfds.testing.mock_data's sources (tfds 4.9.10)
      self._batched = False

  def texts(self, indices) -> list[str]:
    keys = [int(i) for i in indices]
    found = (self._source.__getitems__(keys) if self._batched
             else [self._source[k] for k in keys])
    return [self._parse(record) for record in found]

  def __call__(self, indices) -> list[np.ndarray]:
    ids = self.tokenizer.encode_batch(self.texts(indices))
    bos, eos = [self.tokenizer.bos_id], [self.tokenizer.eos_id]
    return [np.asarray(bos + doc + eos, np.int32) for doc in ids]


def _gather_strings(local: str) -> list[str]:
  """Every JAX process's ``local`` string, in process order (a collective)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.frombuffer(local.encode('utf-8'), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32)))
  sizes = sizes.reshape(-1)
  padded = np.zeros((int(sizes.max()),), np.uint8)
  padded[:data.size] = data
  everything = np.asarray(multihost_utils.process_allgather(padded))
  return [bytes(row[:size]).decode('utf-8') for row, size in zip(everything, sizes)]


class TrainIterator(Iterator[Row]):
  """This process's rows of each global batch: {'tokens', 'segment_ids', 'positions'}:
  int32 [local_batch, n] each.

  ``get_state()`` -> {'process_count': P, 'processes': {'<p>': state of process p}}, JSON.
  The trainer saves it from process 0 only, so with several JAX processes ``get_state`` is
  a collective (every process calls it at the same step, as the trainer does) that gathers
  all their states; ``set_state`` takes this process's own.
  """

  def __init__(self, rows: packing.Packer, local_batch_size: int, *,
               process_index: int, process_count: int, describe: str = 'data train',
               log: Callable[[str], None] = print):
    self._rows = rows
    self.local_batch_size = local_batch_size
    self.process_index, self.process_count = process_index, process_count
    self._describe, self._log = describe, log

  @property
  def stats(self) -> packing.PackingStats:
    """This process's packing counts since the start of training."""
    return self._rows.stats

  def __next__(self) -> Row:
    rows = [next(self._rows) for _ in range(self.local_batch_size)]
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}

  def get_state(self) -> dict[str, Any]:
    own = json.dumps(self._rows.get_state())
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_count() > 1:
      states = dict(enumerate(_gather_strings(own)))
    else:
      states = {self.process_index: own}
    s = self.stats
    if self.process_index == 0:
      self._log(f'{self._describe} (process 0 of {self.process_count}) so far: {s.documents} '
                f'documents -> {s.rows} rows ({s.fill:.0%} filled); {s.split} split and '
                f'{s.truncated} truncated documents, {s.dropped_tokens} tokens dropped.')
    return {'version': order.STATE_VERSION, 'process_count': self.process_count,
            'processes': {str(p): json.loads(state) for p, state in states.items()}}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if 'prepacked_rows' in state:
      raise UsageError("the checkpoint's data state was written reading a pre-packed copy "
                       "(data.prepacked_dir), but this run streams the dataset; resume with "
                       'the same data.prepacked_dir, or start a new --workdir.')
    order.check_state(state, 'the streaming TFDS reader')
    saved = state.get('processes', {})
    if state.get('process_count') != self.process_count or str(self.process_index) not in saved:
      raise UsageError(
          f'the checkpoint\'s data state was written by {state.get("process_count")} process(es) '
          f'(states for {sorted(saved)}), but this run has {self.process_count}; resume with '
          'the same number of processes (each reads its own shard of the data), or start a '
          'new --workdir.')
    self._rows.set_state(saved[str(self.process_index)])


def check_read_threads(read_threads) -> None:
  if not isinstance(read_threads, int) or read_threads < 0:
    raise UsageError(f'data.read_threads={read_threads!r}: must be an int >= 0.')


def chunks(records: grain.MapDataset, fn: Callable[[np.ndarray], list], read_threads: int
           ) -> grain.IterDataset:
  """``fn`` of each run of ``DOCS_PER_READ`` consecutive record indices of ``records``;
  Grain's ``read_threads`` threads read and encode them ahead."""
  options = grain.ReadOptions(num_threads=read_threads,
                              prefetch_buffer_size=max(2, 2 * read_threads))
  return records.batch(DOCS_PER_READ).map(fn).to_iter_dataset(options)


def train_texts(options: Mapping[str, Any]) -> Iterable[str]:
  """The first ``data.tokenizer_max_sentences`` texts of the train split of a complete data
  config, in stored order (TFDS shuffles records when it prepares a dataset, so this is a
  sample): what its SentencePiece model learns."""
  data_dir, feature = options['data_dir'] or None, options['feature']
  check_read_threads(options['read_threads'])
  records = open_split(options['dataset'], options['train_split'], data_dir=data_dir,
                       feature=feature, split_field='data.train_split')
  reader = ReadDocuments(records, feature,
                         raw=open_raw(options['dataset'], options['train_split'], data_dir))
  first = grain.MapDataset.range(min(options['tokenizer_max_sentences'], len(records)))
  return itertools.chain.from_iterable(chunks(first, reader.texts, options['read_threads']))


class TfdsTextLM:
  """Rows {'tokens', 'segment_ids', 'positions'}: int32 [n] each (segment id 0 = padding)
  from a TFDS text dataset.

  ``split`` 'train' reads ``train_split`` (shuffled stream: ``train_iterator``), 'eval'
  reads ``eval_split``; ``len`` / ``get_batch`` / ``[i]`` serve the first ``num_examples``
  rows of one in-order pass (built at once for 'eval', on first use for 'train').
  """

  # What its rows hold, known without reading one (fixed_head/data/rows.py).
  ROWS = rows.LM

  # The config fields that choose the tokenizer (the run's resolver reads them, not the
  # source), with their defaults: a SentencePiece model trained on the first
  # tokenizer_max_sentences train records, or bytes.
  TOKENIZER_FIELDS = {'tokenizer': 'sentencepiece', 'tokenizer_path': None, 'vocab_size': None,
                      'tokenizer_max_sentences': 1_000_000}

  def __init__(self, *, split: str, seq_len: int, tokenizer, dataset: str = 'lm1b',
               feature: str = 'text', train_split: str = 'train', eval_split: str = 'test',
               data_dir: str | None = None, shuffle_seed: int = 0, packing_mode: str = 'pack',
               long_docs: str = 'split', read_threads: int = 2, prepacked_dir: str = '',
               num_examples: int | None = None, log: Callable[[str], None] = print):
    if split not in SPLITS:
      raise ValueError(f'split={split!r}: must be one of {SPLITS}.')
    if packing_mode not in PACKING_MODES:
      raise UsageError(f"data.packing_mode={packing_mode!r}: must be 'pack' or 'pad'.")
    if long_docs not in packing.LONG_DOCS:
      raise UsageError(f"data.long_docs={long_docs!r}: must be 'split' or 'truncate'.")
    if not isinstance(seq_len, int) or seq_len <= 0:
      raise UsageError(f'data.seq_len={seq_len!r}: must be a positive int (the row length n).')
    check_read_threads(read_threads)
    self.split, self.seq_len, self.tokenizer = split, seq_len, tokenizer
    self.dataset, self.feature, self.data_dir = dataset, feature, data_dir or None
    self.train_split, self.shuffle_seed = train_split, shuffle_seed
    self.packing_mode, self.long_docs, self.read_threads = packing_mode, long_docs, read_threads
    self.num_examples, self._log = num_examples, log
    self.tfds_split = train_split if split == 'train' else eval_split
    self.records = None
    self.prepacked: prepacked.PrepackedRows | None = None
    # A pre-packed copy must agree with the config and the tokenizer before the split is
    # opened, and with the split's number of records once it is.
    metadata = self._prepacked_metadata(prepacked_dir) if split == 'train' and prepacked_dir \
        else None
    self.records = open_split(dataset, self.tfds_split, data_dir=self.data_dir, feature=feature,
                              split_field=f'data.{split}_split')
    self.read = ReadDocuments(self.records, feature, self.tokenizer,
                              raw=open_raw(dataset, self.tfds_split, self.data_dir))
    self._rows: dict[str, np.ndarray] | None = None
    self.stats: packing.PackingStats | None = None  # of the held rows
    if metadata is not None:
      prepacked.check_identity(metadata, self.prepacked_identity(), self.prepacked_dir)
      self.prepacked = prepacked.PrepackedRows(self.prepacked_dir, metadata)
      self.stats = packing.PackingStats(**{k: v for k, v in metadata['stats'].items()
                                           if k != 'fill'})
    if split == 'eval':
      self._hold_rows()

  def _prepacked_metadata(self, prepacked_dir: str) -> dict[str, Any]:
    """The metadata of the pre-packed copy in ``prepacked_dir``, checked against this
    source's config and tokenizer (``prepacked_identity``)."""
    if files.is_url(prepacked_dir):
      raise UsageError(f'data.prepacked_dir={prepacked_dir!r}: the pre-packed copy is read '
                       'with the local file API; copy it to a local disk of each host and '
                       'give that path.')
    self.prepacked_dir = os.path.abspath(os.path.expanduser(prepacked_dir))
    metadata = prepacked.read_metadata(self.prepacked_dir)
    prepacked.check_identity(metadata, self.prepacked_identity(), self.prepacked_dir)
    return metadata

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def _chunks(self, records: grain.MapDataset, fn: Callable[[np.ndarray], list]
              ) -> grain.IterDataset:
    return chunks(records, fn, self.read_threads)

  def prepacked_identity(self) -> dict[str, Any]:
    """What a pre-packed copy of this train split must agree with (the number of records
    too, once the split is open)."""
    path = getattr(self.tokenizer, 'model_path', None)
    identity = {'dataset': self.dataset, 'split': self.tfds_split, 'feature': self.feature,
                'seq_len': self.seq_len, 'packing_mode': self.packing_mode,
                'long_docs': self.long_docs, 'tokenizer': self.tokenizer.KIND,
                'vocab_size': self.vocab_size,
                'tokenizer_sha256': files.sha256(path) if path else None,
                'tokenizer_path': path}
    if self.records is not None:
      identity['records'] = len(self.records)
    return identity

  def _packer(self, records: grain.MapDataset) -> packing.Packer:
    """The rows of the documents of ``records`` (record indices, in the order read), as a
    checkpointable iterator."""
    return packing.Packer(iter(self._chunks(records, self.read)), self.seq_len,
                          mode=self.packing_mode, long_docs=self.long_docs, trusted=True)

  def stored_order_rows(self) -> packing.Packer:
    """The rows of one pass over the split in stored order (what ``_hold_rows`` holds), as
    a checkpointable iterator: what ``prepacked.prepare`` writes."""
    return self._packer(grain.MapDataset.range(len(self.records)))

  def _hold_rows(self) -> None:
    if self.prepacked is not None:
      count = len(self.prepacked) if self.num_examples is None else min(
          self.num_examples, len(self.prepacked))
      self._rows = self.prepacked.read(np.arange(count))
      return
    rows = self.stored_order_rows()
    self._rows = packing.stack_rows(itertools.islice(rows, self.num_examples))
    self.stats = rows.stats
    held = len(self._rows['tokens'])
    scope = 'all' if self.num_examples is None or held < self.num_examples else 'the first'
    self._log(f'data {self.split} ({self.dataset} {self.tfds_split!r}): {self.stats.documents} '
              f'documents -> {scope} {held} rows of {self.seq_len} tokens ({self.stats.fill:.0%} '
              f'filled); {self.stats.split} split and {self.stats.truncated} truncated '
              f'documents, {self.stats.dropped_tokens} tokens dropped, '
              f'{self.stats.empty_documents} empty skipped.')

  def __len__(self) -> int:
    if self._rows is None:
      self._hold_rows()
    return len(self._rows['tokens'])

  def get_batch(self, indices: Iterable[int]) -> dict[str, np.ndarray]:
    if self._rows is None:
      self._hold_rows()
    indices = np.fromiter(indices, np.int64)
    return {key: value[indices] for key, value in self._rows.items()}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {key: value[0] for key, value in self.get_batch([index]).items()}

  def train_order(self, *, process_index: int = 0, process_count: int = 1
                  ) -> grain.MapDataset:
    """The record indices this process reads, in order: documents process_index,
    process_index + process_count, ... of the one endless seeded order of the split."""
    records = order.EpochOrder(len(self.records), self.shuffle_seed)
    return grain.MapDataset.source(records)[process_index::process_count]

  def train_iterator(self, global_batch_size: int, *, process_index: int = 0,
                     process_count: int = 1) -> TrainIterator:
    """This process's rows of each global batch of ``global_batch_size`` rows, endless."""
    if self.split != 'train':
      raise ValueError(f'train_iterator needs the train split, not {self.split!r}.')
    if global_batch_size % process_count:
      raise UsageError(f'batch_size={global_batch_size} is not divisible by the number of '
                       f'processes ({process_count}).')
    if self.prepacked is not None:
      return prepacked.PrepackedTrainIterator(
          self.prepacked, global_batch_size // process_count,
          seed=self.shuffle_seed, process_index=process_index,
          process_count=process_count, read_threads=self.read_threads,
          describe=f'data train ({self.dataset} {self.tfds_split!r}, pre-packed)', log=self._log)
    rows = self._packer(self.train_order(process_index=process_index,
                                         process_count=process_count))
    return TrainIterator(rows, global_batch_size // process_count,
                         process_index=process_index, process_count=process_count,
                         describe=f'data train ({self.dataset} {self.tfds_split!r})',
                         log=self._log)
