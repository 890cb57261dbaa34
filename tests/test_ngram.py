"""The count n-gram floor (fixed_head/experiments/ngram.py): Witten-Bell by hand, against a
brute-force reference, the context cut at row and segment starts, and end to end on a text
run, scoring exactly the rows and targets of its LM evaluator."""

import collections
import math
from fractions import Fraction as F

import jax
import numpy as np
import pytest

from fixed_head import data as data_lib
from fixed_head import evaluators
from fixed_head.data import vocab
from fixed_head.errors import UsageError
from fixed_head.experiments import ngram
from fixed_head.tasks import losses
from fixed_head.train import run_record, sharding, trainer

import repo_configs

A, B, C = 1, 2, 3
V = 4  # ids 0 ... 3; 0 is never a counted token here

# Train: "a b a b c" (no segment ids) and "b a b" then padding (segment ids, positions).
TRAIN = [{'tokens': np.array([[A, B, A, B, C]])},
         {'tokens': np.array([[B, A, B, 0, 0]]), 'segment_ids': np.array([[1, 1, 1, 0, 0]]),
          'positions': np.array([[0, 1, 2, 0, 0]])}]
# Targets: b a b c and a b. Order 1: c(a) = 2, c(b) = 3, c(c) = 1; N = 6, N1+ = 3:
#   P1(w) = (c(w) + 3/4) / 9: P1(a) = 11/36, P1(b) = 15/36 = 5/12, P1(c) = 7/36.
P1 = {A: F(11, 36), B: F(5, 12), C: F(7, 36)}
# Order 2: c(ab) = 3, c(ba) = 2, c(bc) = 1; c(a) = 3, N1+(a) = 1; c(b) = 3, N1+(b) = 2; c(c) = 0.
#   P2(b|a) = (3 + 1 * 5/12) / 4 = 41/48;  P2(a|b) = (2 + 2 * 11/36) / 5 = 47/90;
#   P2(c|b) = (1 + 2 * 7/36) / 5 = 5/18;   P2(c|c) = P1(c) = 7/36 (c never a context).
P2 = {(A, B): F(41, 48), (B, A): F(47, 90), (B, C): F(5, 18), (C, C): F(7, 36)}
# Order 3 (targets with 2 earlier tokens): c(ab a) = 1, c(ab c) = 1, c(ba b) = 2;
#   c(ab) = 2, N1+(ab) = 2; c(ba) = 2, N1+(ba) = 1:
#   P3(a|ab) = (1 + 2 * 47/90) / 4 = 23/45;  P3(c|ab) = (1 + 2 * 5/18) / 4 = 7/18;
#   P3(b|ba) = (2 + 41/48) / 3 = 137/144;   P3(c|bc) = P2(c|c) = 7/36 (c(bc) = 0).
# Order 4: c(bab c) = 1 only (c(aba b) = 1 too): P4(c|bab) = (1 + 1 * 7/18) / 2 = 25/36.

# Eval "b a b c c": targets a | b, b | ba, c | bab, c | babc at positions 1, 2, 3, 4.
EVAL = [{'tokens': np.array([[B, A, B, C, C]])}]
EXPECTED = {  # order -> the four targets' probabilities (a short context falls back)
    1: [P1[A], P1[B], P1[C], P1[C]],
    2: [P2[B, A], P2[A, B], P2[B, C], P2[C, C]],
    3: [P2[B, A], F(137, 144), F(7, 18), F(7, 36)],  # c | bc: c(bc) = 0 -> P2(c|c)
    4: [P2[B, A], F(137, 144), F(25, 36), F(7, 36)],  # c | abc: c(abc) = 0 -> P3 -> P2
}


def nll(probabilities):
  return [-math.log(p) for p in probabilities]


def test_witten_bell_by_hand():
  result = ngram.score(ngram.fit(TRAIN, V, max_order=4), EVAL)
  for k, probabilities in EXPECTED.items():
    losses_k = nll(probabilities)
    assert result[k]['num_tokens'] == 4
    assert result[k]['loss'] == pytest.approx(np.mean(losses_k), abs=1e-12)
    # n = 5: bins '1', '2-3', '4'
    assert result[k]['tokens_by_position'] == {'1': 1, '2-3': 2, '4': 1}
    by = result[k]['loss_by_position']
    assert by['1'] == pytest.approx(losses_k[0], abs=1e-12)
    assert by['2-3'] == pytest.approx((losses_k[1] + losses_k[2]) / 2, abs=1e-12)
    assert by['4'] == pytest.approx(losses_k[3], abs=1e-12)
  # P3(w | ab) over the whole vocabulary sums to 1 (id 0, never seen, gets backed-off mass).
  counts = ngram.fit(TRAIN, V, max_order=3)
  probs = [math.exp(-ngram.score(counts, [{'tokens': np.array([[A, B, w]])}])[3]
                    ['loss_by_position']['2']) for w in range(V)]
  assert probs[A] == pytest.approx(23 / 45, abs=1e-12)
  assert sum(probs) == pytest.approx(1.0, abs=1e-12)


def test_context_is_cut_at_the_row_and_segment_start():
  counts = ngram.fit(TRAIN, V, max_order=3)
  whole = ngram.score(counts, [{'tokens': np.array([[A, B, A, B, C]])}])
  # The same bytes in two rows: b starts row 2 (no target), c sees only b.
  rows = ngram.score(counts, [{'tokens': np.array([[A, B, A]])},
                              {'tokens': np.array([[B, C, 0]]),
                               'segment_ids': np.array([[1, 1, 0]])}])
  segments = ngram.score(counts, [{'tokens': np.array([[A, B, A, B, C]]),
                                   'segment_ids': np.array([[1, 1, 1, 2, 2]])}])
  # One row, order 3: b | a, a | ab, b | aba -> P3(b|ba), c | abab -> P3(c|ab).
  assert whole[3]['num_tokens'] == 4
  assert whole[3]['loss'] == pytest.approx(
      np.mean(nll([P2[A, B], F(23, 45), F(137, 144), F(7, 18)])), abs=1e-12)
  # Cut: b | a, a | ab, and c | b (order 2, whatever the order asked for).
  for cut in (rows, segments):
    assert cut[3]['num_tokens'] == 3
    assert cut[3]['loss'] == pytest.approx(
        np.mean(nll([P2[A, B], F(23, 45), P2[B, C]])), abs=1e-12)


# ---------------------------------------------------------------------------------------
# A brute-force reference: plain dicts and the recursive formula
# ---------------------------------------------------------------------------------------


def targets_of(batches):
  """(w, context: every earlier token of its segment, position) of each target."""
  for batch in batches:
    for r, tokens in enumerate(batch['tokens'].tolist()):
      seg = batch['segment_ids'][r].tolist() if 'segment_ids' in batch else None
      for j in range(1, len(tokens)):
        if seg is not None and not (seg[j] == seg[j - 1] and seg[j] > 0):
          continue
        i = j
        while i > 0 and (seg is None or seg[i - 1] == seg[j]):
          i -= 1
        position = int(batch['positions'][r][j]) if 'positions' in batch else j
        yield tokens[j], tuple(tokens[i:j]), position


def reference(train, eval_rows, vocab_size, max_order, edges, seq_len):
  counts = collections.Counter()  # (h, w) -> c, any order
  for w, context, _ in targets_of(train):
    for k in range(1, min(max_order, len(context) + 1) + 1):
      counts[context[len(context) - (k - 1):] if k > 1 else (), w] += 1
  total, types = collections.Counter(), collections.Counter()
  for (h, _), c in counts.items():
    total[h] += c
    types[h] += 1

  def prob(h, w):
    if not h:
      return (counts[(), w] + types[()] / vocab_size) / (total[()] + types[()])
    lower = prob(h[1:], w)
    if total[h] == 0:
      return lower
    return (counts[h, w] + types[h] * lower) / (total[h] + types[h])

  labels = losses.position_bin_labels(edges, seq_len)
  out = {}
  for k in range(1, max_order + 1):
    values, by = [], collections.defaultdict(list)
    for w, context, position in targets_of(eval_rows):
      m = min(k - 1, len(context))
      value = -math.log(prob(context[len(context) - m:] if m else (), w))
      values.append(value)
      by[labels[int(np.searchsorted(edges, position, side='right')) - 1]].append(value)
    out[k] = (np.mean(values), len(values), {a: np.mean(v) for a, v in by.items()},
              {a: len(v) for a, v in by.items()})
  return out


def random_batches(rng, num_batches, rows, n, vocab_size, noise=0.0):
  """Rows of segments and padding (one batch without segment ids or positions): windows of
  one short random text, so that long n-grams recur, a ``noise`` share of tokens redrawn."""
  text = np.random.default_rng(1).integers(0, 4, 40)

  def draw():
    tokens = text[(rng.integers(0, len(text), (rows, 1)) + np.arange(n)) % len(text)]
    return np.where(rng.random((rows, n)) < noise, rng.integers(0, vocab_size, (rows, n)),
                    tokens)

  batches = [{'tokens': draw()}]
  for _ in range(num_batches - 1):
    tokens = draw()
    seg, pos = np.zeros((rows, n), np.int32), np.zeros((rows, n), np.int32)
    for r in range(rows):
      j, s = 0, 1
      while j < n - rng.integers(0, 3):
        length = int(rng.integers(1, n))
        seg[r, j:j + length] = s
        pos[r, j:j + length] = np.arange(min(length, n - j)) + rng.integers(0, 2) * 3
        j, s = j + length, s + 1
    batches.append({'tokens': np.where(seg > 0, tokens, 0), 'segment_ids': seg,
                    'positions': pos})
  return batches


def test_matches_a_brute_force_reference():
  rng = np.random.default_rng(0)
  n, vocab_size, max_order = 16, 6, 7
  train = random_batches(rng, 4, 30, n, 4, noise=0.3)  # ids 4 and 5 never seen in train
  eval_rows = random_batches(rng, 3, 10, n, vocab_size, noise=0.1)
  edges = losses.position_bins(n)
  want = reference(train, eval_rows, vocab_size, max_order, edges, n)
  got = ngram.score(ngram.fit(train, vocab_size, max_order), eval_rows)
  for k in range(1, max_order + 1):
    loss, count, by, tokens = want[k]
    assert got[k]['num_tokens'] == count
    assert got[k]['loss'] == pytest.approx(loss, rel=1e-12)
    assert {a: t for a, t in got[k]['tokens_by_position'].items() if t} == tokens
    for label, value in by.items():
      assert got[k]['loss_by_position'][label] == pytest.approx(value, rel=1e-12)
  assert got[6]['loss'] < got[1]['loss']  # long n-grams recur in these rows
  with pytest.raises(ValueError, match='outside the vocabulary'):
    ngram.fit(train, 3)


# ---------------------------------------------------------------------------------------
# A text run
# ---------------------------------------------------------------------------------------

WORDS = 'the a cat dog sat ran on under mat log quickly slowly red blue big small'.split()


def text_config(tmp_path):
  rng = np.random.default_rng(0)
  for f in range(3):
    with open(tmp_path / f'part{f}.txt', 'w', encoding='utf-8') as out:
      for _ in range(30):
        out.write(' '.join(rng.choice(WORDS, rng.integers(2, 12))) + '\n')
  config = repo_configs.load('shakespeare').get_config('baseline')
  config.data.update(dict(files=str(tmp_path / '*.txt'), doc_per='line', seq_len=32,
                          eval_fraction=0.2))
  config.model.update(dict(max_len=32, emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32))
  config.batch_size = 8
  config.evals.valid = dict(type='lm', split='eval', num_examples=7, batch_size=4)
  config.evals.other = dict(type='lm', batch_size=8, data=dict(split_seed=1))
  return config


def test_floor_for_config_scores_the_lm_evaluators_rows_and_targets(tmp_path):
  config = text_config(tmp_path)
  tokenizer = vocab.for_data(config.data)
  lines = []
  floors = {name: ngram.floor_for_config(config, tokenizer, name, max_order=5,
                                         log=lines.append) for name in ('valid', 'other')}
  setup = trainer.build_setup(config, jax.devices()[:1])
  params = trainer.init_state(setup)['params']
  lm = evaluators.build_evaluators(setup.config, setup.task, setup.model_of, setup.put_batch,
                                   tokenizer=tokenizer,
                                   replicated=sharding.replicated(setup.mesh))
  for name, floor in floors.items():
    result = lm[name](params)
    assert floor['num_eval_rows'] == result['num_rows']
    for row in floor['orders'].values():
      assert row['num_tokens'] == result['num_tokens'] == floor['num_eval_tokens']
      assert sum(row['tokens_by_position'].values()) == row['num_tokens']
    assert floor['orders'][5]['loss'] < floor['orders'][1]['loss'] < math.log(259)
  assert floors['valid']['num_eval_rows'] == 7 and floors['other']['num_eval_rows'] > 7
  # Every train row counted once.
  train = data_lib.build_source(config.data, 'train', tokenizer=tokenizer)
  seg = train._rows['segment_ids']  # pylint: disable=protected-access
  floor = floors['valid']
  assert floor['num_train_rows'] == train.num_rows == len(seg)
  assert floor['num_train_tokens'] == int(np.sum((seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)))
  assert (floor['seq_len'], floor['vocab_size'], floor['edges']) == (32, 259, (1, 2, 4, 8, 16))
  assert any(line.startswith('  5-gram:') for line in lines)
  table = ngram.table(floor).splitlines()
  assert table[0] == ('| order | loss (nats) | t 1 | t 2-3 | t 4-7 | t 8-15 | t 16-31 |')
  assert len(table) == 2 + 5
  # The same from the run's workdir (its saved config and tokenizer).
  workdir = tmp_path / 'run'
  workdir.mkdir()
  run_record.record(config, str(workdir), None, 0)
  assert ngram.floor_for_run(str(workdir), max_order=5, log=lines.append)['orders'] == \
      floor['orders']


def test_refusals(tmp_path):
  synthetic = repo_configs.load('default').get_config()
  with pytest.raises(UsageError, match="data.name='synthetic'"):
    ngram.floor_for_config(synthetic, None)
  workdir = tmp_path / 'run'
  workdir.mkdir()
  run_record.record(synthetic, str(workdir), None, 0)
  with pytest.raises(UsageError, match='own optimal loss'):
    ngram.floor_for_run(str(workdir))
  with pytest.raises(UsageError, match='holds no config.json'):
    ngram.floor_for_run(str(tmp_path))
  config = text_config(tmp_path)
  with pytest.raises(UsageError, match=r'config.evals.test does not exist.*other.*valid'):
    ngram.floor_for_config(config, None, 'test')
  with pytest.raises(UsageError, match='max_order=0'):
    ngram.floor_for_config(config, None, max_order=0)
