"""MNLI and SQuAD fine-tuning rows: BERT's pair layout, SQuAD windows, answers, predictions."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.text.glue  # noqa: F401  registers 'glue/mnli' under mock_data

from fixed_head import metrics
from fixed_head.data import glue, squad, wordpiece
from fixed_head.data.order import ENDLESS
from fixed_head.errors import UsageError

import resolved

CONTEXT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
           "France. It is named after the engineer Gustave Eiffel, whose company designed and "
           "built the tower from 1887 to (1889), as the entrance arch to the World's Fair.")
Q_WHEN = 'When was the tower finished?'
Q_WHO = "Whose company built it?"  # 5 tokens: windows of 16, a last one of 15
A_WHEN = '1889'
A_WHO = 'Gustave Eiffel'


def write_vocab(path, texts, split_words=('gustave',)):
  """A Google-layout vocab.txt: [PAD]=0, [unused0-98], [UNK]=100, [CLS]=101, [SEP]=102,
  [MASK]=103, then every basic token of ``texts``; the words of ``split_words`` only as two
  pieces (gustave -> gust ##ave), so a word gives several tokens."""
  tokens = ['[PAD]'] + [f'[unused{i}]' for i in range(99)] + ['[UNK]', '[CLS]', '[SEP]',
                                                               '[MASK]']
  for text in texts:
    for word in wordpiece.basic_tokenize(text):
      if word in split_words:
        word_pieces = [word[:4], '##' + word[4:]]
      else:
        word_pieces = [word]
      for piece in word_pieces:
        if piece not in tokens:
          tokens.append(piece)
  path.write_text(''.join(t + '\n' for t in tokens))
  return str(path), len(tokens)


def squad_record(qid, question, answer, context=CONTEXT, answer_start=None, as_bytes=False):
  start = context.index(answer) if answer_start is None else answer_start
  enc = (lambda s: s.encode('utf-8')) if as_bytes else (lambda s: s)
  return {'id': enc(qid), 'title': enc('Eiffel Tower'), 'context': enc(context),
          'question': enc(question),
          'answers': {'text': np.array([enc(answer), enc(answer + ' tower')], object),
                      'answer_start': np.array([start, start], np.int32)}}


def fake_tfds(records_by_split):
  """mock_data whose ``tfds.data_source`` returns these hand-made records."""
  return tfds.testing.mock_data(
      as_data_source_fn=lambda builder, split, **_: records_by_split[split])


@pytest.fixture(name='vocab')
def _vocab(tmp_path):
  return write_vocab(tmp_path / 'vocab.txt', [CONTEXT, Q_WHEN, Q_WHO, 'Who built it?',
                                              'The cat sat on the mat.', 'A cat sat down.'])


def squad_source(vocab, records, split='eval', **options):
  path, size = vocab
  options = {'vocab': path, 'vocab_size': size, 'seq_len': 24, 'doc_stride': 5,
             'max_query_len': 8, **options}
  with fake_tfds({'train': records, 'validation': records}):
    return resolved.built('squad', split, log=lambda _: None, **options)


def test_doc_spans_and_max_context_by_hand():
  # 12 tokens, windows of 5 every 3: starts 0, 3, 6, then 9 holds the last 3 tokens
  spans = squad.doc_spans(12, 5, 3)
  assert spans == [(0, 5), (3, 5), (6, 5), (9, 3)]
  # token 4: window 0 (0-4) min(4, 0) + 0.05 = 0.05; window 1 (3-7) min(1, 3) + 0.05 = 1.05
  assert [squad.is_max_context(spans, i, 4) for i in range(4)] == [False, True, False, False]
  # token 9: window 2 (6-10) min(3, 1) + 0.05 = 1.05; window 3 (9-11) min(0, 2) + 0.03
  assert [squad.is_max_context(spans, i, 9) for i in range(4)] == [False, False, True, False]
  # token 10: window 2 min(4, 0) + 0.05; window 3 min(1, 1) + 0.03 = 1.03
  assert [squad.is_max_context(spans, i, 10) for i in range(4)] == [False, False, False, True]
  # a tie goes to the first window: token 3 in (0, 5) min(3, 1) and in (2, 5) min(1, 3)
  assert [squad.is_max_context([(0, 5), (2, 5)], i, 3) for i in range(2)] == [True, False]
  # a stride longer than the window moves by the window: no token is skipped
  assert squad.doc_spans(10, 4, 7) == [(0, 4), (4, 4), (8, 2)]
  assert squad.doc_spans(0, 4, 2) == []


def test_split_words_keeps_the_word_of_every_character():
  words, char_to_word = squad.split_words(' ab  c\td ')
  assert words == ['ab', 'c', 'd']
  assert char_to_word == [-1, 0, 0, 0, 0, 1, 1, 2, 2]
  # 'c\td' -> chars 5..7 are words 1, 1 (tab), 2
  assert squad.answer_words(words, char_to_word, 'c d', 5) == (1, 2)
  assert squad.answer_words(words, char_to_word, 'c x', 5) is None
  assert squad.answer_words(words, char_to_word, 'd', 40) is None


def test_final_text_cuts_whole_words_to_the_predicted_tokens():
  assert squad.final_text('1889', '(1889),', lower_case=True) == '1889'
  assert squad.final_text("eiffel ' s", "Eiffel's", lower_case=True) == "Eiffel's"
  assert squad.final_text('paris', 'Paris, France.', lower_case=True) == 'Paris'
  assert squad.final_text('london', 'Paris,', lower_case=True) == 'Paris,'  # not found


def find(sequence, part):
  """Start indices where ``part`` occurs in ``sequence``."""
  return [i for i in range(len(sequence) - len(part) + 1)
          if list(sequence[i:i + len(part)]) == list(part)]


def test_squad_windows_answers_and_max_context(vocab):
  path, _ = vocab
  tok = wordpiece.WordPieceTokenizer.load(path)
  source = squad_source(vocab, [squad_record('q1', Q_WHEN, A_WHEN),
                                squad_record('q2', Q_WHO, A_WHO, as_bytes=True)])
  context_ids = tok.encode(CONTEXT)  # whole-text encoding equals word-by-word here
  assert tok.unk_id not in context_ids and len(context_ids) > 40
  assert [e.id for e in source.examples] == ['q1', 'q2']
  rows = source.get_batch(range(len(source)))
  assert {k: (v.shape, v.dtype) for k, v in rows.items()} == {
      'tokens': ((len(source), 24), np.int32), 'token_types': ((len(source), 24), np.int32),
      'input_mask': ((len(source), 24), np.int32),
      'start_position': ((len(source),), np.int32), 'end_position': ((len(source),), np.int32),
      'feature_index': ((len(source),), np.int32), 'weight': ((len(source),), np.float32)}
  np.testing.assert_array_equal(rows['feature_index'], np.arange(len(source)))
  for qid, question, answer in (('q1', Q_WHEN, A_WHEN), ('q2', Q_WHO, A_WHO)):
    query = tok.encode(question)
    answer_ids = tok.encode(answer)
    (answer_at,) = find(context_ids, answer_ids)  # the answer's context tokens
    features = [i for i in range(len(source))
                if source.examples[source.feature_meta(i)['example_index']].id == qid]
    covered, inside, max_context_windows = set(), 0, np.zeros(len(context_ids), int)
    at = 0
    for i in features:
      tokens, types, mask = rows['tokens'][i], rows['token_types'][i], rows['input_mask'][i]
      n = int(mask.sum())
      # [CLS] question [SEP] window [SEP], then padding
      assert list(tokens[:len(query) + 2]) == [tok.cls_id, *query, tok.sep_id]
      assert tokens[n - 1] == tok.sep_id and not tokens[n:].any() and mask[:n].all()
      assert not types[:len(query) + 2].any() and types[len(query) + 2:n].all()
      assert not types[n:].any()
      window = list(tokens[len(query) + 2:n - 1])
      assert len(window) <= 24 - len(query) - 3
      at = min(o for o in find(context_ids, window) if o >= at)  # windows move forward
      covered.update(range(at, at + len(window)))
      meta = source.feature_meta(i)
      max_context_windows[at + np.flatnonzero(meta['token_is_max_context'])
                          - len(query) - 2] += 1
      start, end = int(rows['start_position'][i]), int(rows['end_position'][i])
      if at <= answer_at and answer_at + len(answer_ids) <= at + len(window):
        inside += 1
        assert (start, end) == (answer_at - at + len(query) + 2,
                                answer_at - at + len(query) + 1 + len(answer_ids))
        assert list(tokens[start:end + 1]) == answer_ids
      else:
        assert (start, end) == (0, 0)
    assert covered == set(range(len(context_ids)))  # every context token is in a window
    assert 0 < inside < len(features)  # some windows hold the answer, some do not
    np.testing.assert_array_equal(max_context_windows, 1)  # one window per token
  # q1's window starts are 5 apart (doc_stride) and the last one ends the context
  spans = source.examples[0].spans
  assert [s for s, _ in spans] == list(range(0, 5 * len(spans), 5))
  assert spans[-1][0] + spans[-1][1] == len(context_ids)


def peaked_logits(source, tok, answers):
  """Start/end logits of every eval row: 10 on the gold answer's first and last tokens
  wherever they appear in a window, -10 elsewhere."""
  rows = source.get_batch(range(len(source)))
  start = np.full(rows['tokens'].shape, -10.0)
  end = np.full(rows['tokens'].shape, -10.0)
  for i in range(len(source)):
    meta = source.feature_meta(i)
    answer_ids = tok.encode(answers[source.examples[meta['example_index']].id])
    for at in find(rows['tokens'][i], answer_ids):
      if rows['token_types'][i][at]:
        start[i, at], end[i, at + len(answer_ids) - 1] = 10.0, 10.0
  return start, end, rows['feature_index']


def test_predict_answers_return_the_gold_text(vocab):
  path, _ = vocab
  tok = wordpiece.WordPieceTokenizer.load(path)
  source = squad_source(vocab, [squad_record('q1', Q_WHEN, A_WHEN),
                                squad_record('q2', Q_WHO, A_WHO)])
  start, end, features = peaked_logits(source, tok, {'q1': A_WHEN, 'q2': A_WHO})
  # the padded last batch of an evaluation repeats its last row: read once
  start, end = np.concatenate([start, start[-1:]]), np.concatenate([end, end[-1:]])
  features = np.concatenate([features, features[-1:]])
  predictions = squad.predict_answers(source, start, end, features)
  # '1889' from the word '(1889),'; 'Gustave Eiffel' from 'Gustave Eiffel,' (gust ##ave)
  assert predictions == {'q1': '1889', 'q2': 'Gustave Eiffel'}
  assert source.gold_answers(features) == {'q1': ['1889', '1889 tower'],
                                           'q2': ['Gustave Eiffel', 'Gustave Eiffel tower']}
  assert squad.squad_scores(source, start, end, features) == {'exact_match': 100.0,
                                                              'f1': 100.0}
  # q1 alone, from its windows only
  q1 = [i for i in range(len(source)) if source.feature_meta(i)['example_index'] == 0]
  assert squad.predict_answers(source, start[q1], end[q1], q1) == {'q1': '1889'}
  # a wrong guess: 'Paris' for q1 -> EM 0, F1 0; q2 still right -> 50 / 50
  paris = tok.encode('Paris')
  start[q1], end[q1] = -10.0, -10.0
  for i in q1:
    for at in find(source[i]['tokens'], paris):
      start[i, at], end[i, at] = 10.0, 10.0
  predictions = squad.predict_answers(source, start, end, features)
  assert predictions == {'q1': 'Paris', 'q2': 'Gustave Eiffel'}
  assert metrics.squad_v1_scores(predictions, source.gold_answers(features)) == {
      'exact_match': 50.0, 'f1': 50.0}
  # a far higher start logit on '1889' only in a window that does not give it its most
  # context (near that window's edge) starts no answer: a start must be max-context there
  (year,) = tok.encode('1889')
  for i in q1:
    meta = source.feature_meta(i)
    (at,) = find(source[i]['tokens'], [year]) or [None]
    if at is not None and not meta['token_is_max_context'][at]:
      start[i, at] = 100.0  # (1889, 1889) would score 100 - 10 = 90 > Paris's 20
      break
  else:
    raise AssertionError('no window where 1889 lacks its max context')
  assert squad.predict_answers(source, start, end, features)['q1'] == 'Paris'


def test_squad_train_rows_skip_misplaced_answers_and_reshuffle_each_epoch(vocab):
  records = [squad_record('q1', Q_WHEN, A_WHEN), squad_record('q2', Q_WHO, A_WHO),
             squad_record('bad', Q_WHEN, A_WHEN, answer_start=3)]  # text not at its offset
  train = squad_source(vocab, records, split='train', shuffle_seed=1)
  assert [e.id for e in train.examples] == ['q1', 'q2']  # BERT skips 'bad'
  f = train.num_features
  assert len(train) == ENDLESS  # the one endless train stream, whatever f
  order = [int(train[k]['feature_index']) for k in range(3 * f)]
  assert all(sorted(order[e * f:(e + 1) * f]) == list(range(f)) for e in range(3))
  assert order[:f] != order[f:2 * f]  # a new permutation each epoch
  again = squad_source(vocab, records, split='train', shuffle_seed=1)
  assert [int(again[k]['feature_index']) for k in range(3 * f)] == order
  eval_source = squad_source(vocab, records)
  assert [e.id for e in eval_source.examples] == ['q1', 'q2', 'bad']  # scored by its text
  # the same window has the same row in both splits
  row = train[0]
  same = eval_source[int(row['feature_index'])]
  for key in row:
    np.testing.assert_array_equal(row[key], same[key])


def test_squad_num_examples_caps_features_at_whole_questions(vocab):
  full = squad_source(vocab, [squad_record('q1', Q_WHEN, A_WHEN),
                              squad_record('q2', Q_WHO, A_WHO)])
  per_question = full.examples[1].first_feature
  capped = squad_source(vocab, [squad_record('q1', Q_WHEN, A_WHEN),
                                squad_record('q2', Q_WHO, A_WHO)],
                        num_examples=per_question + 1)
  assert len(capped) == per_question and [e.id for e in capped.examples] == ['q1']
  first_only = squad_source(vocab, [squad_record('q1', Q_WHEN, A_WHEN)], num_examples=2)
  assert len(first_only) == 2  # a question with more windows than num_examples: cut


def test_squad_under_mock_data_builds_eval_rows(vocab):
  path, size = vocab
  with tfds.testing.mock_data(num_examples=5):
    source = resolved.built('squad', 'eval', vocab=path, vocab_size=size, seq_len=32,
                             max_query_len=6, doc_stride=8, log=lambda _: None)
    # mock answers are random characters, not at their answer_start: nothing to train on
    with pytest.raises(UsageError, match=r"data.train_split='train' of squad gives no"):
      resolved.built('squad', 'train', vocab=path, vocab_size=size, seq_len=32,
                      max_query_len=6, doc_stride=8, log=lambda _: None)
  assert len(source.examples) == 5 and len(source) >= 5
  batch = source.get_batch([0, len(source) - 1])
  assert batch['tokens'].shape == (2, 32) and batch['tokens'].dtype == np.int32
  assert batch['feature_index'].tolist() == [0, len(source) - 1]
  assert batch['weight'].dtype == np.float32


def test_squad_errors_name_fields(vocab, tmp_path):
  with pytest.raises(UsageError, match=r'^data.max_query_len=30 leaves no context.*'
                                       r'at most 20'):
    squad_source(vocab, [], seq_len=24, max_query_len=30)
  with pytest.raises(UsageError, match=r'^data.doc_stride=0:'):
    squad_source(vocab, [], doc_stride=0)
  with pytest.raises(UsageError, match=r'^data.vocab_size=99 does not match'):
    squad_source(vocab, [squad_record('q1', Q_WHEN, A_WHEN)], vocab_size=99)
  with pytest.raises(UsageError, match=r"^data.name='squad' \(TFDS 'squad'\) is not prepared"):
    resolved.built('squad', 'eval', data_dir=str(tmp_path), vocab=vocab[0],
                   vocab_size=vocab[1])


def mnli_record(premise, hypothesis, label, as_bytes=False):
  enc = (lambda s: s.encode('utf-8')) if as_bytes else (lambda s: s)
  return {'premise': enc(premise), 'hypothesis': enc(hypothesis), 'label': np.int64(label),
          'idx': np.int32(0)}


def test_truncate_pair_as_bert():
  # 7 + 3 > 6: the longer (a) loses its last token until 3 + 3
  assert glue.truncate_pair(range(7), [7, 8, 9], 6) == ([0, 1, 2], [7, 8, 9])
  # a tie drops from b first: (3, 3) -> (3, 2) -> (2, 2)
  assert glue.truncate_pair([1, 2, 3], [4, 5, 6], 4) == ([1, 2], [4, 5])
  assert glue.truncate_pair([1], [], 4) == ([1], [])


def test_an_empty_second_text_has_no_second_segment_as_run_classifier():
  class Ids:
    cls_id, sep_id, pad_id = 101, 102, 0

  row = glue.pair_row([5, 6, 7, 8], None, 5, Ids())  # [CLS] a [SEP], a cut to 5 - 2
  assert row['tokens'].tolist() == [101, 5, 6, 7, 102]
  assert row['token_types'].tolist() == [0] * 5 and row['input_mask'].tolist() == [1] * 5
  row = glue.pair_row([5], None, 5, Ids())
  assert row['tokens'].tolist() == [101, 5, 102, 0, 0]
  assert row['input_mask'].tolist() == [1, 1, 1, 0, 0]
  # With a second text, as before: [CLS] a [SEP] b [SEP]
  assert glue.pair_row([5], [6], 5, Ids())['tokens'].tolist() == [101, 5, 102, 6, 102]


def test_an_mnli_record_with_an_empty_hypothesis_is_one_segment(vocab):
  path, size = vocab
  tok = wordpiece.WordPieceTokenizer.load(path)
  records = [mnli_record('The cat sat on the mat.', '', 1)]
  with fake_tfds({'validation_matched': records, 'validation_mismatched': records}):
    source = resolved.built('glue', 'eval', vocab=path, vocab_size=size, seq_len=16)
  a = tok.encode('The cat sat on the mat.')
  assert source[0]['tokens'].tolist() == [101, *a, 102] + [0] * (16 - len(a) - 2)
  assert source[0]['token_types'].tolist() == [0] * 16


def test_mnli_pair_layout_and_truncation(vocab):
  path, size = vocab
  tok = wordpiece.WordPieceTokenizer.load(path)
  premise, hypothesis = 'The cat sat on the mat.', 'A cat sat down.'
  records = [mnli_record(premise, hypothesis, 2), mnli_record(hypothesis, premise, 0, True)]
  with fake_tfds({'validation_matched': records, 'validation_mismatched': records[:1]}):
    source = resolved.built('glue', 'eval', vocab=path, vocab_size=size, seq_len=16)
    short = resolved.built('glue', 'eval', vocab=path, vocab_size=size, seq_len=10)
    mismatched = resolved.built('glue', 'eval', vocab=path, vocab_size=size,
                               eval_split='validation_mismatched')
  assert (len(source), source.num_classes, len(mismatched)) == (2, 3, 1)
  a, b = tok.encode(premise), tok.encode(hypothesis)  # 7 and 5 tokens
  assert (len(a), len(b)) == (7, 5)
  row = source[0]
  # [CLS] 7 [SEP] 5 [SEP] = 15 tokens, 1 pad
  assert row['tokens'].tolist() == [101, *a, 102, *b, 102, 0]
  assert row['token_types'].tolist() == [0] * 9 + [1] * 6 + [0]
  assert row['input_mask'].tolist() == [1] * 15 + [0]
  assert (int(row['label']), float(row['weight'])) == (2, 1.0)
  assert row['label'].dtype == np.int32 and row['weight'].dtype == np.float32
  # 10 - 3 = 7 tokens for the pair: 7 + 5 -> 6 + 5 -> 5 + 5 -> 4 + 4 (b on ties) -> 4 + 3
  row = short[0]
  assert row['tokens'].tolist() == [101, *a[:4], 102, *b[:3], 102]
  assert row['token_types'].tolist() == [0] * 6 + [1] * 4
  assert source[1]['tokens'].tolist()[:7] == [101, *b, 102]  # bytes records read as text
  batch = source.get_batch([1, 0])
  assert batch['tokens'].shape == (2, 16) and batch['label'].tolist() == [0, 2]


def test_mnli_refuses_unlabelled_splits(vocab):
  path, size = vocab
  with fake_tfds({'test_matched': [mnli_record('a cat', 'the mat', -1)]}):
    with pytest.raises(UsageError, match=r"^data.eval_split='test_matched': record 0 .* "
                                         r'label -1 \(-1: the split has no labels'):
      resolved.built('glue', 'eval', vocab=path, vocab_size=size, eval_split='test_matched')


def test_mnli_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=7):
    train = resolved.built('glue', 'train', workdir=str(tmp_path), vocab_size=64, seq_len=20,
                          shuffle_seed=3, log=lambda _: None)  # trains a vocabulary
    evaluation = resolved.built('glue', 'eval', workdir=str(tmp_path), vocab_size=64,
                               seq_len=20, num_examples=4)
    batch = train.get_batch(range(8))
  assert (tmp_path / 'vocab.txt').exists() and train.vocab_size == 64
  assert len(train) == ENDLESS and len(evaluation) == 4
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      'tokens': ((8, 20), np.int32), 'token_types': ((8, 20), np.int32),
      'input_mask': ((8, 20), np.int32), 'label': ((8,), np.int32),
      'weight': ((8,), np.float32)}
  assert (batch['tokens'][:, 0] == train.tokenizer.cls_id).all()
  assert set(batch['label'].tolist()) <= {0, 1, 2}
  epochs = [[train.example_index(k) for k in range(e * 7, (e + 1) * 7)] for e in range(3)]
  assert all(sorted(order) == list(range(7)) for order in epochs)
  assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
  assert [evaluation.example_index(k) for k in range(4)] == [0, 1, 2, 3]


def test_mnli_errors_name_fields(vocab):
  path, size = vocab
  with pytest.raises(UsageError, match=r"^data.task='qqp': must be one of \['mnli'\]"):
    resolved.built('glue', 'eval', task='qqp', vocab=path, vocab_size=size)
  with pytest.raises(UsageError, match=r'^data.seq_len=3: must be an integer >= 4'):
    resolved.built('glue', 'eval', seq_len=3, vocab=path, vocab_size=size)
