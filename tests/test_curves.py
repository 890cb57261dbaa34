"""fixed_head/experiments/curves.py and eval.py --all_steps: every evaluation of a run, the
ones made in training and the ones eval.py added afterwards."""

import json
import os

import jax
import pytest

from fixed_head import errors
from fixed_head.experiments import curves
from fixed_head.train import trainer

import repo_configs


@pytest.fixture(scope='module')
def run(tmp_path_factory, tiny_lm_run):
  """A tiny byte LM with checkpoints at steps 2 and 4, evaluated in training at step 4."""
  return repo_configs.copy_run(tiny_lm_run,
                                 str(tmp_path_factory.mktemp('curves') / 'run'))


def test_a_trained_run_has_the_curve_of_its_training_evaluations(run):
  curve = curves.run_curve(run)
  assert [p['step'] for p in curve] == [4]
  with open(os.path.join(run, 'metrics.jsonl'), encoding='utf-8') as f:
    last = [json.loads(line) for line in f][-1]
  assert curve[0]['loss'] == last['valid/loss']
  assert curve[0]['loss_by_position/1'] == last['valid/loss_by_position/1']
  assert not any(k.startswith('tokens_by_position') for k in curve[0])


def test_eval_all_steps_adds_every_checkpoint_to_the_curve(run):
  out = trainer.evaluate(None, run, devices=jax.devices()[:1], all_steps=True)
  assert out['step'] == 4
  assert sorted(os.listdir(os.path.join(run, 'eval'))) == ['step_2.json', 'step_4.json']
  curve = curves.run_curve(run)
  assert [p['step'] for p in curve] == [2, 4]
  with open(os.path.join(run, 'eval', 'step_2.json'), encoding='utf-8') as f:
    step2 = json.load(f)['evals']['valid']
  assert curve[0]['loss'] == step2['loss'] and curve[0]['loss'] != curve[1]['loss']
  assert sum(v for k, v in step2.items() if k.startswith('tokens_by_position/')) == (
      step2['num_tokens'])
  # The same checkpoint evaluated again gives the training evaluation's numbers.
  with open(os.path.join(run, 'metrics.jsonl'), encoding='utf-8') as f:
    trained = [json.loads(line) for line in f][-1]['valid/loss']
  assert curve[1]['loss'] == pytest.approx(trained, rel=1e-6)
  columns = curves.columns(curve, ('run',))
  assert columns[:3] == ['run', 'step', 'loss'] and columns[-1] == 'loss_by_position/16-31'


def test_all_steps_and_a_step_are_one_or_the_other(run):
  with pytest.raises(errors.UsageError, match=r'^--step=2 and --all_steps'):
    trainer.evaluate(None, run, step=2, all_steps=True)
