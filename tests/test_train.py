"""The training and evaluation entry points on the embedded synthetic language."""

import copy
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from fixed_head import checkpoints, run_config, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import default as default_config  # noqa: E402  pylint: disable=g-import-not-at-top


def tiny_config(steps=8, **model):
  c = default_config.get_config()
  c.num_train_steps = steps
  c.batch_size = 16
  c.data.update(dict(seq_len=8, memory_len=4, support=2, vocab_size=8))
  c.model.vocab_size = 8
  c.model.max_len = 8
  c.model.update(dict(emb_dim=16, num_heads=4, head_size=6, num_layers=1, mlp_dim=32,
                      dropout_rate=0.1, attention_dropout_rate=0.1))
  c.model.update(model)
  c.optimizer.warmup_steps = 2
  c.optimizer.learning_rate = 1e-2
  c.log_every_steps = 1
  c.eval_every_steps = 0
  c.checkpoint.every_steps = 4
  c.evals.valid = dict(type='lm', split='eval', num_examples=32, batch_size=16)
  return c


def losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r['train/loss'] for r in map(json.loads, f) if 'train/loss' in r]


def final_params(workdir, config):
  """The last checkpoint's parameters, restored onto one device whatever mesh wrote them."""
  config = copy.deepcopy(config)
  config.mesh.update(dict(data=-1, fsdp=1, tensor=1))
  setup = trainer.build_setup(config, jax.devices()[:1])
  manager = checkpoints.make_manager(workdir, async_save=False)
  params = checkpoints.restore_params(manager, manager.latest_step(),
                                      setup.abstract_state['params'])
  manager.close()
  return jax.tree.map(np.asarray, params)


def test_training_learns_and_eval_writes_json(tmp_path):
  config = tiny_config(steps=100)
  config.model.update(dict(dropout_rate=0.0, attention_dropout_rate=0.0))
  result = trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  curve = losses(tmp_path)
  assert len(curve) == 100
  assert np.mean(curve[-10:]) < np.mean(curve[:5]) - 0.1  # nats; it starts near log 8
  valid = result['evals']['valid']
  assert valid['gap_to_optimal'] == pytest.approx(valid['loss'] - valid['optimal_loss'])
  assert 0 < valid['optimal_loss'] < valid['loss'] < np.log(8) - 0.15

  evaluated = trainer.evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with open(tmp_path / 'eval' / 'step_100.json') as f:
    written = json.load(f)
  assert written['step'] == 100 == evaluated['step']
  assert written['evals']['valid']['loss'] == pytest.approx(valid['loss'], rel=1e-6)
  assert all(np.isfinite(v) for v in written['evals']['valid'].values())
  assert json.load(open(tmp_path / 'config.json'))['model']['head_size'] == 6
  assert os.listdir(tmp_path / 'tensorboard')


# Both kinds of model on 8 devices: the baseline (d_p = d / h) and a fixed head size with a
# head count that does not divide the width (8 heads, d = 20: 'embed' cannot be split 8 ways,
# so the rules leave it replicated while the heads shard).
VARIANTS = {'baseline': dict(emb_dim=16, num_heads=8, head_size=None),
            'fixed_h_not_dividing_d': dict(emb_dim=20, num_heads=8, head_size=6)}
MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 1, 8), (1, 2, 4)]


def variant_config(variant, steps=6, mesh=(1, 1, 1)):
  config = tiny_config(steps=steps, **VARIANTS[variant])
  config.mesh.update(dict(zip(('data', 'fsdp', 'tensor'), mesh)))
  return config


@pytest.fixture(scope='module')
def one_device_runs(tmp_path_factory):
  """{variant: workdir} of each variant trained on one device."""
  runs = {}
  for variant in VARIANTS:
    runs[variant] = tmp_path_factory.mktemp(variant)
    trainer.train_and_evaluate(variant_config(variant), str(runs[variant]),
                               devices=jax.devices()[:1])
  return runs


def assert_same_params(a, b):
  # The key bias adds a constant to each query's scores, which the softmax removes: its
  # exact gradient is zero, and Adam turns the rounding noise into lr-sized steps.
  for tree in (a, b):
    del tree['decoder']['blocks'][0]['attention']['key']['bias']
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5), a, b)


@pytest.mark.parametrize('mesh', MESHES)
@pytest.mark.parametrize('variant', list(VARIANTS))
def test_sharded_training_matches_one_device(tmp_path, one_device_runs, variant, mesh):
  config = variant_config(variant, mesh=mesh)
  specs = trainer.build_setup(config).state_shardings['params']
  query = specs['decoder']['blocks'][0]['attention']['query']['kernel'].spec  # [d, h, d_p]
  assert query[1] == 'tensor'  # the heads are split over 'tensor' (size 1 or more)
  assert query[0] == ('fsdp' if config.model.emb_dim % mesh[1] == 0 else None)
  trainer.train_and_evaluate(config, str(tmp_path))
  one = one_device_runs[variant]
  np.testing.assert_allclose(losses(tmp_path), losses(one), rtol=2e-5)  # every step
  assert_same_params(final_params(tmp_path, config), final_params(one, config))


@pytest.mark.parametrize('first,then', [((2, 2, 2), (8, 1, 1)), ((1, 1, 8), (1, 1, 1)),
                                        ((1, 1, 1), (1, 8, 1))])
def test_a_checkpoint_continues_on_another_mesh(tmp_path, one_device_runs, first, then):
  """Steps 1-3 on one mesh, 4-6 on another: the losses of an uninterrupted run."""
  variant = 'fixed_h_not_dividing_d'
  devices = lambda mesh: jax.devices()[:int(np.prod(mesh))]
  trainer.train_and_evaluate(variant_config(variant, mesh=first), str(tmp_path),
                             devices=devices(first), stop_after=3)
  trainer.train_and_evaluate(variant_config(variant, mesh=then), str(tmp_path),
                             devices=devices(then))
  one = one_device_runs[variant]
  np.testing.assert_allclose(losses(tmp_path), losses(one), rtol=2e-5)
  config = variant_config(variant)
  assert_same_params(final_params(tmp_path, config), final_params(one, config))


def test_parameters_are_sharded_as_the_rules_say():
  config = tiny_config(num_heads=4, head_size=6, emb_dim=16, mlp_dim=32)
  config.mesh.update(dict(data=1, fsdp=2, tensor=4))
  setup = trainer.build_setup(config)
  state = trainer.init_state(setup)
  query = state['params']['decoder']['blocks'][0]['attention']['query']['kernel']
  assert query.sharding.spec == P('fsdp', 'tensor', None)
  assert query.addressable_shards[0].data.shape == (16 // 2, 4 // 4, 6)
  wi = state['params']['decoder']['blocks'][0]['mlp']['wi']['kernel']
  assert wi.sharding.spec == P('fsdp', 'tensor')
  mu = state['opt_state'][1][0].mu['decoder']['blocks'][0]['attention']['query']['kernel']
  assert mu.sharding.spec == P('fsdp', 'tensor', None)  # optimizer state follows its param


def test_resume_matches_uninterrupted_run(tmp_path):
  config = tiny_config(steps=8)
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'), devices=jax.devices()[:1])
  config.checkpoint.every_steps = 100  # only the interruption itself leaves a checkpoint
  first = trainer.train_and_evaluate(config, str(tmp_path / 'resumed'),
                                     devices=jax.devices()[:1], stop_after=3)
  assert first['step'] == 3
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), devices=jax.devices()[:1])
  assert losses(tmp_path / 'resumed') == losses(tmp_path / 'straight')
  jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / 'resumed', config),
               final_params(tmp_path / 'straight', config))


def test_incompatible_workdir_is_refused(tmp_path):
  trainer.train_and_evaluate(tiny_config(steps=2), str(tmp_path), devices=jax.devices()[:1])
  with pytest.raises(ValueError, match=r'incompatible.*model.num_heads: saved 4, now 2'):
    trainer.train_and_evaluate(tiny_config(steps=4, num_heads=2), str(tmp_path),
                               devices=jax.devices()[:1])


def test_eval_without_checkpoint_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint in'):
    trainer.evaluate(tiny_config(), str(tmp_path), devices=jax.devices()[:1])


@pytest.mark.parametrize('change,message', [
    (lambda c: c.model.update(dict(emb_dim=-4)), r'model.emb_dim=-4: must be a positive'),
    (lambda c: c.model.update(dict(num_heads=3, head_size=None)),
     r'model.num_heads=3 does not divide model.emb_dim=16'),
    (lambda c: c.update(dict(batch_size=12)),
     r'config.batch_size=12 is not divisible by the data-parallel size data x fsdp = 8'),
    (lambda c: c.mesh.update(dict(data=1, tensor=8)),
     r'config.model.num_heads=4 is not divisible by the tensor-parallel size mesh.tensor=8'),
    (lambda c: c.mesh.update(dict(data=3)), r'config.mesh: data x fsdp x tensor = 3 x 1 x 1'),
    (lambda c: c.optimizer.update(dict(schedule='warmup')), r"optimizer.schedule='warmup'"),
    (lambda c: c.update(dict(num_train_steps=0)), r'config.num_train_steps=0'),
    (lambda c: c.evals.update(dict(x=dict(type='bleu'))), r"config.evals.x.type='bleu'"),
    (lambda c: c.data.update(dict(name='c4')), r"config.data.name='c4'"),
    (lambda c: c.data.update(dict(seq_len=9)), r'config.data.seq_len=9 exceeds'),
    (lambda c: c.data.update(dict(memory_len=8)), r'memory_len=8: must be an integer in'),
    (lambda c: c.data.update(dict(copies=3)), r"data options for data.name='synthetic'.*copies"),
])
def test_invalid_configs_fail_naming_the_field(change, message, tmp_path):
  config = tiny_config()
  change(config)
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')  # refused before anything was written


def test_unknown_config_fields_are_refused():
  config = tiny_config()
  config.lock()
  with config.unlocked():
    config.num_train_step = 3
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['num_train_step'\]"):
    run_config.validate(config)
  config = tiny_config()
  with config.unlocked():
    config.model.num_head = 3
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['model.num_head'\]"):
    run_config.validate(config)


def _run(script, *args):
  return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_command_lines(tmp_path):
  workdir = str(tmp_path / 'run')
  overrides = ['--config=configs/default.py:baseline', f'--workdir={workdir}',
               '--config.num_train_steps=20', '--config.log_every_steps=10',
               '--config.model.num_layers=1']
  train = _run('train.py', *overrides)
  assert train.returncode == 0, train.stderr
  assert 'step 20/20' in train.stdout and 'steps/s' in train.stdout
  assert 'd_p=8 (baseline d/h)' in train.stdout
  evaluation = _run('eval.py', *overrides)
  assert evaluation.returncode == 0, evaluation.stderr
  assert 'gap_to_optimal' in evaluation.stdout
  assert os.path.exists(os.path.join(workdir, 'eval', 'step_20.json'))
  bad = _run('train.py', '--config=configs/default.py', f'--workdir={workdir}x',
             '--config.model.num_heads=7', '--config.model.head_size=None')
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith('error: model.num_heads=7 does not')
  assert 'Traceback' not in bad.stderr
