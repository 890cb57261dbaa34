"""GLUE sentence-pair classification (MNLI) as BERT rows (``config.data.name = 'glue'``).

Each record of TFDS ``glue/<task>`` (read with ``tfds.data_source``, no TensorFlow) becomes
one row laid out as Google BERT's run_classifier.py: [CLS] premise [SEP] hypothesis [SEP],
WordPiece tokens, the longer text truncated first (``truncate_pair``) to fit ``seq_len``.

  tokens, token_types, input_mask   int32 [seq_len]  (types 0 up to the first [SEP], then 1;
                                                       mask 1 on real tokens, 0 on padding)
  label                             int32 []         (MNLI: 0 entailment, 1 neutral,
                                                       2 contradiction)
  weight                            float32 []       (1.0)

Split 'train' reads ``train_split`` in a seeded order that changes every epoch: row k is
example ``perm_e[k % N]`` of epoch e = k // N (``order.EpochOrder``, seed
``data.shuffle_seed``); ``len`` is ``order.ENDLESS`` so the index iterator keeps going.
Split 'eval' reads ``eval_split`` in stored order. MNLI has two validation sets: give them as
two evaluators, one with ``data.eval_split`` overridden to 'validation_mismatched' (the
default is 'validation_matched'). The test splits have no labels (-1) and are refused.

The vocabulary is the run's (``fixed_head.data.vocab``): ``data.vocab``, else the
pre-trained run's (``init_from/vocab.txt``), else the workdir's, else one trained on
``train_texts``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from fixed_head.data import order, packing, rows, tfds_text
from fixed_head.errors import UsageError

SPLITS = ('train', 'eval')
# task -> (TFDS dataset, first text, second text, number of classes)
TASKS = {'mnli': ('glue/mnli', 'premise', 'hypothesis', 3)}
Row = dict[str, np.ndarray]


def check_positive_int(field: str, value, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise UsageError(f'{field}={value!r}: must be an integer >= {minimum}.')


def truncate_pair(a: Sequence[int], b: Sequence[int], max_len: int
                  ) -> tuple[list[int], list[int]]:
  """BERT's ``_truncate_seq_pair``: drop the last token of the longer one (of ``b`` on a tie)
  until len(a) + len(b) <= max_len."""
  a, b = list(a), list(b)
  while len(a) + len(b) > max_len:
    (a if len(a) > len(b) else b).pop()
  return a, b


def pair_row(a: Sequence[int], b: Sequence[int] | None, seq_len: int, tokenizer) -> Row:
  """[CLS] a [SEP] b [SEP], truncated to ``seq_len`` and padded: tokens, token_types,
  input_mask int32 [seq_len]. ``b=None`` (an empty second text): [CLS] a [SEP] alone, ``a``
  cut to seq_len - 2, as run_classifier.py's convert_single_example does."""
  if b is None:
    a = list(a)[:seq_len - 2]
    ids = [tokenizer.cls_id, *a, tokenizer.sep_id]
  else:
    a, b = truncate_pair(a, b, seq_len - 3)
    ids = [tokenizer.cls_id, *a, tokenizer.sep_id, *b, tokenizer.sep_id]
  tokens = np.full((seq_len,), tokenizer.pad_id, np.int32)
  tokens[:len(ids)] = ids
  types = np.zeros((seq_len,), np.int32)
  types[len(a) + 2:len(ids)] = 1
  mask = np.zeros((seq_len,), np.int32)
  mask[:len(ids)] = 1
  return {'tokens': tokens, 'token_types': types, 'input_mask': mask}


def open_records(task: str, tfds_split: str, data_dir: str | None, split_field: str):
  """The records of ``tfds_split`` of GLUE ``task``, checked (``tfds_text.open_split``)."""
  dataset, first, _, _ = TASKS[task]
  return tfds_text.open_split(dataset, tfds_split, data_dir=data_dir, feature=first,
                              split_field=split_field,
                              dataset_field=f'data.task={task!r} (TFDS {dataset!r})')


def train_texts(options) -> Iterator[str]:
  """Both texts of every train record of a complete data config, in stored order: what a
  new vocabulary learns."""
  task = options['task']
  if task not in TASKS:
    raise UsageError(f'data.task={task!r}: must be one of {sorted(TASKS)}.')
  _, first, second, _ = TASKS[task]
  records = open_records(task, options['train_split'], options['data_dir'] or None,
                         'data.train_split')
  return (tfds_text.decode_text(records[i][field]) for i in range(len(records))
          for field in (first, second))


class GlueData:
  """MNLI rows {tokens, token_types, input_mask: int32 [n]; label: int32 []; weight:
  float32 []} (see the module docstring); ``num_classes`` 3.

  ``num_examples`` caps the examples read (the first of the split, in stored order).
  Examples are tokenised when first read and kept (token ids only).
  """

  # What its rows hold, known without reading one (fixed_head/data/rows.py).
  ROWS = {**rows.BERT_INPUTS, 'label': ('row', np.int32), **rows.WEIGHT}

  NAME = 'glue'
  # The config fields that choose the vocabulary (the run's resolver reads them, not the
  # source), with their defaults.
  TOKENIZER_FIELDS = {'vocab': None, 'vocab_size': 30522, 'lower_case': True}

  def __init__(self, *, split: str, tokenizer, num_examples: int | None = None,
               task: str = 'mnli', seq_len: int = 128, data_dir: str | None = None,
               train_split: str = 'train', eval_split: str = 'validation_matched',
               shuffle_seed: int = 0, log: Callable[[str], None] = print):
    if split not in SPLITS:
      raise ValueError(f'split={split!r}: must be one of {SPLITS}.')
    if task not in TASKS:
      raise UsageError(f'data.task={task!r}: must be one of {sorted(TASKS)}.')
    check_positive_int('data.seq_len', seq_len, 4)  # [CLS] [SEP] [SEP] and one token
    if num_examples is not None:
      check_positive_int('num_examples', num_examples)
    self.split, self.task, self.seq_len = split, task, seq_len
    self.dataset, self.first, self.second, self.num_classes = TASKS[task]
    self.data_dir = data_dir or None
    self.split_field = f'data.{split}_split'
    self.tfds_split = train_split if split == 'train' else eval_split
    self.records = open_records(task, self.tfds_split, self.data_dir, self.split_field)
    self.num_records = len(self.records)
    if num_examples is not None:
      self.num_records = min(self.num_records, num_examples)
    self.order = order.of_split(self.num_records, split, shuffle_seed)
    self._label(0)  # an unlabelled split fails here, not at the first batch
    self.tokenizer = tokenizer
    del log  # the source has nothing to report
    self._encoded: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}  # ids a, ids b, label

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def __len__(self) -> int:
    return len(self.order)

  def example_index(self, index: int) -> int:
    """The record that row ``index`` reads."""
    return self.order[index]

  def _label(self, i: int, record=None) -> int:
    label = int(np.asarray((self.records[i] if record is None else record)['label']))
    if not 0 <= label < self.num_classes:
      unlabelled = ' (-1: the split has no labels, e.g. a test split; use a validation one)'
      raise UsageError(f'{self.split_field}={self.tfds_split!r}: record {i} of {self.dataset} '
                       f'has label {label}{unlabelled if label == -1 else ""}; '
                       f'{self.split_field} needs labels 0..{self.num_classes - 1}.')
    return label

  def __getitem__(self, index: int) -> Row:
    i = self.example_index(index)
    if i not in self._encoded:
      record = self.records[i]
      first, second = (tfds_text.decode_text(record[f]) for f in (self.first, self.second))
      self._encoded[i] = (np.asarray(self.tokenizer.encode(first), np.int32),
                          # Google keeps no second segment (nor its [SEP]) for an empty text_b.
                          np.asarray(self.tokenizer.encode(second), np.int32) if second else None,
                          self._label(i, record))
    a, b, label = self._encoded[i]
    row = pair_row(a, b, self.seq_len, self.tokenizer)
    row['label'] = np.asarray(label, np.int32)
    row['weight'] = np.asarray(1.0, np.float32)
    return row

  def get_batch(self, indices: Iterable[int]) -> Row:
    return packing.stack_rows(self[int(i)] for i in indices)
