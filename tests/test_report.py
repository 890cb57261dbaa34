"""report.py on a real (tiny) sweep: results.csv, the seed summary, parameter matches, figures."""

import csv
import functools
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from fixed_head import nn
from fixed_head.config import ModelConfig
from fixed_head.errors import UsageError
from fixed_head.experiments import report, sweeps
from fixed_head.train import trainer

import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# d = 16, n = 8: a fixed-head model with h * d_p = d has exactly the baseline's parameters.
SWEEP_CONFIG = '''
from fixed_head.experiments import sweeps
from fixed_head.train import run_config


def get_config(variant='fixed'):
  c = run_config.defaults()
  c.num_train_steps = 6
  c.batch_size = 16
  c.data.update(dict(name='synthetic', seq_len=8, memory_len=4, support=2, vocab_size=8,
                     concentration=float('inf'), copy_prob=0.95, language_seed=0))
  c.model.update(dict(model_type='lm', vocab_size=8, max_len=8, emb_dim=16, num_heads=4,
                      head_size=8 if variant == 'fixed' else None, num_layers=1, mlp_dim=32,
                      dropout_rate=0.0, attention_dropout_rate=0.0))
  c.optimizer.warmup_steps = 2
  c.log_every_steps = 3
  c.eval_every_steps = 0
  c.checkpoint.every_steps = 6
  c.evals.valid = dict(type='lm', split='eval', num_examples=32, batch_size=16)
  return c


def sweep(arg='all'):
  return [sweeps.run(v, {'model.num_heads': h, 'seed': s}, figures=('heads',))
          for s in (0, 1) for h in (2, 4) for v in ('baseline', 'fixed')]
'''


@pytest.fixture(scope='module')
def sweep_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('report')
  config_file = root / 'tiny_sweep.py'
  config_file.write_text(SWEEP_CONFIG)
  sweep_dir = str(root / 'sweep')
  train = functools.partial(trainer.train_and_evaluate, devices=jax.devices()[:1])
  sweeps.run_sweep(str(config_file), sweep_dir, train=train, log=lambda _: None)
  return sweep_dir


def final_eval(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [r for r in rows if 'valid/loss' in r][-1]


def num_params(config_row):
  config = ModelConfig(model_type='lm', vocab_size=8, max_len=8, emb_dim=16,
                       num_heads=int(config_row['num_heads']),
                       head_size=int(config_row['head_size']), num_layers=1, mlp_dim=32)
  model = nn.build_model(config, rngs=nnx.Rngs(0))
  return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.slow
def test_results_csv_has_every_run_with_its_final_eval(sweep_dir, tmp_path):
  out = report.write_report(sweep_dir, str(tmp_path), log=lambda _: None)
  assert out['missing'] == []
  with open(tmp_path / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 8
  for row in rows:
    workdir = os.path.join(sweep_dir, row['run'])
    evals = final_eval(workdir)
    assert float(row['eval_loss']) == pytest.approx(evals['valid/loss'], rel=1e-9)
    assert float(row['eval_gap_to_optimal']) == pytest.approx(evals['valid/gap_to_optimal'],
                                                              rel=1e-9)
    assert int(row['steps']) == 6
    assert int(row['params']) == num_params(row)  # the accounting agrees with the model
    d_p = 16 // int(row['num_heads']) if row['variant'] == 'baseline' else 8
    assert int(row['head_size']) == d_p
    assert float(row['wall_seconds']) > 0


@pytest.mark.slow
def test_summary_is_mean_and_std_over_seeds(sweep_dir, tmp_path):
  out = report.write_report(sweep_dir, str(tmp_path), log=lambda _: None)
  summary = out['summary']
  assert len(summary) == 4  # 2 variants x 2 head counts, 2 seeds each
  for entry in summary:
    variant, h = entry['variant'], entry['num_heads']
    losses = [final_eval(os.path.join(sweep_dir, f'{variant}-num_heads={h}-seed={s}'))
              ['valid/loss'] for s in (0, 1)]
    assert entry['seeds'] == 2
    assert entry['loss_mean'] == pytest.approx(np.mean(losses), rel=1e-12)
    assert entry['loss_std'] == pytest.approx(np.std(losses, ddof=1), rel=1e-9)
  assert report.metric_of(summary) == 'gap_to_optimal'  # the synthetic data knows its optimum


@pytest.mark.slow
def test_parameter_matched_configurations_are_marked(sweep_dir, tmp_path):
  summary = {e['label']: e for e in report.write_report(sweep_dir, str(tmp_path),
                                                         log=lambda _: None)['summary']}
  # h * d_p = 2 * 8 = d: the same parameters as every d = 16 baseline.
  assert set(summary['fixed d=16 h=2 d_p=8']['param_match'].split(';')) == {
      'baseline d=16 h=2 d_p=8', 'baseline d=16 h=4 d_p=4'}
  assert summary['fixed d=16 h=4 d_p=8']['param_match'] == ''  # twice the attention weights
  assert 'fixed d=16 h=2 d_p=8' in summary['baseline d=16 h=4 d_p=4']['param_match']


@pytest.mark.slow
def test_figures_are_pngs_and_only_for_figures_with_runs(sweep_dir, tmp_path):
  out = report.write_report(sweep_dir, str(tmp_path), log=lambda _: None)
  pngs = sorted(os.path.basename(p) for p in out['files'] if p.endswith('.png'))
  assert pngs == ['curves.png', 'fig1_loss_vs_params.png', 'fig3a_loss_vs_heads.png']
  for name in pngs:
    with open(tmp_path / name, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  table = (tmp_path / 'summary.md').read_text()
  assert table.count('\n| fixed |') == 2 and 'report.py' not in table.splitlines()[0]


@pytest.mark.slow
def test_unfinished_runs_are_listed_not_reported(sweep_dir, tmp_path):
  partial = tmp_path / 'partial'
  os.makedirs(partial)
  with open(os.path.join(sweep_dir, sweeps.PLAN)) as f:
    plan = json.load(f)
  (partial / sweeps.PLAN).write_text(json.dumps(plan))
  first = plan['runs'][0]['name']
  os.symlink(os.path.join(sweep_dir, first), partial / first)  # only this run is there
  lines = []
  out = report.write_report(str(partial), log=lines.append)
  assert [r['run'] for r in out['rows']] == [first]
  assert len(out['missing']) == 7
  assert any(line.startswith('7 of 8 runs have not finished') for line in lines)


def test_not_a_sweep_directory_is_one_line_and_exit_2(tmp_path):
  with pytest.raises(UsageError, match='not a sweep directory'):
    report.collect(str(tmp_path))
  done = cli.run('report.py', f'--workdir={tmp_path}')
  assert done.returncode == 2
  assert done.stderr.strip().count('\n') == 0 and 'not a sweep directory' in done.stderr
  assert os.listdir(tmp_path) == []  # nothing written
  in_bucket = cli.run('report.py', '--workdir=gs://b/sweep', cwd=tmp_path)
  assert in_bucket.returncode == 2 and in_bucket.stderr.count('\n') == 1
  assert 'a sweep directory must be local' in in_bucket.stderr
  assert os.listdir(tmp_path) == []  # no local 'gs:' folder


@pytest.mark.slow
def test_figures_come_from_the_sweep_plan_as_it_is_now(sweep_dir, tmp_path):
  """A finished run that a changed sweep() adds to another figure shows in that figure."""
  with open(os.path.join(sweep_dir, sweeps.PLAN)) as f:
    plan = json.load(f)
  for entry in plan['runs']:
    os.symlink(os.path.join(sweep_dir, entry['name']), tmp_path / entry['name'])
    if entry['name'].startswith('fixed-'):
      entry['figures'] = ['heads', 'head_size']
  (tmp_path / sweeps.PLAN).write_text(json.dumps(plan))
  out = report.write_report(str(tmp_path), log=lambda _: None)
  assert {r['figures'] for r in out['rows'] if r['variant'] == 'fixed'} == {'heads;head_size'}
  assert os.path.exists(tmp_path / 'report' / 'fig3b_loss_vs_head_size.png')


def length_row(variant, n, seed, loss, emb_dim=128, head_size=8, mlp_dim=512, params=1000):
  return {'run': f'{variant}-{emb_dim}-{n}-{seed}', 'figures': 'length', 'variant': variant,
          'emb_dim': emb_dim, 'num_heads': 16, 'head_size': head_size, 'num_layers': 2,
          'mlp_dim': mlp_dim, 'seq_len': n, 'vocab_size': 259, 'seed': seed, 'params': params,
          'attention_params': 1, 'train_flops_per_token': 1, 'steps': 10,
          'eval_loss': loss, 'eval_perplexity': '', 'eval_accuracy': '',
          'eval_gap_to_optimal': '', 'wall_seconds': 1.0}


def test_length_gaps_pair_each_baseline_with_the_fixed_run_of_its_n_and_seed(tmp_path):
  rows = []
  for n, gap in ((32, 0.01), (64, 0.05)):
    for seed in (0, 1):
      fixed = 2.0 - n / 100 + seed / 10
      rows.append(length_row('fixed', n, seed, fixed, head_size=32, params=2000))
      rows.append(length_row('baseline', n, seed, fixed + gap + seed / 100))
      rows.append(length_row('baseline', n, seed, fixed - gap, emb_dim=192, head_size=12,
                             mlp_dim=600, params=2010))
  rows.append(length_row('baseline', 128, 0, 1.0))  # no fixed run at n = 128: no gap
  gaps = {(g['model'], g['seq_len']): g for g in report.length_gaps(rows)}
  assert set(gaps) == {(m, n) for n in (32, 64) for m in (
      'baseline d=128 h=16 d_p=8', 'baseline d=192 h=16 d_p=12')}
  narrow = gaps[('baseline d=128 h=16 d_p=8', 64)]
  assert narrow['gap_mean'] == pytest.approx(0.055) and narrow['seeds'] == 2
  assert narrow['gap_std'] == pytest.approx(np.std([0.05, 0.06], ddof=1))
  assert gaps[('baseline d=192 h=16 d_p=12', 32)]['gap_mean'] == pytest.approx(-0.01)
  # Parameter matches only at the same n: the d = 192 baseline matches the fixed model at its
  # own n, not the fixed model of another length.
  summary = {(e['label'], e['seq_len']): e for e in report.summarize(rows)}
  assert summary[('baseline d=192 h=16 d_p=12', 32)]['param_match'] == 'fixed d=128 h=16 d_p=32'
  # Rows of several n: the table gains a column n, and no loss-vs-parameters figure mixes them.
  assert report.table(report.summarize(rows)).startswith('| variant | n | d | h |')
  assert report.plot_all(report.summarize(rows), str(tmp_path), '', '') == []
  paths = report.plot_length(rows, str(tmp_path), 'footer', 'test')
  assert [os.path.basename(p) for p in paths] == ['length_loss_vs_n.png', 'length_gap_vs_n.png']
  assert report.plot_length([dict(r, figures='heads') for r in rows], str(tmp_path), '', '') == []
  assert '+0.0550 ± 0.0071' in report.gap_table(report.length_gaps(rows))
  attention = [{'variant': v, 'n': n, 'heads': 16, 'd_p': dp, 'mean_distance_mean': n / 5,
                'mean_distance_std': 0.1} for v, dp in (('baseline', 8), ('fixed', 32))
               for n in (32, 64)]
  path = report.plot_attention_vs_n(attention, str(tmp_path), 'footer', 'test')
  assert os.path.basename(path) == 'length_attention_distance.png'
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_runs_measured_by_analyze_are_summarised_in_the_report(sweep_dir, tmp_path):
  from fixed_head.experiments import attention_stats  # pylint: disable=g-import-not-at-top
  first = os.path.join(sweep_dir, 'baseline-num_heads=2-seed=0')
  out = report.write_report(sweep_dir, str(tmp_path / 'before'), log=lambda _: None)
  assert not any(p.endswith('attention_summary.md') for p in out['files'])
  copy = tmp_path / 'sweep'
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(sweep_dir, copy)
  attention_stats.analyze(str(copy / os.path.basename(first)), num_rows=8, log=lambda _: None)
  lines = []
  out = report.write_report(str(copy), str(tmp_path / 'after'), log=lines.append)
  (table,) = [p for p in out['files'] if p.endswith('attention_summary.md')]
  text = open(table).read()
  assert '| baseline | 8 | 2 | 8 | 1 |' in text and any('mean distance' in l for l in lines)


# A tiny byte LM on README.md with two head sizes and two seeds: the runs of figure
# 'position', on real text (the report adds the n-gram floor and the position effect).
TEXT_SWEEP = '''
from fixed_head.experiments import sweeps

shakespeare = sweeps.load_module({shakespeare!r})


def get_config(variant='fixed'):
  c = shakespeare.get_config(variant)
  c.data.update(dict(files={readme!r}, doc_per='line', seq_len=16))
  c.model.update(dict(max_len=16, emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32,
                      head_size=16 if variant == 'fixed' else None))
  c.update(dict(num_train_steps=4, batch_size=8, log_every_steps=2, eval_every_steps=2))
  c.checkpoint.every_steps = 4
  c.evals.valid = dict(type='lm', split='eval', num_examples=16, batch_size=8)
  return c


def sweep(arg='all'):
  return [sweeps.run(v, {{'seed': s}}, figures=('position',))
          for s in (0, 1) for v in ('baseline', 'fixed')]
'''


@pytest.fixture(scope='module')
def text_sweep(tmp_path_factory):
  root = tmp_path_factory.mktemp('text_report')
  config_file = root / 'text_sweep.py'
  config_file.write_text(TEXT_SWEEP.format(
      shakespeare=os.path.join(REPO, 'configs', 'shakespeare.py'),
      readme=os.path.join(REPO, 'README.md')))
  sweep_dir = str(root / 'sweep')
  train = functools.partial(trainer.train_and_evaluate, devices=jax.devices()[:1])
  sweeps.run_sweep(str(config_file), sweep_dir, train=train, log=lambda _: None)
  return sweep_dir


@pytest.mark.slow
def test_a_real_text_report_has_the_ngram_floor_curves_and_the_position_effect(text_sweep,
                                                                               tmp_path):
  from fixed_head.experiments import ngram  # pylint: disable=g-import-not-at-top
  lines = []
  out = report.write_report(text_sweep, str(tmp_path), log=lines.append)
  names = sorted(os.path.basename(p) for p in out['files'])
  assert {'curves.csv', 'curves.png', 'ngram_floor.md', 'position_effect.md',
          'position_effect.png'} <= set(names)
  # The floor: computed once for the sweep's data, kept, and beside every configuration.
  (kept,) = [f for f in os.listdir(text_sweep) if f.startswith('ngram_floor-')]
  expected = ngram.floor_for_run(os.path.join(text_sweep, 'fixed-seed=0'), log=lambda _: None)
  with open(os.path.join(text_sweep, kept), encoding='utf-8') as f:
    assert json.load(f)['orders']['5']['loss'] == pytest.approx(expected['orders'][5]['loss'])
  summary = open(os.path.join(str(tmp_path), 'summary.md')).read()
  assert summary.startswith('| variant | d | h | d_p |') and '5-gram floor' in summary
  assert f"| {expected['orders'][5]['loss']:.4f} |" in summary
  # Curves: every evaluation (steps 2 and 4) of every run.
  with open(os.path.join(str(tmp_path), 'curves.csv'), encoding='utf-8') as f:
    curve = list(csv.DictReader(f))
  assert sorted({(r['run'], r['step']) for r in curve}) == sorted(
      (f'{v}-seed={s}', str(step)) for v in ('baseline', 'fixed') for s in (0, 1)
      for step in (2, 4))
  assert 'loss_by_position/8-15' in curve[0]
  # The position effect: d_p = 8 (baseline) against the reference d_p = 16, two seeds.
  text = open(os.path.join(str(tmp_path), 'position_effect.md')).read()
  assert '| 16 | 16 | 2 | 8 | 16 |' in text
  # Runs analyze.py measured: their logit ranks and rank ablation, summarised.
  from fixed_head.experiments import logit_rank  # pylint: disable=g-import-not-at-top
  for run in ('baseline-seed=0', 'baseline-seed=1'):
    logit_rank.analyze(os.path.join(text_sweep, run), num_rows=8, log=lambda _: None)
  again = report.write_report(text_sweep, str(tmp_path / 'again'), log=lines.append)
  ablation = open(os.path.join(str(tmp_path / 'again'), 'rank_ablation.md')).read()
  assert '| baseline | 16 | 2 | 8 | 2 |' in ablation  # d_p = 8, two seeds
  assert '| baseline | 16 | 2 | 8 | 4 | 2 |' in ablation  # cut to r = 4, two seeds
  assert sum(line.startswith('n-gram floor for') for line in lines) == 1  # kept, not redone
  assert again['summary'] == out['summary']
  assert 'rank_ablation.png' in [os.path.basename(p) for p in again['files']]
