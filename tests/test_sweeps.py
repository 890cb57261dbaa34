"""The sweep runner (fixed_head/experiments/sweeps.py, sweep.py) on a tiny sweep of its own.

Each run of the sweep below is a few steps of a tiny model on the synthetic language, so the
runner's behaviour is checked on real training: order, done markers, skipping, resuming an
interrupted run to the result an uninterrupted one has, merging duplicates, and refusals.
"""

import functools
import json
import os
import re
import subprocess
import sys

import jax
import pytest

from fixed_head import errors
from fixed_head.experiments import sweeps
from fixed_head.experiments import over_seeds
from fixed_head.train import run_config, trainer

import cli
import repo_configs

SWEEP_CONFIG = '''
"""A tiny sweep for tests/test_sweeps.py."""
from fixed_head.experiments import sweeps

default = sweeps.load_module({default!r})


def get_config(variant='fixed'):
  c = default.get_config(variant)
  c.num_train_steps = 6
  c.batch_size = 16
  c.data.update(dict(seq_len=8, memory_len=4, support=2, vocab_size=8))
  c.model.update(dict(vocab_size=8, max_len=8, emb_dim=16, num_heads=4, num_layers=1,
                      mlp_dim=32, dropout_rate=0.1, attention_dropout_rate=0.1))
  c.model.head_size = 8 if variant == 'fixed' else None  # n, or d / h = 4
  c.optimizer.warmup_steps = 2
  c.log_every_steps = 2
  c.eval_every_steps = 0
  c.checkpoint.every_steps = 2
  c.evals.valid = dict(type='lm', split='eval', num_examples=16, batch_size=16)
  return c


def sweep(arg='all'):
  runs = [
      sweeps.run('baseline', {{'seed': 0}}, figures=('heads',)),
      sweeps.run('fixed', {{'seed': 0}}, figures=('heads',)),
      sweeps.run('fixed', {{'seed': 1}}, figures=('heads',)),
      # The second run again (num_heads=4 is get_config's): merged into it.
      sweeps.run('fixed', {{'seed': 0, 'model.num_heads': 4}}, figures=('head_size',)),
  ]
  if arg in ('all', 'two'):
    return runs if arg == 'all' else runs[:2]
  if arg == 'typo':  # the second run names no field
    return [sweeps.run('fixed', {{'seed': 0}}), sweeps.run('fixed', {{'model.num_head': 2}})]
  if arg == 'invalid':  # h = 3 does not divide d = 16 with head_size=None
    return [sweeps.run('fixed', {{'seed': 0}}),
            sweeps.run('baseline', {{'model.num_heads': 3}})]
  if arg == 'same_name':  # two configs, one workdir name
    return [sweeps.run('fixed', {{'seed': 1}}), sweeps.run('fixed', {{'data.seed': 1}})]
  raise ValueError(f'tiny_sweep.py:{{arg}}: use :all, :two, :typo, :invalid or :same_name.')
'''
NAMES = ['baseline-seed=0', 'fixed-seed=0', 'fixed-seed=1']  # in the order they train


def write_config(directory, name='tiny_sweep.py') -> str:
  path = os.path.join(directory, name)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(SWEEP_CONFIG.format(default=os.path.join(repo_configs.REPO, 'configs',
                                                     'default.py')))
  return path


class Trainer:
  """trainer.train_and_evaluate on one device, recording the workdirs it is called for;
  ``interrupt_call=k`` stops the k-th call at step 4 (checkpointed) with Preempted."""

  def __init__(self, interrupt_call: int | None = None):
    self.workdirs: list[str] = []
    self.interrupt_call = interrupt_call

  def __call__(self, config, workdir):
    self.workdirs.append(os.path.basename(workdir))
    devices = jax.devices()[:1]
    if len(self.workdirs) == self.interrupt_call:
      trainer.train_and_evaluate(config, workdir, devices=devices, stop_after=4)
      raise errors.Preempted(4, 'stopped at step 4 by the test')
    return trainer.train_and_evaluate(config, workdir, devices=devices)


def run_sweep(config_arg, sweep_dir, train):
  lines = []
  workdirs = sweeps.run_sweep(config_arg, str(sweep_dir), train=train,
                              validate=run_config.validate, log=lines.append)
  return workdirs, lines


def attempts(workdir) -> list[str]:
  with open(os.path.join(workdir, sweeps.ATTEMPTS), encoding='utf-8') as f:
    return [json.loads(line)['outcome'] for line in f]


def final_loss(workdir) -> float:
  step, evals = over_seeds.final_evals(workdir)
  assert step == 6
  return evals['valid/loss']


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """(config file, sweep dir, log lines) of the tiny sweep trained once without a stop."""
  root = tmp_path_factory.mktemp('sweep')
  config = write_config(str(root))
  train = Trainer()
  workdirs, lines = run_sweep(config, root / 'sweep', train)
  assert train.workdirs == NAMES  # in the sweep's order, the duplicate trained once
  assert workdirs == [str(root / 'sweep' / name) for name in NAMES]
  return config, root / 'sweep', lines


@pytest.mark.slow
def test_runs_train_in_order_each_with_its_marker_and_eval(finished):
  config, sweep_dir, lines = finished
  assert sorted(os.listdir(sweep_dir)) == sorted([sweeps.PLAN, *NAMES])
  losses = []
  for name in NAMES:
    workdir = sweep_dir / name
    with open(workdir / sweeps.DONE, encoding='utf-8') as f:
      done = json.load(f)
    assert done['name'] == name and done['config_file'] == config
    assert done['wall_seconds'] > 0 and attempts(workdir) == ['finished']
    with open(workdir / 'config.json', encoding='utf-8') as f:
      saved = json.load(f)
    assert saved['seed'] == int(name[-1]) and saved['num_train_steps'] == 6
    assert saved['model']['head_size'] == (None if name.startswith('baseline') else 8)
    losses.append(final_loss(workdir))
  assert len(set(losses)) == 3  # three different runs, not one result copied
  assert lines[0] == f'sweep {config}: 3 runs in {sweep_dir}; 0 finished already, 3 to train.'
  progress = [line for line in lines if line.startswith('sweep: ')]
  assert [line.split(' runs done')[0] for line in progress] == [
      'sweep: 1/3', 'sweep: 2/3', 'sweep: 3/3']
  assert re.fullmatch(r'sweep: 1/3 runs done \(baseline-seed=0 took \dm\d\ds\); 2 to go, '
                      r'ETA \dm\d\ds', progress[0])
  assert progress[-1].endswith('0 to go, ETA 0m00s')


@pytest.mark.slow
def test_duplicate_runs_merge_and_unite_their_figures(finished):
  config, sweep_dir, _ = finished
  _, runs = sweeps.plan(config)
  assert [(r.name, r.figures) for r in runs] == [
      ('baseline-seed=0', ('heads',)), ('fixed-seed=0', ('heads', 'head_size')),
      ('fixed-seed=1', ('heads',))]
  with open(sweep_dir / sweeps.PLAN, encoding='utf-8') as f:
    plan = json.load(f)
  assert plan['config'] == config and [r['name'] for r in plan['runs']] == NAMES
  with open(sweep_dir / 'fixed-seed=0' / sweeps.DONE, encoding='utf-8') as f:
    assert json.load(f)['figures'] == ['heads', 'head_size']


@pytest.mark.slow
def test_a_rerun_trains_nothing(finished):
  config, sweep_dir, _ = finished
  before = {name: os.path.getmtime(sweep_dir / name / sweeps.DONE) for name in NAMES}
  train = Trainer()
  workdirs, lines = run_sweep(config, sweep_dir, train)
  assert train.workdirs == [] and len(workdirs) == 3
  assert lines == [f'sweep {config}: 3 runs in {sweep_dir}; 3 finished already, 0 to train.',
                   f'sweep {config}: all 3 runs finished in {sweep_dir}.']
  assert {name: os.path.getmtime(sweep_dir / name / sweeps.DONE) for name in NAMES} == before


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(finished, tmp_path):
  """The sweep's first two runs (':two'), the second stopped at step 4 as a preemption
  would; the sweep is run again."""
  config, uninterrupted, _ = finished
  sweep_dir = tmp_path / 'sweep'
  with pytest.raises(errors.Preempted):
    run_sweep(f'{config}:two', sweep_dir, Trainer(interrupt_call=2))
  stopped = sweep_dir / 'fixed-seed=0'
  assert sweeps.is_done(sweep_dir / 'baseline-seed=0') and not sweeps.is_done(stopped)
  assert attempts(stopped) == ['Preempted']
  assert sorted(os.listdir(stopped / 'checkpoints')) == ['2', '4']

  train = Trainer()
  _, lines = run_sweep(f'{config}:two', sweep_dir, train)
  assert train.workdirs == ['fixed-seed=0']
  assert lines[0].endswith('1 finished already, 1 to train.')
  assert attempts(stopped) == ['Preempted', 'finished'] and sweeps.is_done(stopped)
  with open(stopped / 'metrics.jsonl', encoding='utf-8') as f:
    assert [json.loads(line)['step'] for line in f] == [2, 4, 6]  # resumed at 4, not redone
  for name in NAMES[:2]:
    assert final_loss(sweep_dir / name) == final_loss(uninterrupted / name), name


@pytest.mark.slow
def test_a_bad_override_is_refused_before_anything_is_written(finished, tmp_path):
  config = finished[0]
  train = Trainer()
  with pytest.raises(errors.UsageError) as e:
    run_sweep(f'{config}:typo', tmp_path / 'typo', train)
  assert str(e.value) == ('sweep run fixed-num_head=2: config.model.num_head is not a field '
                          'of the config.')
  with pytest.raises(errors.UsageError, match=r'^sweep run baseline-num_heads=3: .*num_heads'):
    run_sweep(f'{config}:invalid', tmp_path / 'invalid', train)
  with pytest.raises(errors.UsageError, match=r'two different runs are named fixed-seed=1 '
                     r"\(\{'seed': 1\} and \{'data.seed': 1\}\)"):
    run_sweep(f'{config}:same_name', tmp_path / 'same_name', train)
  with pytest.raises(errors.UsageError, match=r'^tiny_sweep.py:nope: use :all, :two'):
    run_sweep(f'{config}:nope', tmp_path / 'nope', train)
  assert train.workdirs == [] and os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_sweep_dir_of_another_config_file_is_refused(finished, tmp_path):
  config, sweep_dir, _ = finished
  other = write_config(str(tmp_path), 'other_sweep.py')
  with open(sweep_dir / sweeps.PLAN, encoding='utf-8') as f:
    plan = f.read()
  train = Trainer()
  with pytest.raises(errors.UsageError, match=re.escape(
      f'--workdir={sweep_dir} holds the sweep --config={config}, not {other}; give another '
      '--workdir.')):
    run_sweep(other, sweep_dir, train)
  assert train.workdirs == []
  with open(sweep_dir / sweeps.PLAN, encoding='utf-8') as f:
    assert f.read() == plan


def _sweep_py(*args):
  """sweep.py as a real process."""
  return subprocess.run([sys.executable, os.path.join(repo_configs.REPO, 'sweep.py'), *args],
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sweep_py_lists_runs_and_refuses_a_bad_config_in_one_line(finished, tmp_path):
  config, sweep_dir, _ = finished
  _sweep_py = functools.partial(cli.run, 'sweep.py')  # in this process
  listed = _sweep_py(f'--config={config}', f'--workdir={sweep_dir}', '--list')
  assert listed.returncode == 0, listed.stderr
  assert listed.stdout.splitlines() == [
      'finished  baseline-seed=0  figures=heads', 'finished  fixed-seed=0  figures=heads,head_size',
      'finished  fixed-seed=1  figures=heads']
  fresh = _sweep_py(f'--config={config}', f'--workdir={tmp_path / "new"}', '--list')
  assert fresh.returncode == 0 and fresh.stdout.count('to train ') == 3
  for bad, message in [(tmp_path / 'nothing.py', f'error: --config={tmp_path}/nothing.py: '
                        'no such config file.'),
                       (f'{config}:nope', 'error: tiny_sweep.py:nope: use :all, '
                        ':two, :typo, :invalid or :same_name.')]:
    refused = _sweep_py(f'--config={bad}', f'--workdir={tmp_path / "bad"}', '--list')
    assert (refused.returncode, refused.stderr.splitlines()) == (2, [message]), refused.stderr
  in_bucket = _sweep_py(f'--config={config}', '--workdir=gs://b/sweep')
  assert in_bucket.returncode == 2 and in_bucket.stderr.startswith(
      'error: --workdir=gs://b/sweep: a sweep directory must be local'), in_bucket.stderr
  assert in_bucket.stderr.count('\n') == 1
  assert sorted(os.listdir(tmp_path)) == []  # --list writes nothing


@pytest.mark.slow
def test_sweep_py_trains_quietly_what_the_api_trains(finished, tmp_path):
  config, uninterrupted, _ = finished
  trained = _sweep_py(f'--config={config}:two', f'--workdir={tmp_path}')
  assert trained.returncode == 0, trained.stderr
  assert trained.stderr == ''  # no library INFO logs (Orbax logs every file it writes)
  assert trained.stdout.splitlines()[-1] == (
      f'sweep {config}:two: all 2 runs finished in {tmp_path}.')
  for name in NAMES[:2]:
    assert final_loss(tmp_path / name) == final_loss(uninterrupted / name), name


@pytest.mark.slow
def test_a_run_another_process_holds_is_skipped_and_left_unfinished(finished, tmp_path):
  """Two sweep.py processes share a sweep: a run whose lock is held elsewhere (here: another
  open file description, as another process has) is skipped, not trained twice; once the
  lock is free the next call trains it."""
  config, _, _ = finished
  sweep_dir = tmp_path / 'shared'
  trained = []

  def train(cfg, workdir):  # records the call; marks nothing itself (run_sweep does)
    del cfg
    trained.append(os.path.basename(workdir))

  held = sweeps.claimed(str(sweep_dir / NAMES[1]))
  assert held.__enter__() is True
  try:
    _, lines = run_sweep(config + ':two', sweep_dir, train)
  finally:
    held.__exit__(None, None, None)
  assert trained == [NAMES[0]]
  assert not sweeps.is_done(str(sweep_dir / NAMES[1]))
  assert any('another sweep.py is training it' in line for line in lines)
  assert not any('all 2 runs finished' in line for line in lines)
  _, lines = run_sweep(config + ':two', sweep_dir, train)
  assert trained == NAMES[:2] and lines[-1].endswith('all 2 runs finished in ' + str(sweep_dir)
                                                     + '.')
