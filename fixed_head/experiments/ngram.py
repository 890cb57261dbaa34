r"""A count n-gram floor for a real-text LM run: what short-range statistics alone give.

An interpolated Witten-Bell n-gram model of orders 1 ... K (K = 7 by default), counted on
the run's train split with the run's tokenizer and scored on exactly the rows and targets of
one of its LM evaluators. An LM whose eval loss is not below it has not learned enough
short-range statistics to test anything about long context.

Order k predicts w from its k - 1 previous tokens h (h' drops h's oldest token):

  P_k(w | h) = (c(h, w) + N1+(h) P_{k-1}(w | h')) / (c(h) + N1+(h)),  P_k = P_{k-1} if c(h) = 0
  P_1(w)     = (c(w) + N1+ / V) / (N + N1+)   (so every probability is > 0)

c(h) = sum_w c(h, w); N1+(h) = #{w: c(h, w) > 0}; N = the counted targets, N1+ the distinct
ones; V = the vocabulary size (``source.vocab_size``).

Targets, as ``fixed_head.tasks.losses.next_token_targets``: token j of a row (rows: tokens,
optional segment_ids and positions, int [n]; segment id 0 = padding; without segment ids
the row is one segment) is a target when it and token j - 1 are in the same segment. Its
context is cut at its segment's (and row's) start: a target with r earlier tokens in its
segment takes P_k from order min(k, r + 1). Counting: every train row once; at each target
with r earlier tokens, one n-gram of each order k <= r + 1. Its position (for the
bins of ``losses.position_bins``) is ``positions[j]``, or j without positions.

Exact counting: the n-gram of order k ending at a token gets the id of its place among the
sorted distinct keys id_{k-1}(its first k - 1 tokens) * V + w (order 1: the token), so
no two n-grams share an id whatever V, and lookups are NumPy searches; probabilities are
float64.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from fixed_head import data as data_lib
from fixed_head import evaluators
from fixed_head.data import order, vocab
from fixed_head.errors import UsageError
from fixed_head.experiments import figures
from fixed_head.tasks import losses
from fixed_head.train import run_record

Batch = Mapping[str, np.ndarray]
Log = Callable[[str], None]
CHUNK = 4096  # rows read a call


@dataclasses.dataclass
class NGramCounts:
  """Train counts. Order 1: ``unigram`` int64 [V] (c(w)) and ``num_tokens`` (N). Order k
  >= 2, item k - 2 of each list: ``keys`` sorted int64 [U_k] (the n-gram (h, w) with id u
  has key id_{k-1}(h) * V + w), ``counts`` int64 [U_k] (c(h, w)), and ``context_total`` /
  ``context_types`` int64 [U_{k-1}] (c(h) and N1+(h) by the id of h; U_1 = V)."""
  vocab_size: int
  max_order: int
  num_tokens: int
  unigram: np.ndarray
  keys: list[np.ndarray] = dataclasses.field(default_factory=list)
  counts: list[np.ndarray] = dataclasses.field(default_factory=list)
  context_total: list[np.ndarray] = dataclasses.field(default_factory=list)
  context_types: list[np.ndarray] = dataclasses.field(default_factory=list)


def flatten(rows: Iterable[Batch], vocab_size: int) -> tuple[np.ndarray, ...]:
  """Rows (batches {'tokens', ['segment_ids', 'positions']} int [b, n]) end to end: tokens,
  earlier tokens in the same segment (-1 on padding) and target positions, each int64 [T],
  and the widest n. ValueError for a token outside [0, vocab_size)."""
  parts, width = [], 0
  for batch in rows:
    tokens = np.asarray(batch['tokens'], np.int64)
    b, n = tokens.shape
    width = max(width, n)
    j = np.broadcast_to(np.arange(n), (b, n))
    if 'segment_ids' in batch:
      seg = np.asarray(batch['segment_ids'])
      start = np.ones((b, n), bool)
      start[:, 1:] = seg[:, 1:] != seg[:, :-1]
      run = j - np.maximum.accumulate(np.where(start, j, 0), axis=1)
      run = np.where(seg > 0, run, -1)
    else:
      run = j
    position = np.asarray(batch['positions'], np.int64) if 'positions' in batch else j
    parts.append((tokens.ravel(), run.ravel(), position.ravel()))
  if not parts:
    return (*(np.zeros(0, np.int64) for _ in range(3)), width)
  tokens, run, position = (np.concatenate(p).astype(np.int64) for p in zip(*parts))
  bad = (run >= 0) & ((tokens < 0) | (tokens >= vocab_size))
  if bad.any():
    raise ValueError(f'token {tokens[bad][0]} is outside the vocabulary of {vocab_size} ids.')
  return tokens, run, position, width


def fit(train_rows: Iterable[Batch], vocab_size: int, max_order: int = 7,
        log: Log | None = None) -> NGramCounts:
  """The counts of orders 1 ... ``max_order`` over ``train_rows`` (see ``flatten``)."""
  v = int(vocab_size)
  if max_order < 1:
    raise ValueError(f'max_order={max_order}: must be at least 1.')
  tokens, run, _, _ = flatten(train_rows, v)
  if len(tokens) * v >= 2**63:  # ids < len(tokens): every key id * V + w fits in int64
    raise ValueError(f'{len(tokens)} tokens with V = {v}: the n-gram keys overflow int64.')
  unigram = np.bincount(tokens[run >= 1], minlength=v).astype(np.int64)
  out = NGramCounts(v, max_order, int(unigram.sum()), unigram)
  if log:
    log(f'  order 1: {out.num_tokens:,} targets, {np.count_nonzero(unigram):,} distinct')
  ids = tokens  # id of the (k - 1)-gram ending at each token (order 1: the token)
  for k in range(2, max_order + 1):
    tic = time.perf_counter()
    at = np.flatnonzero(run >= k - 1)
    keys, inverse, counts = np.unique(ids[at - 1] * v + tokens[at], return_inverse=True,
                                      return_counts=True)
    prefix, contexts = keys // v, len(out.keys[-1]) if out.keys else v
    out.keys.append(keys)
    out.counts.append(counts.astype(np.int64))
    out.context_total.append(np.bincount(prefix, counts, contexts).astype(np.int64))
    out.context_types.append(np.bincount(prefix, minlength=contexts).astype(np.int64))
    ids = np.full(len(tokens), -1, np.int64)
    ids[at] = inverse.ravel()
    if log:
      log(f'  order {k}: {len(at):,} n-grams, {len(keys):,} distinct '
          f'({time.perf_counter() - tic:.1f} s)')
  return out


def _take(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """values[ids], 0 where an id is -1 (never seen in train)."""
  return np.where(ids >= 0, values[np.maximum(ids, 0)], 0)


def score(counts: NGramCounts, eval_rows: Iterable[Batch], edges=None,
          log: Log | None = None) -> dict[int, dict[str, Any]]:
  """Per order k = 1 ... max_order, over the targets of ``eval_rows``: {'loss' (mean nll,
  nats per token), 'num_tokens', 'loss_by_position' and 'tokens_by_position' ({bin label:
  value}; loss nan in an empty bin)}; bins: ``losses.position_bins(n, edges)``."""
  v = counts.vocab_size
  tokens, run, position, n = flatten(eval_rows, v)
  edges = losses.position_bins(n, edges)
  labels = losses.position_bin_labels(edges, n)
  targets = np.flatnonzero(run >= 1)
  earlier, w = run[targets], tokens[targets]
  bins = np.searchsorted(np.asarray(edges), position[targets], side='right') - 1
  binned = bins >= 0
  seen = int(np.count_nonzero(counts.unigram))
  p = ((counts.unigram[w] + seen / v) / (counts.num_tokens + seen) if counts.num_tokens
       else np.full(len(w), 1.0 / v))
  ids, result = tokens, {}
  for k in range(1, counts.max_order + 1):
    if k > 1:
      keys, at = counts.keys[k - 2], np.flatnonzero(run >= k - 1)
      prev = ids[at - 1]  # the id of the first k - 1 tokens (-1: never seen in train)
      key = prev * v + tokens[at]
      where = np.minimum(np.searchsorted(keys, key), max(len(keys) - 1, 0))
      found = (prev >= 0) & (keys[where] == key) if len(keys) else np.zeros(len(at), bool)
      new = np.full(len(tokens), -1, np.int64)
      new[at] = np.where(found, where, -1)
      sel = np.flatnonzero(earlier >= k - 1)
      h, g = ids[targets[sel] - 1], new[targets[sel]]
      total, types = (_take(a[k - 2], h) for a in (counts.context_total, counts.context_types))
      c = _take(counts.counts[k - 2], g)
      p[sel] = np.where(total > 0, (c + types * p[sel]) / np.maximum(total + types, 1), p[sel])
      ids = new
    nll = -np.log(p)
    sums, numbers = (np.bincount(bins[binned], x, len(edges)) for x in (nll[binned], None))
    with np.errstate(invalid='ignore', divide='ignore'):
      means = sums / numbers
    result[k] = {'loss': float(nll.mean()) if len(nll) else float('nan'),
                 'num_tokens': len(nll),
                 'loss_by_position': {a: float(m) for a, m in zip(labels, means)},
                 'tokens_by_position': {a: int(t) for a, t in zip(labels, numbers)}}
    if log:
      log(f"  {k}-gram: {result[k]['loss']:.4f} nats/token on {len(nll):,} eval tokens")
  return result


def source_rows(source, count: int) -> Iterator[dict[str, np.ndarray]]:
  """Rows 0 ... count - 1 of ``source``, ``CHUNK`` at a time."""
  for first in range(0, count, CHUNK):
    yield source.get_batch(np.arange(first, min(first + CHUNK, count)))


def train_row_count(source) -> int:
  """Rows of a train split, each once: an endless train stream (``order.EpochOrder``) reads
  every stored row once in its first epoch."""
  stream = getattr(source, 'order', None)
  return stream.n if isinstance(stream, order.EpochOrder) else len(source)


def evaluator_options(config, evaluator: str, max_order: int) -> dict[str, Any]:
  """The options of LM evaluator ``config.evals[evaluator]`` with their defaults; UsageError,
  naming the field, for a config or evaluator the floor is not for."""
  name, task = config.data.get('name'), config.get('task', {}).get('name', 'lm')
  if name == 'synthetic':
    raise UsageError("data.name='synthetic': the synthetic language has its own optimal loss "
                     "(the 'lm' evaluator's optimal_loss); an n-gram floor is for real text.")
  if task != 'lm':
    raise UsageError(f"task.name={task!r}: an n-gram floor is for causal LM runs (task 'lm').")
  if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
    raise UsageError(f'max_order={max_order!r}: must be a positive integer.')
  evals = config.get('evals') or {}
  if evaluator not in evals:
    raise UsageError(f'config.evals.{evaluator} does not exist; the run has evaluators '
                     f'{sorted(evals)}.')
  spec = evals[evaluator]
  spec = spec.to_dict() if hasattr(spec, 'to_dict') else dict(spec)
  if spec.get('type') != 'lm':
    raise UsageError(f"config.evals.{evaluator}.type={spec.get('type')!r}: the n-gram floor "
                     "scores the rows of an 'lm' evaluator.")
  evaluators.LMEvaluator.check_options(f'config.evals.{evaluator}', spec, 'lm')
  return {**evaluators.LMEvaluator.OPTIONS, **spec}


def floor_for_config(config, tokenizer, evaluator: str = 'valid', max_order: int = 7,
                     edges=None, log: Log = print) -> dict[str, Any]:
  """The floor of an LM config: counted on its train split (``tokenizer``, the run's), scored
  on evaluator ``config.evals[evaluator]``'s rows. Returns {'orders': ``score``'s result,
  'evaluator', 'split', 'num_train_rows', 'num_train_tokens', 'num_eval_rows',
  'num_eval_tokens', 'seq_len', 'vocab_size', 'edges', 'seconds'}."""
  tic = time.perf_counter()
  options = evaluator_options(config, evaluator, max_order)
  train = data_lib.build_source(config.data, 'train', tokenizer=tokenizer)
  rows, v = train_row_count(train), int(train.vocab_size)
  log(f'n-gram floor: counting orders 1-{max_order} on {rows:,} train rows (V = {v})')
  counts = fit(source_rows(train, rows), v, max_order, log=log)
  if counts.num_tokens == 0:
    raise UsageError('config.data: the train split holds no targets to count.')
  eval_data = evaluators.evaluator_data(config.data, options)
  split, num_examples = options['split'], options['num_examples']
  source = data_lib.build_source(eval_data, split, num_examples=num_examples,
                                 tokenizer=tokenizer)
  total = data_lib.num_eval_rows(source, num_examples)
  if total == 0:
    raise UsageError(f'config.evals.{evaluator}: split {split!r} holds no rows.')
  log(f'scoring {total:,} rows of split {split!r} (config.evals.{evaluator})')
  orders = score(counts, data_lib.eval_batches(source, options['batch_size'], num_examples),
                 edges, log=log)
  seq_len = int(eval_data['seq_len'])
  return {'orders': orders, 'evaluator': evaluator, 'split': split, 'num_train_rows': rows,
          'num_train_tokens': counts.num_tokens, 'num_eval_rows': total,
          'num_eval_tokens': orders[1]['num_tokens'], 'seq_len': seq_len, 'vocab_size': v,
          'edges': losses.position_bins(seq_len, edges), 'seconds': time.perf_counter() - tic}


def floor_for_run(workdir: str, evaluator: str = 'valid', max_order: int = 7, edges=None,
                  log: Log = print) -> dict[str, Any]:
  """``floor_for_config`` of the training run in ``workdir``: its saved config and its own
  tokenizer (read, never trained here)."""
  config = run_record.load_config(workdir)
  evaluator_options(config, evaluator, max_order)  # refused before a tokenizer is looked for
  tokenizer = vocab.for_run(config, workdir, train=False)
  return floor_for_config(config, tokenizer, evaluator, max_order, edges, log)


def table(result: Mapping[str, Any]) -> str:
  """A Markdown table of ``floor_for_config``'s result: order, loss, loss per target bin."""
  orders = result['orders']
  labels = list(orders[min(orders)]['loss_by_position'])
  return figures.markdown(
      ('order', 'loss (nats)', *(f't {a}' for a in labels)),
      [(k, f"{r['loss']:.4f}", *(f'{r["loss_by_position"][a]:.4f}' for a in labels))
       for k, r in sorted(orders.items())])
