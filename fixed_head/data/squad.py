"""SQuAD v1.1 as BERT span rows with document striding (``config.data.name = 'squad'``).

TFDS ``squad`` is read with ``tfds.data_source`` (no TensorFlow) and each question becomes
features as in Google BERT's run_squad.py:

* the context is split into words at white space (``split_words``, which keeps the word of
  every character so ``answer_start`` gives the answer's words), each word is WordPiece
  tokenised on its own (``encode_words``), and the question is cut to ``max_query_len``
  tokens;
* windows of the context tokens, seq_len - len(question) - 3 long, are taken every
  ``doc_stride`` tokens (``doc_spans``); each window is one feature:
  [CLS] question [SEP] window [SEP], token type 1 on the window and the final [SEP];
* ``start_position`` / ``end_position`` point at the first gold answer's tokens inside the
  window, or are both 0 ([CLS]) when the answer is not wholly inside it (BERT's SQuAD v1.1
  training; v1.1 has no unanswerable questions). The answer's token span is narrowed to
  the answer's own tokens as BERT's ``_improve_answer_span`` does. A train question whose
  answer text is not at its ``answer_start`` is skipped (BERT: "Could not find answer").

Rows: tokens, token_types, input_mask int32 [seq_len]; start_position, end_position,
feature_index int32 []; weight float32 [] (1.0).

Split 'train' reads ``train_split`` in a seeded order of features that changes every epoch
(``order.EpochOrder``, seed ``data.shuffle_seed``; ``len`` is ``order.ENDLESS``). Split 'eval'
reads ``eval_split``: all features in order; ``feature_meta(i)``, ``examples`` and
``gold_answers`` give what ``predict_answers`` and the official SQuAD v1.1 scores need.
Every feature of every question is built (and held, compactly) when the source is made;
``num_examples`` caps the features at whole questions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from fixed_head import metrics
from fixed_head.data import glue, order, packing, rows, tfds_text, wordpiece
from fixed_head.errors import UsageError

SPLITS = ('train', 'eval')
DATASET = 'squad'  # TFDS's SQuAD v1.1
READ_CHUNK = 256  # records read per call
Row = dict[str, np.ndarray]


def _is_whitespace(c: str) -> bool:
  # run_squad.py's read_squad_examples: space, tab, CR, LF and NARROW NO-BREAK SPACE
  return c in ' \t\r\n' or ord(c) == 0x202F


def split_words(context: str) -> tuple[list[str], list[int]]:
  """``context`` -> (words split at white space, the word index of every character)."""
  words, char_to_word, after_space = [], [], True
  for c in context:
    if _is_whitespace(c):
      after_space = True
    else:
      if after_space:
        words.append(c)
      else:
        words[-1] += c
      after_space = False
    char_to_word.append(len(words) - 1)
  return words, char_to_word


def answer_words(words: Sequence[str], char_to_word: Sequence[int], answer: str,
                 answer_start: int) -> tuple[int, int] | None:
  """The (first, last) word of ``answer`` starting at character ``answer_start``; None when
  the words there do not contain the answer text (white space aside)."""
  end_char = answer_start + len(answer) - 1
  if not answer or answer_start < 0 or end_char >= len(char_to_word):
    return None
  first, last = max(char_to_word[answer_start], 0), char_to_word[end_char]
  if last < first:
    return None
  if ' '.join(answer.split()) not in ' '.join(words[first:last + 1]):
    return None
  return first, last


def doc_spans(num_tokens: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
  """Windows (start, length) of at most ``max_tokens`` over ``num_tokens`` context tokens,
  starting every ``stride`` tokens (or every window length, if shorter), the last one
  reaching the end: every token is in at least one window."""
  spans, start = [], 0
  while start < num_tokens:
    length = min(num_tokens - start, max_tokens)
    spans.append((start, length))
    if start + length == num_tokens:
      break
    start += min(length, stride)
  return spans


def is_max_context(spans: Sequence[tuple[int, int]], span_index: int, position: int) -> bool:
  """BERT's ``_check_is_max_context``: whether window ``span_index`` gives context token
  ``position`` the most context, min(tokens left, tokens right) + 0.01 * window length
  (the first such window on a tie)."""
  best_score, best_index = None, None
  for index, (start, length) in enumerate(spans):
    end = start + length - 1
    if not start <= position <= end:
      continue
    score = min(position - start, end - position) + 0.01 * length
    if best_score is None or score > best_score:
      best_score, best_index = score, index
  return span_index == best_index


def improve_answer_span(doc_tokens: Sequence[str], start: int, end: int,
                        answer_tokens: Sequence[str]) -> tuple[int, int]:
  """BERT's ``_improve_answer_span``: the smallest sub-span of tokens [start, end] that is
  exactly the answer's tokens ('(1895-1943).' holds '1895' as its second token), else
  (start, end)."""
  wanted = ' '.join(answer_tokens)
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if ' '.join(doc_tokens[new_start:new_end + 1]) == wanted:
        return new_start, new_end
  return start, end


def final_text(pred_text: str, orig_text: str, *, lower_case: bool) -> str:
  """BERT's ``get_final_text``: the part of ``orig_text`` (whole context words) that the
  predicted tokens ``pred_text`` cover ('1889' out of '(1889),'); ``orig_text`` when the
  two cannot be aligned character by character."""

  def strip_spaces(s: str) -> tuple[str, dict[int, int]]:
    kept = [(i, c) for i, c in enumerate(s) if c != ' ']
    return ''.join(c for _, c in kept), {k: i for k, (i, _) in enumerate(kept)}

  tok_text = ' '.join(wordpiece.basic_tokenize(orig_text, lower_case=lower_case))
  start = tok_text.find(pred_text)
  if not pred_text or start == -1:
    return orig_text
  end = start + len(pred_text) - 1
  orig_ns, orig_ns_to_s = strip_spaces(orig_text)
  tok_ns, tok_ns_to_s = strip_spaces(tok_text)
  if len(orig_ns) != len(tok_ns):
    return orig_text
  tok_s_to_ns = {s: ns for ns, s in tok_ns_to_s.items()}
  if start not in tok_s_to_ns or end not in tok_s_to_ns:
    return orig_text
  return orig_text[orig_ns_to_s[tok_s_to_ns[start]]:orig_ns_to_s[tok_s_to_ns[end]] + 1]


def window_positions(answer: tuple[int, int] | None, start: int, length: int, query_len: int
                     ) -> tuple[int, int]:
  """The row positions of an answer's context tokens (first, last) in the window (start,
  length) after [CLS] question [SEP]; (0, 0), the [CLS] token, when it is not wholly inside
  (BERT's SQuAD v1.1 training)."""
  if answer is None or answer[0] < start or answer[1] > start + length - 1:
    return 0, 0
  offset = query_len + 2 - start
  return answer[0] + offset, answer[1] + offset


@dataclasses.dataclass(frozen=True, eq=False)
class Context:
  """One paragraph, shared by its questions: words and their WordPiece ids."""
  words: tuple[str, ...]
  ids: np.ndarray  # int32 [t]: the tokens of all words
  token_word: np.ndarray  # int32 [t]: the word of each token
  word_first_token: np.ndarray  # int32 [len(words) + 1]: first token of each word; t at the end


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
  """One question: ``id``, ``question``, ``answers`` (gold texts) and its context's
  ``words``; ``spans`` are its windows (start, length) over the context tokens and its
  features are ``first_feature`` .. ``first_feature + len(spans) - 1``."""
  id: str
  question: str
  answers: tuple[str, ...]
  context: Context = dataclasses.field(repr=False)
  query_ids: np.ndarray = dataclasses.field(repr=False)  # int32 [q]
  spans: tuple[tuple[int, int], ...]
  first_feature: int
  answer_tokens: tuple[int, int] | None  # first gold answer's (first, last) context token

  @property
  def words(self) -> tuple[str, ...]:
    return self.context.words


def _read(records, stop: int) -> Iterator:
  """records[0:stop], read ``READ_CHUNK`` at a time where the source can."""
  batched = True
  for first in range(0, stop, READ_CHUNK):
    keys = list(range(first, min(stop, first + READ_CHUNK)))
    if batched:
      try:
        yield from records.__getitems__(keys)
        continue
      except (AttributeError, TypeError):  # tfds.testing.mock_data's sources
        batched = False
    yield from (records[k] for k in keys)


def open_records(tfds_split: str, data_dir: str | None, split_field: str):
  """The records of ``tfds_split`` of SQuAD v1.1, checked (``tfds_text.open_split``)."""
  return tfds_text.open_split(
      DATASET, tfds_split, data_dir=data_dir, feature='context', split_field=split_field,
      dataset_field=f"data.name='squad' (TFDS {DATASET!r})")


def train_texts(options) -> Iterator[str]:
  """Each train context of a complete data config (once per run of questions on it) and
  each question, in stored order: what a new vocabulary learns."""
  records = open_records(options['train_split'], options['data_dir'] or None,
                         'data.train_split')
  previous = None
  for record in _read(records, len(records)):
    context = tfds_text.decode_text(record['context'])
    if context != previous:
      yield context
      previous = context
    yield tfds_text.decode_text(record['question'])


class SquadData:
  """SQuAD v1.1 span rows (see the module docstring).

  ``examples``: the questions the rows cover, in order; ``feature_meta(i)``: where feature
  i's tokens come from; ``gold_answers(feature_indices)``: {id: gold texts} of the questions
  those features belong to.
  """

  # What its rows hold, known without reading one (fixed_head/data/rows.py).
  ROWS = {**rows.BERT_INPUTS, 'start_position': ('row', np.int32),
          'end_position': ('row', np.int32), 'feature_index': ('row', np.int32),
          **rows.WEIGHT}

  NAME = 'squad'
  # The config fields that choose the vocabulary (the run's resolver reads them, not the
  # source), with their defaults.
  TOKENIZER_FIELDS = {'vocab': None, 'vocab_size': 30522, 'lower_case': True}

  def __init__(self, *, split: str, tokenizer, num_examples: int | None = None,
               seq_len: int = 384, doc_stride: int = 128, max_query_len: int = 64,
               data_dir: str | None = None, train_split: str = 'train',
               eval_split: str = 'validation', shuffle_seed: int = 0,
               log: Callable[[str], None] = print):
    if split not in SPLITS:
      raise ValueError(f'split={split!r}: must be one of {SPLITS}.')
    glue.check_positive_int('data.seq_len', seq_len, 5)
    glue.check_positive_int('data.doc_stride', doc_stride)
    glue.check_positive_int('data.max_query_len', max_query_len)
    if seq_len - max_query_len - 3 < 1:
      raise UsageError(f'data.max_query_len={max_query_len} leaves no context tokens in '
                       f'data.seq_len={seq_len} rows ([CLS] question [SEP] context [SEP]); set '
                       f'data.max_query_len to at most {seq_len - 4}.')
    if num_examples is not None:
      glue.check_positive_int('num_examples', num_examples)
    self.split, self.seq_len, self.doc_stride = split, seq_len, doc_stride
    self.max_query_len, self.shuffle_seed, self._log = max_query_len, int(shuffle_seed), log
    self.data_dir = data_dir or None
    self.tfds_split = train_split if split == 'train' else eval_split
    self.records = open_records(self.tfds_split, self.data_dir, f'data.{split}_split')
    self.tokenizer = tokenizer
    self._build(num_examples)

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  # Building the features.

  def _context(self, context: str) -> tuple[Context, list[int]]:
    words, char_to_word = split_words(context)
    ids, token_word = self.tokenizer.encode_words(words)
    token_word = np.asarray(token_word, np.int32)
    first = np.searchsorted(token_word, np.arange(len(words) + 1)).astype(np.int32)
    return Context(tuple(words), np.asarray(ids, np.int32), token_word, first), char_to_word

  def _answer_tokens(self, ctx: Context, char_to_word, answer: str, answer_start: int
                     ) -> tuple[int, int] | None:
    """BERT's tok_start_position / tok_end_position of an answer, or None."""
    found = answer_words(ctx.words, char_to_word, answer, answer_start)
    if found is None:
      return None
    start, end = int(ctx.word_first_token[found[0]]), int(ctx.word_first_token[found[1] + 1]) - 1
    if end < start:  # the answer's words give no tokens
      return None
    doc_tokens = [self.tokenizer.id_to_token(i) for i in ctx.ids[start:end + 1]]
    answer_tokens = self.tokenizer.tokenize(answer)
    first, last = improve_answer_span(doc_tokens, 0, len(doc_tokens) - 1, answer_tokens)
    return start + first, start + last

  def _build(self, num_examples: int | None) -> None:
    began = time.time()
    self.examples: list[Example] = []
    feature_example, positions = [], []
    skipped = 0
    previous = (None, None)
    for record in _read(self.records, len(self.records)):
      context = tfds_text.decode_text(record['context'])
      if context != previous[0]:
        previous = (context, self._context(context))
      ctx, char_to_word = previous[1]
      answers = tuple(tfds_text.decode_text(t) for t in record['answers']['text'])
      starts = [int(s) for s in np.asarray(record['answers']['answer_start']).reshape(-1)]
      answer = (self._answer_tokens(ctx, char_to_word, answers[0], starts[0])
                if answers and starts else None)
      if self.split == 'train' and answer is None:
        skipped += 1  # BERT: "Could not find answer"
        continue
      query = np.asarray(self.tokenizer.encode(tfds_text.decode_text(record['question']))
                         [:self.max_query_len], np.int32)
      spans = doc_spans(len(ctx.ids), self.seq_len - len(query) - 3, self.doc_stride)
      if not spans:
        skipped += 1  # an empty context
        continue
      if num_examples is not None and len(feature_example) + len(spans) > num_examples:
        if self.examples:
          break
        spans = spans[:num_examples]  # a first question with more windows than that
      example = Example(id=tfds_text.decode_text(record['id']),
                        question=tfds_text.decode_text(record['question']), answers=answers,
                        context=ctx, query_ids=query, spans=tuple(spans),
                        first_feature=len(feature_example), answer_tokens=answer)
      for start, length in spans:
        feature_example.append(len(self.examples))
        positions.append(window_positions(answer, start, length, len(query)))
      self.examples.append(example)
      if num_examples is not None and len(feature_example) >= num_examples:
        break
    if not feature_example:
      raise UsageError(
          f'data.{self.split}_split={self.tfds_split!r} of squad gives no features ({skipped} '
          'questions skipped: an answer not found at its answer_start, or an empty context); '
          f'set data.{self.split}_split to a SQuAD v1.1 split.')
    self._feature_example = np.asarray(feature_example, np.int32)
    self._positions = np.asarray(positions, np.int32).reshape(-1, 2)
    self._order = order.of_split(len(feature_example), self.split, self.shuffle_seed)
    self._log(f'data {self.split} (squad {self.tfds_split!r}): {len(self.examples)} questions '
              f'-> {len(feature_example)} features of {self.seq_len} tokens (doc_stride '
              f'{self.doc_stride}); {skipped} questions skipped; {time.time() - began:.1f}s.')

  # The source protocol.

  @property
  def num_features(self) -> int:
    return len(self._feature_example)

  def __len__(self) -> int:
    return len(self._order)

  def feature_of_row(self, index: int) -> int:
    """The feature that row ``index`` reads."""
    return self._order[index]

  def _window(self, feature: int) -> tuple[Example, int, int]:
    example = self.examples[self._feature_example[feature]]
    start, length = example.spans[feature - example.first_feature]
    return example, start, length

  def __getitem__(self, index: int) -> Row:
    feature = self.feature_of_row(index)
    example, start, length = self._window(feature)
    tok = self.tokenizer
    ids = np.concatenate([[tok.cls_id], example.query_ids, [tok.sep_id],
                          example.context.ids[start:start + length], [tok.sep_id]])
    n, q = self.seq_len, len(example.query_ids)
    tokens = np.full((n,), tok.pad_id, np.int32)
    tokens[:len(ids)] = ids
    types = np.zeros((n,), np.int32)
    types[q + 2:len(ids)] = 1
    mask = np.zeros((n,), np.int32)
    mask[:len(ids)] = 1
    start_position, end_position = self._positions[feature]
    return {'tokens': tokens, 'token_types': types, 'input_mask': mask,
            'start_position': np.asarray(start_position, np.int32),
            'end_position': np.asarray(end_position, np.int32),
            'feature_index': np.asarray(feature, np.int32),
            'weight': np.asarray(1.0, np.float32)}

  def get_batch(self, indices: Iterable[int]) -> Row:
    return packing.stack_rows(self[int(i)] for i in indices)

  # What an evaluator needs.

  def feature_meta(self, feature: int) -> dict[str, np.ndarray | int]:
    """{'example_index': int, 'token_to_word': int32 [n] (the context word of each token,
    -1 for [CLS], question, [SEP] and padding), 'token_is_max_context': bool [n] (whether
    this window gives the token the most context of all its question's windows)}."""
    example, start, length = self._window(int(feature))
    span_index = int(feature) - example.first_feature
    offset = len(example.query_ids) + 2
    token_to_word = np.full((self.seq_len,), -1, np.int32)
    token_to_word[offset:offset + length] = example.context.token_word[start:start + length]
    max_context = np.zeros((self.seq_len,), bool)
    max_context[offset:offset + length] = [
        is_max_context(example.spans, span_index, p) for p in range(start, start + length)]
    return {'example_index': int(self._feature_example[int(feature)]),
            'token_to_word': token_to_word, 'token_is_max_context': max_context}

  def answer_text(self, feature: int, start: int, end: int) -> str:
    """The context text that row positions [start, end] of ``feature`` cover: their whole
    words joined by spaces, cut to the predicted tokens (``final_text``)."""
    example, span_start, _ = self._window(int(feature))
    offset = span_start - len(example.query_ids) - 2  # row position -> context token
    first, last = start + offset, end + offset
    token_word = example.context.token_word
    orig_text = ' '.join(example.words[token_word[first]:token_word[last] + 1])
    pieces = [self.tokenizer.id_to_token(i) for i in example.context.ids[first:last + 1]]
    pred_text = ' '.join(' '.join(pieces).replace(' ##', '').replace('##', '').split())
    return final_text(pred_text, orig_text, lower_case=self.tokenizer.lower_case)

  def gold_answers(self, feature_indices: Iterable[int]) -> dict[str, list[str]]:
    """{question id: gold answer texts} of the questions of ``feature_indices``."""
    answers = {}
    for feature in feature_indices:
      example = self.examples[self._feature_example[int(feature)]]
      answers[example.id] = list(example.answers)
    return answers


def predict_answers(source: SquadData, start_logits, end_logits, feature_indices, *,
                    max_answer_length: int = 30, n_best: int = 20) -> dict[str, str]:
  """{question id: answer text} from the model's logits over eval rows.

  ``start_logits``, ``end_logits``: [m, n]; ``feature_indices``: [m], the rows'
  ``feature_index`` (repeats, e.g. a padded last batch, are read once). For each question
  the best span (start + end logit) over all its windows given here, where a start must be
  a context token this window gives the most context (BERT's ``token_is_max_context``) and
  an end any context token of the window (``metrics.best_span``); the text is its context
  words joined by spaces, cut to the predicted tokens (``SquadData.answer_text``). A
  question whose windows hold no valid span gets ''.
  """
  start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
  feature_indices = np.asarray(feature_indices).reshape(-1)
  if not start_logits.shape == end_logits.shape == (len(feature_indices), source.seq_len):
    raise ValueError(f'start_logits {start_logits.shape} and end_logits {end_logits.shape} '
                     f'must be [{len(feature_indices)} rows, {source.seq_len} tokens].')
  best: dict[int, tuple[float, int, int, int] | None] = {}  # example -> score, feature, s, e
  seen = set()
  for row, feature in enumerate(feature_indices):
    feature = int(feature)
    if feature in seen:
      continue
    seen.add(feature)
    meta = source.feature_meta(feature)
    in_context = meta['token_to_word'] >= 0
    span = metrics.best_span(start_logits[row], end_logits[row],
                             context_mask=in_context & meta['token_is_max_context'],
                             end_context_mask=in_context,
                             max_answer_length=max_answer_length, n_best=n_best)
    example = meta['example_index']
    current = best.setdefault(example, None)
    if span is not None and (current is None or span[2] > current[0]):
      best[example] = (span[2], feature, span[0], span[1])
  answers = {}
  for example, found in best.items():
    answers[source.examples[example].id] = ('' if found is None else
                                            source.answer_text(*found[1:]))
  return answers


def squad_scores(source: SquadData, start_logits, end_logits, feature_indices, **kwargs
                 ) -> dict[str, float]:
  """Official SQuAD v1.1 {'exact_match', 'f1'} (percent) of the questions of
  ``feature_indices``: ``predict_answers`` against ``gold_answers``."""
  predictions = predict_answers(source, start_logits, end_logits, feature_indices, **kwargs)
  return metrics.squad_v1_scores(predictions, source.gold_answers(feature_indices))
