"""SQuAD v1.1 scoring, span decoding and seed summaries against hand-worked values."""

import itertools
import math

import numpy as np
import pytest

from fixed_head import metrics


def test_normalize_answer_as_the_official_script():
  # lower case, punctuation gone, a/an/the gone as words only, white space collapsed
  assert metrics.normalize_answer('The Eiffel  Tower!') == 'eiffel tower'
  assert metrics.normalize_answer('An apple, a day.') == 'apple day'
  assert metrics.normalize_answer('The theatre; then anew') == 'theatre then anew'
  # punctuation is removed before articles: "the-end" -> "theend", not an article
  assert metrics.normalize_answer('the-end') == 'theend'
  assert metrics.normalize_answer('  ') == ''


def test_exact_match():
  # 'the Eiffel Tower!' -> 'eiffel tower' == 'Eiffel tower' -> 'eiffel tower'
  assert metrics.exact_match('the Eiffel Tower!', 'Eiffel tower')
  assert not metrics.exact_match('Eiffel', 'Eiffel tower')


def test_f1_hand_worked():
  # pred [in, paris, france], gold [paris]: common 1, P = 1/3, R = 1/1,
  # F1 = 2 * (1/3 * 1) / (1/3 + 1) = (2/3) / (4/3) = 0.5
  assert metrics.f1('in Paris France', 'Paris') == pytest.approx(0.5)
  # bags, not sets: pred {dog: 2, cat: 1}, gold {dog: 1, cat: 2}: common min = 1 + 1 = 2,
  # P = 2/3, R = 2/3, F1 = 2/3
  assert metrics.f1('dog dog cat', 'dog cat cat') == pytest.approx(2 / 3)
  assert metrics.f1('the cat', 'a dog') == 0.0  # no common token
  assert metrics.f1('the', 'cat') == 0.0  # prediction normalises to nothing
  assert metrics.f1('The Cat.', 'cat') == 1.0


def test_squad_scores_take_the_best_gold_answer():
  # pred [denver, broncos]; gold 1 [broncos]: common 1, P = 1/2, R = 1 -> F1 = 1 / 1.5 = 2/3;
  # gold 2 [denver, broncos, team]: common 2, P = 1, R = 2/3 -> F1 = (4/3) / (5/3) = 0.8.
  scores = metrics.squad_v1_scores({'q': 'Denver Broncos'},
                                   {'q': ['Broncos', 'Denver Broncos team']})
  assert scores['f1'] == pytest.approx(80.0)
  assert scores['exact_match'] == 0.0
  scores = metrics.squad_v1_scores({'q': 'Denver Broncos'},
                                   {'q': ['Broncos', 'the denver broncos']})
  assert scores == {'exact_match': 100.0, 'f1': 100.0}


def test_squad_scores_of_a_three_question_set():
  answers = {'q1': ['Eiffel tower'], 'q2': ['Paris'], 'q3': ['1889']}
  predictions = {'q1': 'the Eiffel Tower!', 'q2': 'in Paris France'}  # q3 unanswered
  # EM: q1 1, q2 0, q3 0 (missing) -> 100 * 1/3 = 33.33...
  # F1: q1 1, q2 0.5 (above), q3 0 -> 100 * 1.5 / 3 = 50
  scores = metrics.squad_v1_scores(predictions, answers)
  assert scores['exact_match'] == pytest.approx(100 / 3)
  assert scores['f1'] == pytest.approx(50.0)


def test_squad_scores_refuse_bad_input():
  with pytest.raises(ValueError, match="'q9'"):
    metrics.squad_v1_scores({'q1': 'x', 'q9': 'y'}, {'q1': ['x']})
  with pytest.raises(ValueError, match='at least one question'):
    metrics.squad_v1_scores({}, {})
  with pytest.raises(ValueError, match="'q1'"):
    metrics.squad_v1_scores({'q1': 'x'}, {'q1': []})


def test_best_span_hand_case_best_start_outside_context():
  # positions 0-1: question, 2-4: context, 5: [SEP]; the best start (0) and end (0) are not
  # in the context.
  start = [10.0, 0.0, 1.0, 3.0, 0.0, 9.0]
  end = [10.0, 0.0, 0.0, 2.5, 5.0, 8.0]
  mask = [0, 0, 1, 1, 1, 0]
  # spans in the context: (2,2) 1+0=1, (2,3) 1+2.5=3.5, (2,4) 1+5=6, (3,3) 3+2.5=5.5,
  # (3,4) 3+5=8, (4,4) 0+5=5 -> (3, 4) with 8
  assert metrics.best_span(start, end, context_mask=mask) == (3, 4, 8.0)
  # at most 1 token: (2,2) 1, (3,3) 5.5, (4,4) 5 -> (3, 3)
  assert metrics.best_span(start, end, context_mask=mask, max_answer_length=1) == (3, 3, 5.5)
  # n_best=1: the best context start (3) and end (4) still make a valid span
  assert metrics.best_span(start, end, context_mask=mask, n_best=1) == (3, 4, 8.0)
  assert metrics.best_span(start, end, context_mask=[0] * 6) is None


def test_best_span_falls_back_when_the_top_starts_follow_the_top_ends():
  # context 2-4; n_best=1 keeps start 4 (logit 5) and end 2 (logit 5): no valid pair.
  start = [0.0, 0.0, 1.0, 0.0, 5.0]
  end = [0.0, 0.0, 5.0, 0.0, 0.0]
  # all spans: (2,2) 1+5=6, (2,3) 1, (2,4) 1, (3,3) 0, (3,4) 0, (4,4) 5 -> (2, 2) with 6
  assert metrics.best_span(start, end, context_mask=[0, 0, 1, 1, 1], n_best=1) == (2, 2, 6.0)


def _brute_force(start, end, mask, end_mask, max_len, starts=None, ends=None):
  best = None
  for s, e in itertools.product(starts if starts is not None else range(len(start)),
                                ends if ends is not None else range(len(end))):
    if mask[s] and end_mask[e] and s <= e and e - s + 1 <= max_len:
      score = start[s] + end[e]
      if best is None or score > best[2]:
        best = (s, e, score)
  return best


def test_best_span_random_logits_match_brute_force():
  rng = np.random.default_rng(0)
  for case in range(600):
    n = int(rng.integers(1, 40))
    start, end = rng.normal(size=n), rng.normal(size=n)
    mask = rng.random(n) < rng.random()
    # a third of the cases: ends may also be where starts may not (BERT's max-context rule)
    end_mask = mask | (rng.random(n) < 0.5) if case % 3 == 0 else mask
    kwargs = {'end_context_mask': end_mask} if case % 3 == 0 else {}
    max_len = int(rng.integers(1, 12))
    n_best = int(rng.integers(1, 6))
    got = metrics.best_span(start, end, context_mask=mask, max_answer_length=max_len,
                            n_best=n_best, **kwargs)
    full = _brute_force(start, end, mask, end_mask, max_len)
    if full is None:
      assert got is None
      continue
    s, e, score = got
    assert mask[s] and end_mask[e] and s <= e and e - s + 1 <= max_len
    assert score == pytest.approx(start[s] + end[e])
    assert score <= full[2] + 1e-12
    # with n_best small: the best valid pair of the top n_best allowed starts and ends
    top_s = np.flatnonzero(mask)[np.argsort(-start[mask])[:n_best]]
    top_e = np.flatnonzero(end_mask)[np.argsort(-end[end_mask])[:n_best]]
    restricted = _brute_force(start, end, mask, end_mask, max_len, top_s, top_e)
    assert (s, e) == (restricted or full)[:2]
    # with n_best >= n: every valid pair is a candidate
    s, e, score = metrics.best_span(start, end, context_mask=mask, max_answer_length=max_len,
                                    n_best=n, **kwargs)
    assert (s, e) == full[:2] and score == pytest.approx(full[2])


def test_best_span_end_mask_lets_a_span_end_outside_the_start_mask():
  # starts only at 1 (its max-context token), ends anywhere in 1-3: (1, 3) 1 + 4 = 5
  start, end = [0.0, 1.0, 9.0, 9.0], [0.0, 0.0, 1.0, 4.0]
  assert metrics.best_span(start, end, context_mask=[0, 1, 0, 0],
                           end_context_mask=[0, 1, 1, 1]) == (1, 3, 5.0)
  # without it, the only span is (1, 1): 1 + 0
  assert metrics.best_span(start, end, context_mask=[0, 1, 0, 0]) == (1, 1, 1.0)
  # ends only before the only start: no valid span
  assert metrics.best_span(start, end, context_mask=[0, 0, 1, 0],
                           end_context_mask=[0, 1, 0, 0]) is None


def test_best_span_refuses_bad_arguments():
  with pytest.raises(ValueError, match='max_answer_length=0'):
    metrics.best_span([0.0], [0.0], context_mask=[1], max_answer_length=0)
  with pytest.raises(ValueError, match='same length'):
    metrics.best_span([0.0, 1.0], [0.0], context_mask=[1])


def test_mean_and_spread():
  # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, / (4 - 1) -> std sqrt(5/3)
  mean, std = metrics.mean_and_spread([1, 2, 3, 4])
  assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))
  assert metrics.mean_and_spread([7.5]) == (7.5, 0.0)
  with pytest.raises(ValueError):
    metrics.mean_and_spread([])


def test_summarise_seeds():
  results = [{'exact_match': 80, 'f1': 88}, {'exact_match': 82, 'f1': 89},
             {'exact_match': 84, 'f1': 90}]
  # exact_match: mean 82, deviations -2 0 2 -> (4 + 0 + 4) / 2 = 4 -> std 2
  # f1: mean 89, deviations -1 0 1 -> (1 + 0 + 1) / 2 = 1 -> std 1
  assert metrics.summarise_seeds(results) == {
      'exact_match': {'mean': 82.0, 'std': 2.0, 'n': 3},
      'f1': {'mean': 89.0, 'std': 1.0, 'n': 3}}
  assert metrics.summarise_seeds([{'accuracy': 0.5}, {}]) == {
      'accuracy': {'mean': 0.5, 'std': 0.0, 'n': 1}}
