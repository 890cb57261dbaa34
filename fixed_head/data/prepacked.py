r"""A pre-tokenised, pre-packed copy of a TFDS text split, read by row (``data.prepacked_dir``).

The streaming train path (``tfds_text``) costs Python per sentence: reading, shuffling the
index, SentencePiece and packing, some 60 us a sentence, which holds one process to a few
thousand rows/s. This module makes, once, the rows that path packs from the split in stored
order and writes them to ArrayRecord files; training then reads whole batches of stored rows
in a new seeded order each epoch (``order.EpochOrder`` of the rows, seed ``data.shuffle_seed``),
in one ArrayRecord call and a few NumPy operations a batch.

  python prepack.py --config=configs/lm1b.py:fixed --workdir=DIR \
    --config.data.prepacked_dir=PACKED

writes ``PACKED/rows-00000.array_record``, ... and, last, ``PACKED/metadata.json`` (the copy
is finished when that exists). The tokenizer is the run's (``WORKDIR/tokenizer/`` or
``data.tokenizer_path``; trained there first if missing). A killed preparation resumes from
its last finished file (``progress.json``); the same config gives byte-identical files.
Training with ``data.prepacked_dir=PACKED`` reads the copy and refuses one made with another
dataset, split, feature, seq_len, packing mode, long_docs or tokenizer (by its sha256).

Trade-off: the streaming path shuffles documents and packs them anew every epoch; here the
documents are packed once, in stored order, and the *rows* are shuffled every epoch: the
same neighbours share a row in every epoch.

Record: one row, ``tokens`` (little-endian uint16 when the vocabulary fits, else int32) then
its segments, one byte a token: (segment id - 1) mod 255 + 1, 0 = padding. Segment ids
count up by one along a row, so the byte tells a new segment from the last one; segment ids
and positions are recomputed from it (``decode_rows``).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from fixed_head import files
from fixed_head.data import order
from fixed_head.errors import UsageError

FORMAT_VERSION = 1
METADATA = 'metadata.json'  # written last: its presence means the copy is finished
PROGRESS = 'progress.json'  # finished files and the packer state after them, while preparing
ROWS_PER_FILE = 65_536  # about 50 MB a file at n = 256
WRITER_OPTIONS = 'group_size:1,zstd:3'  # one row a chunk: read by row without neighbours
Row = dict[str, np.ndarray]

# Identity fields -> the config field that sets each, in the order mismatches are reported.
FIELDS = {'dataset': 'data.dataset', 'split': 'data.train_split', 'feature': 'data.feature',
          'seq_len': 'data.seq_len', 'packing_mode': 'data.packing_mode',
          'long_docs': 'data.long_docs', 'tokenizer': 'data.tokenizer',
          'vocab_size': 'data.vocab_size', 'tokenizer_sha256': 'data.tokenizer_path',
          'records': 'data.train_split'}


def command(workdir: str | None = None) -> str:
  """The shell command that prepares a copy for a run."""
  workdir = workdir or "<the run's workdir>"
  return f"python prepack.py --config=<the run's config> --workdir={workdir}"


def file_name(index: int) -> str:
  return f'rows-{index:05d}.array_record'


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype('<u2') if vocab_size <= 1 << 16 else np.dtype('<i4')


def encode_row(row: Row, dtype: np.dtype) -> bytes:
  """One packed row -> its record: tokens as ``dtype``, then one segment byte a token."""
  segments = row['segment_ids']
  stored = np.where(segments > 0, (segments - 1) % 255 + 1, 0).astype(np.uint8)
  return row['tokens'].astype(dtype).tobytes() + stored.tobytes()


def decode_rows(records: Sequence[bytes], seq_len: int, dtype: np.dtype) -> Row:
  """Records -> {'tokens', 'segment_ids', 'positions'}: int32 [len(records), seq_len]."""
  raw = np.frombuffer(b''.join(records), np.uint8).reshape(len(records), -1)
  width = seq_len * dtype.itemsize
  tokens = np.ascontiguousarray(raw[:, :width]).view(dtype).astype(np.int32)
  stored = raw[:, width:]
  real = stored > 0
  previous = np.zeros_like(stored)
  previous[:, 1:] = stored[:, :-1]
  starts = real & (stored != previous)
  segment_ids = np.cumsum(starts, axis=1, dtype=np.int32) * real
  index = np.arange(seq_len, dtype=np.int32)
  first = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
  positions = ((index - first) * real).astype(np.int32)
  return {'tokens': tokens, 'segment_ids': segment_ids, 'positions': positions}


def _mismatch(field: str, have: Any, want: Any, directory: str, workdir: str | None) -> str:
  """One line: ``field`` of the copy is ``have``, the run's is ``want``; the fix."""
  elsewhere = (f'or prepare a copy for this config into another data.prepacked_dir with '
               f'`{command(workdir)} --config.data.prepacked_dir=DIR`')
  if field == 'tokenizer_sha256':
    return (f'data.prepacked_dir={directory!r} was made with another {FIELDS[field][5:]} '
            f'(SentencePiece model sha256 {have}) than this run\'s (sha256 {want}); set '
            'data.tokenizer_path to the model it was made with (metadata.json: '
            f'tokenizer_path), {elsewhere}.')
  if field == 'records':
    return (f'data.prepacked_dir={directory!r} was made from {have} records of '
            f'{FIELDS[field]}, which now has {want}: the dataset changed; {elsewhere}.')
  return (f'{FIELDS[field]}={want!r}, but data.prepacked_dir={directory!r} was made with '
          f'{field}={have!r}; set {FIELDS[field]}={have!r}, {elsewhere}.')


def check_identity(saved: Mapping[str, Any], identity: Mapping[str, Any], directory: str,
                   workdir: str | None = None) -> None:
  """Raises UsageError naming the first field of ``identity`` that ``saved`` differs in."""
  for field in FIELDS:
    if field in identity and saved.get(field) != identity[field]:
      raise UsageError(_mismatch(field, saved.get(field), identity[field], directory, workdir))


def read_metadata(directory: str, workdir: str | None = None) -> dict[str, Any]:
  """The finished copy's metadata; UsageError if there is none or of another format."""
  path = os.path.join(directory, METADATA)
  if not os.path.isfile(path):
    half = os.path.isfile(os.path.join(directory, PROGRESS))
    what = 'a copy not finished yet' if half else 'no pre-packed copy'
    raise UsageError(f'data.prepacked_dir={directory!r} holds {what} (no {METADATA}); '
                     f'{"finish" if half else "make"} it with `{command(workdir)}`, or set '
                     "data.prepacked_dir='' to read the dataset directly.")
  with open(path, encoding='utf-8') as f:
    metadata = json.load(f)
  if metadata.get('format_version') != FORMAT_VERSION:
    raise UsageError(f'data.prepacked_dir={directory!r} is format version '
                     f'{metadata.get("format_version")}, this code reads {FORMAT_VERSION}; '
                     f'prepare it again into another directory with `{command(workdir)}`.')
  return metadata


class PrepackedRows:
  """A finished copy: ``len``, ``read(indices) -> Row`` (one ArrayRecord call a batch)."""

  def __init__(self, directory: str, metadata: Mapping[str, Any]):
    self.directory, self.metadata = directory, metadata
    self.seq_len = int(metadata['seq_len'])
    self.dtype = np.dtype(metadata['record']['tokens'])
    paths = []
    for entry in metadata['files']:
      path = os.path.join(directory, entry['name'])
      size = os.path.getsize(path) if os.path.isfile(path) else None
      if size != entry['bytes']:
        raise UsageError(f'data.prepacked_dir={directory!r}: {entry["name"]} is '
                         f'{"missing" if size is None else f"{size} bytes"}, not the '
                         f'{entry["bytes"]} it was written with; prepare the copy again into '
                         f'a new directory with `{command()}`.')
      paths.append(path)
    self._source = grain.sources.ArrayRecordDataSource(paths)
    if len(self._source) != metadata['rows']:
      raise UsageError(f'data.prepacked_dir={directory!r} holds {len(self._source)} rows, not '
                       f'the {metadata["rows"]} of its {METADATA}; prepare it again.')

  def __len__(self) -> int:
    return int(self.metadata['rows'])

  def read(self, indices: np.ndarray) -> Row:
    """Rows ``indices`` (int [k]): int32 [k, n] each, read in one call."""
    records = self._source.__getitems__(np.asarray(indices, np.int64).tolist())
    return decode_rows(records, self.seq_len, self.dtype)


class BatchIndices:
  """A Grain random-access source: batch k -> the row indices (int64 [b]) this process
  reads at step ``start + k``.

  The rows are read in the one train order (``order.EpochOrder`` of all N rows, every row
  once an epoch, a new permutation each epoch), as an index source's are: global batch j is
  rows [j B, (j + 1) B) of that stream (B = b * process_count) and this process reads its
  slice [process_index * b, (process_index + 1) * b) of it. A batch may span two epochs.
  """

  def __init__(self, num_rows: int, batch_size: int, *, seed: int, process_index: int,
               process_count: int, start: int = 0):
    self.order = order.EpochOrder(num_rows, seed)
    self.batch_size, self.start = batch_size, start
    self._global, self._offset = batch_size * process_count, batch_size * process_index

  def __len__(self) -> int:
    return len(self.order) // self._global - self.start

  def __getitem__(self, k: int) -> np.ndarray:
    first = (self.start + int(k)) * self._global + self._offset
    return self.order.take(first + np.arange(self.batch_size))


class PrepackedTrainIterator(Iterator[Row]):
  """This process's rows of each global batch from a pre-packed copy: {'tokens',
  'segment_ids', 'positions'}: int32 [local_batch, n] each, endless.

  Grain reads the batches (``data.read_threads`` threads ahead): a MapDataset of
  ``BatchIndices`` mapped through ``PrepackedRows.read``. ``get_state()`` ->
  {'version': order.STATE_VERSION, 'prepacked_rows': N, 'process_count': P,
  'next_batch': k}, JSON: every process reads batch k at step k, so the state is the same on
  all and needs no collective.
  """

  def __init__(self, rows: PrepackedRows, local_batch_size: int, *, seed: int,
               process_index: int, process_count: int, read_threads: int = 2,
               describe: str = 'data train (pre-packed)', log: Callable[[str], None] = print):
    self.rows, self.local_batch_size = rows, local_batch_size
    self.process_index, self.process_count = process_index, process_count
    self._seed, self._threads, self._describe, self._log = seed, read_threads, describe, log
    self._start(0)

  def _start(self, next_batch: int) -> None:
    self._indices = BatchIndices(len(self.rows), self.local_batch_size, seed=self._seed,
                                 process_index=self.process_index,
                                 process_count=self.process_count, start=next_batch)
    options = grain.ReadOptions(num_threads=self._threads,
                                prefetch_buffer_size=max(2, 2 * self._threads))
    dataset = grain.MapDataset.source(self._indices).map(self.rows.read)
    self._batches = iter(dataset.to_iter_dataset(options))
    self.next_batch = next_batch

  def __next__(self) -> Row:
    batch = next(self._batches)
    self.next_batch += 1
    return batch

  def epoch(self) -> float:
    """Epochs of the copy's rows read so far (by all processes together)."""
    return self.next_batch * self.local_batch_size * self.process_count / len(self.rows)

  def get_state(self) -> dict[str, int]:
    if self.process_index == 0:
      self._log(f'{self._describe} (process 0 of {self.process_count}): {self.next_batch} '
                f'batches read, {self.epoch():.3f} epochs of the {len(self.rows)} rows.')
    return {'version': order.STATE_VERSION, 'prepacked_rows': len(self.rows),
            'process_count': self.process_count, 'next_batch': self.next_batch}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if 'prepacked_rows' not in state:
      raise UsageError(
          "the checkpoint's data state was written by the streaming reader "
          "(data.prepacked_dir=''), but this run reads a pre-packed copy; resume with "
          "data.prepacked_dir='' or start a new --workdir.")
    order.check_state(state, 'the pre-packed copy reader')
    if state['prepacked_rows'] != len(self.rows):
      raise UsageError(f'the checkpoint\'s data state is for a pre-packed copy of '
                       f'{state["prepacked_rows"]} rows, but data.prepacked_dir='
                       f'{self.rows.directory!r} holds {len(self.rows)}; resume with the copy '
                       'the run started with, or start a new --workdir.')
    if state['process_count'] != self.process_count:
      raise UsageError(f'the checkpoint\'s data state was written by {state["process_count"]} '
                       f'process(es), but this run has {self.process_count}; resume with the '
                       'same number of processes (each reads its own shard of the rows), or '
                       'start a new --workdir.')
    self._start(int(state['next_batch']))


# --- Preparation ---------------------------------------------------------------------------

def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes // 60}h{minutes % 60:02d}m' if minutes >= 60 else f'{minutes}m{seconds:02d}s'


def _stale(name: str) -> bool:
  """A file of ours that a killed preparation may leave: an unrecorded or temporary one."""
  return name.startswith('rows-') or (name.startswith((METADATA + '.', PROGRESS + '.'))
                                      and name.endswith('.tmp'))


def _ours(name: str) -> bool:
  return name in (METADATA, PROGRESS) or _stale(name)


def _write_file(path: str, rows: Iterator[Row], count: int, dtype: np.dtype,
                on_row: Callable[[], None]) -> int:
  """Writes up to ``count`` rows of ``rows`` to ``path`` through ``path.tmp`` (renamed once
  closed and on disk); returns the rows written (0: none left, nothing written)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  tmp, written = path + '.tmp', 0
  writer = None
  try:
    for row in rows:
      if writer is None:
        writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
      writer.write(encode_row(row, dtype))
      written += 1
      on_row()
      if written == count:
        break
    if writer is None:
      return 0
    writer.close()
    writer = None
    with open(tmp, 'rb+') as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
    return written
  finally:
    if writer is not None:
      writer.close()
    if os.path.exists(tmp):
      os.remove(tmp)


def prepare(source, directory: str, *, workdir: str | None = None,
            rows_per_file: int = ROWS_PER_FILE, progress_every: float = 5.0,
            log: Callable[[str], None] = print) -> dict[str, Any]:
  """Writes the rows ``source`` (a ``tfds_text.TfdsTextLM``) packs from its split in stored
  order into ``directory``; returns the metadata. Already finished with the same identity:
  nothing is written. Resumes a killed preparation from its last finished file."""
  if not directory:
    raise UsageError("data.prepacked_dir='': set --config.data.prepacked_dir=DIR, the "
                     'directory the pre-packed copy is written to.')
  if not isinstance(rows_per_file, int) or rows_per_file <= 0:
    raise UsageError(f'--rows_per_file={rows_per_file!r}: must be a positive integer.')
  directory = os.path.abspath(os.path.expanduser(directory))
  identity = source.prepacked_identity()
  if os.path.isfile(os.path.join(directory, METADATA)):
    metadata = read_metadata(directory, workdir)
    check_identity(metadata, identity, directory, workdir)
    log(f'{directory}: already prepared ({metadata["rows"]:,} rows); nothing to do.')
    return metadata
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise UsageError(f'data.prepacked_dir={directory!r} is a file; choose a directory.')
  os.makedirs(directory, exist_ok=True)
  others = sorted(name for name in os.listdir(directory) if not _ours(name))
  if others:
    raise UsageError(f'data.prepacked_dir={directory!r} holds other files ({", ".join(others[:3])}'
                     f'{", ..." if len(others) > 3 else ""}); choose a new or empty directory.')

  progress = {'identity': identity, 'rows_per_file': rows_per_file, 'files': [], 'state': None}
  progress_path = os.path.join(directory, PROGRESS)
  if os.path.isfile(progress_path):
    with open(progress_path, encoding='utf-8') as f:
      saved = json.load(f)
    try:
      check_identity(saved['identity'], identity, directory, workdir)
    except UsageError as e:
      raise UsageError(f'{e} (It holds an unfinished copy: delete the directory to start '
                       'over.)') from None
    progress = saved
    log(f'{directory}: resuming after {len(saved["files"])} finished file(s), '
        f'{sum(e["rows"] for e in saved["files"]):,} rows.')
  listed = {entry['name'] for entry in progress['files']}
  for name in os.listdir(directory):  # files of ours a killed run left unrecorded
    if _stale(name) and name not in listed:
      os.remove(os.path.join(directory, name))

  rows = source.stored_order_rows()
  if progress['state'] is not None:
    rows.set_state(copy.deepcopy(progress['state']))
  dtype = token_dtype(identity['vocab_size'])
  total_docs = identity['records']
  written = sum(entry['rows'] for entry in progress['files'])
  begin = time.monotonic()
  begin_docs = rows.stats.documents + rows.stats.empty_documents
  last = [begin]

  def on_row() -> None:
    now = time.monotonic()
    if now - last[0] < progress_every:
      return
    last[0] = now
    docs = rows.stats.documents + rows.stats.empty_documents
    rate = (docs - begin_docs) / max(now - begin, 1e-9)
    eta = _format_duration((total_docs - docs) / rate) if rate > 0 else '?'
    log(f'prepacked: {written + file_rows[0]:,} rows written, {docs:,}/{total_docs:,} '
        f'documents ({rate:,.0f} docs/s), ETA {eta}')

  file_rows = [0]

  def counted() -> None:
    file_rows[0] += 1
    on_row()

  while True:
    name = file_name(len(progress['files']))
    file_rows[0] = 0
    count = _write_file(os.path.join(directory, name), rows, progress['rows_per_file'], dtype,
                        counted)
    if not count:
      break
    written += count
    progress['files'].append({'name': name, 'rows': count,
                              'bytes': os.path.getsize(os.path.join(directory, name))})
    progress['state'] = rows.get_state()
    files.write_atomically(progress_path, json.dumps(progress, sort_keys=True))
    if count < progress['rows_per_file']:
      break

  if not written:
    raise UsageError(f'{FIELDS["split"]}={identity["split"]!r} packs into no rows: its '
                     'documents are all empty.')
  stats = rows.stats
  metadata = dict(
      identity, format_version=FORMAT_VERSION, rows=written, files=progress['files'],
      rows_per_file=progress['rows_per_file'], writer_options=WRITER_OPTIONS,
      record={'tokens': dtype.str, 'segments': '|u1: (segment id - 1) % 255 + 1, 0 = padding',
              'bytes': identity['seq_len'] * (dtype.itemsize + 1)},
      stats={**{key: getattr(stats, key) for key in vars(stats)}, 'fill': stats.fill})
  files.write_atomically(os.path.join(directory, METADATA),
                         json.dumps(metadata, indent=2, sort_keys=True) + '\n')
  os.remove(progress_path)
  log(f'{directory}: {stats.documents:,} documents -> {written:,} rows of '
      f'{identity["seq_len"]} tokens ({stats.fill:.0%} filled) in {len(progress["files"])} '
      f'file(s); {stats.split} split and {stats.truncated} truncated documents, '
      f'{stats.dropped_tokens} tokens dropped, {stats.empty_documents} empty skipped.')
  return metadata
