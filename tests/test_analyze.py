"""analyze.py and fixed_head.experiments.attention_stats: the recomputed attention weights
against a float64 NumPy forward pass, the statistics on hand-made weights, and the command on
a tiny trained run (its csv and png, what it may replace, its one-line refusals), with
fixed_head.experiments.logit_rank's files on that run (the rest: test_logit_rank.py)."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import cli
import numpy_reference
import repo_configs
from fixed_head.data import vocab
from fixed_head.errors import UsageError
from fixed_head.evaluators import common as evaluators
from fixed_head.experiments import attention_stats as stats
from fixed_head.experiments import attention_summary, figures, logit_rank

SCRIPT = os.path.join(repo_configs.REPO, 'analyze.py')


# ---------------------------------------------------------------------------------------
# The weights, against float64 NumPy
# ---------------------------------------------------------------------------------------


def _numpy_weights(model, tokens, segment_ids):
  """Every layer's P [b, h, n, n] by the formulas, in float64 NumPy, and the mask."""
  out = numpy_reference.forward(model, tokens, segment_ids)
  return out['weights'], out['mask']


@pytest.mark.parametrize('norm, scan_layers', [('post', False), ('pre', False),
                                               ('pre', True)])
def test_recomputed_weights_match_float64_numpy(norm, scan_layers):
  model = numpy_reference.random_model(norm, scan_layers)
  tokens = np.asarray(jax.random.randint(jax.random.key(2), (3, 7), 0, 13), np.int32)
  # Two packed documents and padding; a row that is all one document; one all padding.
  segment_ids = np.asarray([[1, 1, 1, 2, 2, 0, 0], [1] * 7, [0] * 7], np.int32)
  graphdef, state = nnx.split(model)
  weights_of = jax.jit(lambda state, tokens, segment_ids: stats.attention_weights(
      nnx.merge(graphdef, state), tokens, segment_ids=segment_ids))
  got, mask = weights_of(state, jnp.asarray(tokens), jnp.asarray(segment_ids))
  want, want_mask = _numpy_weights(model, tokens, segment_ids)
  assert len(got) == 2 and got[0].shape == (3, 3, 7, 7)
  np.testing.assert_array_equal(np.asarray(mask), want_mask)
  for layer, (g, w) in enumerate(zip(got, want)):
    np.testing.assert_allclose(np.asarray(g), w, atol=2e-5, rtol=1e-4, err_msg=f'layer {layer}')
  assert not np.asarray(got[1])[2].any()  # the padding row attends nowhere

  # The batch's sums: over the 12 queries that may attend, of the NumPy statistics.
  batch = {'tokens': jnp.asarray(tokens), 'positions': jnp.broadcast_to(jnp.arange(7), (3, 7)),
           'segment_ids': jnp.asarray(segment_ids)}
  sums = jax.device_get(jax.jit(
      lambda state, batch: stats.batch_sums(nnx.merge(graphdef, state), batch))(state, batch))
  valid = segment_ids > 0
  assert sums['queries'] == valid.sum() == 12
  distance = np.abs(np.arange(7)[:, None] - np.arange(7)[None, :])
  for layer, w in enumerate(want):
    with np.errstate(divide='ignore', invalid='ignore'):
      entropy = -np.where(w > 0, w * np.log(w), 0).sum(-1)  # [b, h, n]
    expected = {'entropy': entropy, 'mean_distance': (w * distance).sum(-1),
                'local_share': w.sum(-1)}  # n = 7 < 8: every allowed key is local
    for stat, values in expected.items():
      np.testing.assert_allclose(sums[stat][layer], (values * valid[:, None]).sum((0, 2)),
                                 rtol=1e-4, atol=1e-4, err_msg=f'{stat}, layer {layer}')


# ---------------------------------------------------------------------------------------
# The statistics, on hand-made weights
# ---------------------------------------------------------------------------------------


def test_uniform_causal_attention_has_the_textbook_statistics():
  n = 20
  mask = np.tril(np.ones((n, n), bool))
  got = {k: np.asarray(v) for k, v in stats.query_stats(stats.uniform_weights(mask)).items()}
  i = np.arange(n)
  np.testing.assert_allclose(got['entropy'], np.log(i + 1), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got['mean_distance'], i / 2, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got['local_share'], np.minimum(i + 1, 8) / (i + 1), rtol=1e-6)
  assert got['local_share'][7] == pytest.approx(1.0) and got['local_share'][8] < 1
  reference = stats.uniform_causal(n)
  for stat in stats.STATS:  # the plot's reference line: these, averaged over the queries
    assert reference[stat] == pytest.approx(float(got[stat].mean()), rel=1e-6)
  assert reference['mean_distance'] == (n - 1) / 4


def test_attention_on_the_diagonal_is_certain_and_local():
  got = stats.query_stats(np.eye(9, dtype=np.float32)[None, None])  # [1, 1, n, n]
  np.testing.assert_array_equal(np.asarray(got['entropy']), 0)
  np.testing.assert_array_equal(np.asarray(got['mean_distance']), 0)
  np.testing.assert_array_equal(np.asarray(got['local_share']), 1)


def test_attention_to_the_first_token_is_far_and_not_local():
  n = 12
  weights = np.zeros((n, n), np.float32)
  weights[:, 0] = 1  # every query on key 0
  got = {k: np.asarray(v) for k, v in stats.query_stats(weights).items()}
  np.testing.assert_array_equal(got['entropy'], 0)
  np.testing.assert_array_equal(got['mean_distance'], np.arange(n))
  np.testing.assert_array_equal(got['local_share'], np.arange(n) < 8)


# ---------------------------------------------------------------------------------------
# The command, on a tiny trained run
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, tiny_lm_run):
  """A byte-level LM (2 pre-LN layers, h = 2, d_p = 16, n = 32) trained for 4 steps on the
  README, one document a line: packed rows, so segments and padding are masked."""
  return repo_configs.copy_run(tiny_lm_run,
                                 str(tmp_path_factory.mktemp('analyze') / 'run'))


def run(*args):
  """analyze.py in this process (tests/cli.py)."""
  return cli.run('analyze.py', *args)


def _read(path):
  with open(path, encoding='utf-8', newline='') as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_writes_a_row_per_layer_and_head_and_a_plot(workdir):
  done = subprocess.run([sys.executable, SCRIPT, f'--workdir={workdir}', '--num_rows=12',
                         '--ablation_ranks=8,4'], capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  rows = _read(os.path.join(workdir, stats.CSV))
  assert list(rows[0]) == list(stats.COLUMNS)
  assert [(r['layer'], r['head']) for r in rows] == [('0', '0'), ('0', '1'), ('1', '0'),
                                                      ('1', '1')]
  for r in rows:
    assert (r['n'], r['d_p'], r['heads'], r['step'], r['variant'], r['seed']) == (
        '32', '16', '2', '4', 'fixed', '0')
    assert int(r['num_rows']) <= 12
    assert 0 <= float(r['entropy']) <= np.log(32) and 0 <= float(r['mean_distance']) <= 31
    assert 0 < float(r['local_share']) <= 1
  with open(os.path.join(workdir, stats.PNG), 'rb') as f:
    assert f.read(4) == b'\x89PNG'
  assert '| layer | head |' in done.stdout and 'uniform causal attention' in done.stdout

  # logit_rank: per layer and head the spectrum of S (k = min(n, d_p) = 16 values), per
  # rank 4, 8 and 16 (d_p: uncut, always run) the loss by target-position bin.
  ranks = _read(os.path.join(workdir, logit_rank.CSV))
  assert list(ranks[0]) == list(logit_rank.spectrum_columns(16)) and len(ranks) == 4
  for r in ranks:
    assert 1 <= float(r['erank']) <= 16 and float(r['s1']) == 1 >= float(r['s16']) >= 0
    assert 1 <= float(r['rank90']) <= float(r['rank99']) <= 16 and r['d_p'] == '16'
  cuts = _read(os.path.join(workdir, logit_rank.ABLATION_CSV))
  assert list(cuts[0]) == list(logit_rank.ablation_columns(['1', '2-3', '4-7', '8-15',
                                                             '16-31']))
  assert [c['r'] for c in cuts] == ['4', '8', '16'] and len({c['num_tokens'] for c in cuts}) == 1
  assert '| layer | head | erank |' in done.stdout and '| r | loss |' in done.stdout

  # The same numbers in process, and its own earlier output is replaced.
  again = stats.analyze(workdir, num_rows=12, log=lambda _: None)
  assert [r['mean_distance'] for r in again['rows']] == [
      float(r['mean_distance']) for r in rows]


def test_a_file_it_did_not_write_is_never_overwritten(workdir, tmp_path):
  other = str(tmp_path / 'run')
  shutil.copytree(workdir, other)
  with open(os.path.join(other, stats.PNG), 'wb') as f:
    f.write(b'someone else\'s figure')
  with pytest.raises(UsageError, match='never overwritten'):
    stats.analyze(other, num_rows=4, log=lambda _: None)
  with open(os.path.join(other, stats.PNG), 'rb') as f:
    assert f.read() == b'someone else\'s figure'


def test_uncut_rank_is_the_lm_evaluators_loss(workdir):
  restored = stats.restore(workdir)
  setup, params, _ = restored
  got = logit_rank.analyze(workdir, num_rows=12, ranks=(8,), restored=restored,
                           log=lambda _: None)['ablation']
  assert [a['r'] for a in got] == [8, 16]  # d_p = 16: no cut, always run
  evaluator = evaluators.LMEvaluator(
      {'type': 'lm', 'num_examples': 12, 'batch_size': 8}, setup.config.data, setup.task,
      setup.model_of, setup.put_batch, tokenizer=vocab.for_run(setup.config, workdir,
                                                               train=False))
  want = evaluator(params)
  assert got[1]['loss'] == pytest.approx(want['loss'], abs=1e-5)
  assert got[1]['num_tokens'] == want['num_tokens'] and got[1]['num_rows'] == 12


def test_rank_files_it_did_not_write_are_never_overwritten(workdir, tmp_path):
  other = str(tmp_path / 'run')
  shutil.copytree(workdir, other)
  for name in (stats.CSV, stats.PNG):
    if os.path.exists(os.path.join(other, name)):
      os.remove(os.path.join(other, name))
  with open(os.path.join(other, logit_rank.ABLATION_CSV), 'w', encoding='utf-8') as f:
    f.write('r,loss\n4,1.0\n')
  done = run(f'--workdir={other}', '--num_rows=4')
  assert done.returncode == 2 and 'never overwritten' in done.stderr, done.stderr
  assert done.stderr.strip().count('\n') == 0
  assert not os.path.exists(os.path.join(other, stats.CSV))  # refused before any writing
  with open(os.path.join(other, logit_rank.ABLATION_CSV), encoding='utf-8') as f:
    assert f.read() == 'r,loss\n4,1.0\n'
  os.remove(os.path.join(other, logit_rank.ABLATION_CSV))
  with open(os.path.join(other, logit_rank.CSV), 'w', encoding='utf-8') as f:
    f.write(','.join(stats.COLUMNS) + '\n')  # attention_stats's header, not this one
  model = stats.restore(other)[0].model_config
  with pytest.raises(UsageError, match='logit_rank.csv exists and is not an earlier output'):
    logit_rank.check(other, model, None)
  with pytest.raises(UsageError, match='--ablation_ranks=4,32: ranks above d_p = 16'):
    logit_rank.check(workdir, model, (4, 32))


def test_a_bad_workdir_is_one_line_and_exit_2(tmp_path):
  done = run(f'--workdir={tmp_path}')
  assert done.returncode == 2, done.stderr
  assert f'--workdir={tmp_path}' in done.stderr and 'config.json' in done.stderr
  assert done.stderr.strip().count('\n') == 0


def test_no_checkpoint_or_not_an_lm_run_names_the_workdir(workdir, tmp_path):
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    config = json.load(f)
  bare = tmp_path / 'bare'
  bare.mkdir()
  (bare / 'config.json').write_text(json.dumps(config))
  with pytest.raises(UsageError, match=f'--workdir={bare}: no checkpoint'):
    stats.restore(str(bare))
  bert = tmp_path / 'bert'
  bert.mkdir()
  config['task'] = {'name': 'bert_pretraining'}
  config['model']['model_type'] = 'bert'
  (bert / 'config.json').write_text(json.dumps(config))
  with pytest.raises(UsageError, match=f"--workdir={bert} holds a 'bert_pretraining' run"):
    stats.restore(str(bert))
  with pytest.raises(UsageError, match='--step=7: no checkpoint of that step'):
    stats.restore(workdir, 7)
  with pytest.raises(UsageError, match='--num_rows=0'):
    stats.analyze(workdir, num_rows=0)


# ---------------------------------------------------------------------------------------
# The summary over runs
# ---------------------------------------------------------------------------------------


def _synthetic_run(path, variant, seed, n, d_p, distances, local=0.5):
  """A workdir holding only an attention_stats.csv: 2 layers x 2 heads, the given mean
  distances (in layer-major order), local share ``local`` + 0.1 per head."""
  path.mkdir()
  rows = [{'layer': layer, 'head': head, 'entropy': 1.0 + seed, 'mean_distance': distance,
           'local_share': local + 0.1 * head, 'n': n, 'd_p': d_p, 'heads': 2, 'num_rows': 64,
           'step': 100, 'variant': variant, 'seed': seed}
          for (layer, head), distance in zip([(0, 0), (0, 1), (1, 0), (1, 1)], distances)]
  (path / stats.CSV).write_text(figures.to_csv(rows, stats.COLUMNS))
  return str(path)


def test_summary_averages_layers_and_heads_then_seeds(tmp_path):
  workdirs = [
      _synthetic_run(tmp_path / 'f0', 'fixed', 0, 32, 32, [1, 2, 3, 4]),  # run mean 2.5
      _synthetic_run(tmp_path / 'f1', 'fixed', 1, 32, 32, [3, 4, 5, 6]),  # run mean 4.5
      _synthetic_run(tmp_path / 'b0', 'baseline', 0, 32, 8, [8, 8, 8, 8], local=0.2),
      _synthetic_run(tmp_path / 'g0', 'fixed', 0, 16, 32, [2, 2, 2, 2]),  # another n
  ]
  summary = attention_summary.summarize_workdirs(workdirs)
  assert [(e['n'], e['variant'], e['seeds']) for e in summary] == [
      (16, 'fixed', 1), (32, 'baseline', 1), (32, 'fixed', 2)]
  fixed = summary[2]
  assert fixed['mean_distance_mean'] == pytest.approx(3.5)
  assert fixed['mean_distance_std'] == pytest.approx(np.std([2.5, 4.5], ddof=1))
  assert fixed['local_share_mean'] == pytest.approx(0.55) and fixed['local_share_std'] == 0
  assert fixed['entropy_mean'] == pytest.approx(1.5)
  assert fixed['uniform_mean_distance'] == pytest.approx(31 / 4)
  assert summary[1]['local_share_mean'] == pytest.approx(0.25)
  text = attention_summary.table(summary)
  assert '| fixed | 32 | 2 | 32 | 2 | 3.50 ± 1.41 | 7.75 | 0.550 ± 0.000 |' in text


def test_summary_refuses_a_workdir_without_the_csv(tmp_path):
  with pytest.raises(UsageError, match='python analyze.py --workdir='):
    attention_summary.summarize_workdirs([str(tmp_path)])
