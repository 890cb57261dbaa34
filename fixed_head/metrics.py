"""Fine-tuning metrics: SQuAD v1.1 exact match and F1, span decoding, mean ± spread over seeds.

``normalize_answer``, ``exact_match``, ``f1`` and ``squad_v1_scores`` follow the official
SQuAD v1.1 evaluation script (evaluate-v1.1.py) exactly; ``best_span`` picks an answer span
from one window's start and end logits as BERT's run_squad.py does. Pure Python and NumPy.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

_ARTICLES = re.compile(r'\b(a|an|the)\b')
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
  """Lower case, drop punctuation (``string.punctuation``), drop the words a/an/the and
  collapse white space: 'The Eiffel  Tower!' -> 'eiffel tower'."""
  s = ''.join(ch for ch in s.lower() if ch not in _PUNCTUATION)
  return ' '.join(_ARTICLES.sub(' ', s).split())


def exact_match(prediction: str, gold: str) -> bool:
  """Whether the two answers are equal after ``normalize_answer``."""
  return normalize_answer(prediction) == normalize_answer(gold)


def f1(prediction: str, gold: str) -> float:
  """Token-overlap F1 of the normalised answers (bags of words); 0 with no common token."""
  predicted, wanted = normalize_answer(prediction).split(), normalize_answer(gold).split()
  common = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(predicted), common / len(wanted)
  return 2 * precision * recall / (precision + recall)


def squad_v1_scores(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]]
                    ) -> dict[str, float]:
  """{'exact_match', 'f1'} in percent, averaged over the questions of ``answers``.

  ``answers`` maps each question id to its gold answer texts; a question scores the best
  over them. A question without a prediction scores 0 (the official script warns and does
  the same); a prediction for an id not in ``answers`` raises ValueError.
  """
  unknown = sorted(set(predictions) - set(answers))
  if unknown:
    raise ValueError(f'{len(unknown)} predictions are for question ids with no gold answers '
                     f'(first: {unknown[0]!r}); score predictions against the same split.')
  if not answers:
    raise ValueError('squad_v1_scores needs at least one question with gold answers.')
  total_em = total_f1 = 0.0
  for qid, golds in answers.items():
    if isinstance(golds, str) or not len(golds):
      raise ValueError(f'question {qid!r}: gold answers must be a non-empty list of texts, '
                       f'not {golds!r}.')
    if qid not in predictions:
      continue
    prediction = predictions[qid]
    total_em += max(float(exact_match(prediction, gold)) for gold in golds)
    total_f1 += max(f1(prediction, gold) for gold in golds)
  return {'exact_match': 100.0 * total_em / len(answers), 'f1': 100.0 * total_f1 / len(answers)}


def best_span(start_logits, end_logits, *, context_mask, max_answer_length: int = 30,
              n_best: int = 20, end_context_mask=None) -> tuple[int, int, float] | None:
  """The best answer span of one window: (start, end, start_logit + end_logit).

  ``start_logits``, ``end_logits``, ``context_mask``: [n]. A span has start <= end,
  end - start + 1 <= ``max_answer_length`` and both ends where ``context_mask`` is true
  (the end where ``end_context_mask`` [n] is, when given: BERT lets a span end on any
  context token of the window but start only where the window gives the token its
  maximum context). As in BERT's run_squad.py, candidates are the ``n_best`` highest
  starts and the ``n_best`` highest ends, here taken among allowed positions (BERT takes
  them over the whole window, then drops the others, which can leave none); if no pair of
  them is a valid span, every valid span is searched. None when there is no valid span
  (an empty context).
  """
  if max_answer_length < 1:
    raise ValueError(f'max_answer_length={max_answer_length!r}: must be >= 1 (tokens).')
  if n_best < 1:
    raise ValueError(f'n_best={n_best!r}: must be >= 1.')
  start_logits = np.asarray(start_logits, np.float64).reshape(-1)
  end_logits = np.asarray(end_logits, np.float64).reshape(-1)
  context_mask = np.asarray(context_mask, bool).reshape(-1)
  end_mask = context_mask if end_context_mask is None else np.asarray(end_context_mask, bool)
  end_mask = end_mask.reshape(-1)
  if not start_logits.shape == end_logits.shape == context_mask.shape == end_mask.shape:
    raise ValueError(f'start_logits {start_logits.shape}, end_logits {end_logits.shape}, '
                     f'context_mask {context_mask.shape} and end_context_mask {end_mask.shape} '
                     'must have the same length.')
  allowed_starts, allowed_ends = np.flatnonzero(context_mask), np.flatnonzero(end_mask)

  def top(logits, allowed):  # the n_best allowed positions with the highest logits
    return allowed[np.argsort(-logits[allowed], kind='stable')[:n_best]]

  for starts, ends in ((top(start_logits, allowed_starts), top(end_logits, allowed_ends)),
                       (allowed_starts, allowed_ends)):
    length = ends[None, :] - starts[:, None] + 1
    valid = (length >= 1) & (length <= max_answer_length)
    if valid.any():
      scores = np.where(valid, start_logits[starts][:, None] + end_logits[ends][None, :],
                        -np.inf)
      i, j = np.unravel_index(np.argmax(scores), scores.shape)
      return int(starts[i]), int(ends[j]), float(scores[i, j])
  return None


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
  """(mean, sample standard deviation with ddof=1); the spread of one value is 0."""
  values = [float(v) for v in values]
  if not values:
    raise ValueError('mean_and_spread needs at least one value.')
  mean = math.fsum(values) / len(values)
  if len(values) == 1:
    return mean, 0.0
  return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise_seeds(results: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
  """Several fine-tuning seeds' metrics -> {metric: {'mean', 'std', 'n'}}, where n counts
  the results that report the metric (metrics in the order first seen)."""
  if not results:
    raise ValueError('summarise_seeds needs the metrics of at least one seed.')
  collected: dict[str, list[float]] = {}
  for result in results:
    for name, value in result.items():
      collected.setdefault(name, []).append(float(value))
  summary = {}
  for name, values in collected.items():
    mean, std = mean_and_spread(values)
    summary[name] = {'mean': mean, 'std': std, 'n': len(values)}
  return summary
