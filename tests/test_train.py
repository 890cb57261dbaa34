"""The training and evaluation entry points on the embedded synthetic language."""

import copy
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from fixed_head.train import checkpoints
from fixed_head.train import run_config
from fixed_head.train import sharding
from fixed_head.train import trainer
from fixed_head import data as data_lib
from fixed_head import files
from fixed_head.errors import UsageError

import cli
import repo_configs

REPO = repo_configs.REPO
default_config = repo_configs.load('default')


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
  """train/loss of every logged step, from metrics.jsonl (a local or gs:// workdir)."""
  rows = files.read_text(files.join(workdir, 'metrics.jsonl')).splitlines()
  return [r['train/loss'] for r in map(json.loads, rows) if 'train/loss' in r]


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


@pytest.mark.slow
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
# The baseline on every mesh; the fixed head size where it changes what is split: 'embed'
# over fsdp (d = 20 stays whole), heads over tensor, and all three axes at once.
SHARDED_RUNS = ([('baseline', mesh) for mesh in MESHES]
                + [('fixed_h_not_dividing_d', mesh) for mesh in ((1, 8, 1), (1, 1, 8), (2, 2, 2))])
# Every step's loss on a mesh agrees with one device to a few float32 ulps (measured: at
# most 2 ulps, 2.3e-7 relative, over the 6 steps on a 2-core x86 CPU).
LOSS_RTOL = 1e-6


def variant_config(variant, steps=6, mesh=(1, 1, 1)):
  config = tiny_config(steps=steps, **VARIANTS[variant])
  config.mesh.update(dict(zip(('data', 'fsdp', 'tensor'), mesh)))
  return config


def train_steps(config, devices=None):
  """(every step's loss, final state) from the trainer's compiled step, called the way
  train_and_evaluate calls it (without its checkpoints and evaluations)."""
  setup = trainer.build_setup(config, devices)
  state = trainer.init_state(setup)
  batches = data_lib.train_iterator(data_lib.build_source(config.data, 'train'),
                                    config.batch_size)
  train_step, curve = None, []
  for _ in range(config.num_train_steps):
    local = next(batches)
    train_step = train_step or trainer.make_train_step(setup, local)
    state, metrics = train_step(state, setup.put_batch(local))
    curve.append(float(metrics['loss']))
  return curve, state


@pytest.fixture(scope='module')
def one_device():
  """{variant: (every step's loss, final parameters as NumPy)} on one device."""
  runs = {}
  for variant in VARIANTS:
    curve, state = train_steps(variant_config(variant), jax.devices()[:1])
    runs[variant] = curve, jax.tree.map(np.asarray, state['params'])
  return runs


def assert_same_params(got, expected):
  """Equal up to the rounding of another summation order, except the key bias: it adds a
  constant to each query's scores, which the softmax removes, so its exact gradient is zero
  and Adam turns the rounding noise into lr-sized steps."""
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(got)):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" not in name:
      np.testing.assert_allclose(np.asarray(b), a, rtol=2e-4, atol=2e-5, err_msg=name)


def split(size, ways):
  """What one device holds of a dimension the rules split ``ways`` ways, if it divides."""
  return size // ways if size % ways == 0 else size


@pytest.mark.slow
@pytest.mark.parametrize('variant, mesh', SHARDED_RUNS,
                         ids=[f'{v}-{"x".join(map(str, m))}' for v, m in SHARDED_RUNS])
def test_sharded_training_matches_one_device(one_device, variant, mesh):
  config = variant_config(variant, mesh=mesh)
  curve, state = train_steps(config)

  # The mesh really splits the model (else the equality below would prove little): 'embed'
  # over fsdp where d divides, heads, feed-forward and vocabulary over tensor.
  _, fsdp, tensor = mesh
  m = config.model
  d, h, d_p = m.emb_dim, m.num_heads, m.head_size or m.emb_dim // m.num_heads
  block = state['params']['decoder']['blocks'][0]
  mu = state['opt_state'][1][0].mu['decoder']['blocks'][0]
  expected = {
      'query': (block['attention']['query']['kernel'], (split(d, fsdp), h // tensor, d_p)),
      'query mu': (mu['attention']['query']['kernel'], (split(d, fsdp), h // tensor, d_p)),
      'out': (block['attention']['out']['kernel'], (h // tensor, d_p, split(d, fsdp))),
      'mlp': (block['mlp']['wi']['kernel'], (split(d, fsdp), m.mlp_dim // tensor)),
      'vocab': (state['params']['token_embed']['embedding'],
                (m.vocab_size // tensor, split(d, fsdp))),
      'norm': (block['mlp_norm']['scale'], (d,)),
  }
  for name, (array, shape) in expected.items():
    assert {s.data.shape for s in array.addressable_shards} == {shape}, name
  if d % fsdp:  # d = 20 over fsdp = 8: replicated, not an error
    assert block['attention']['query']['kernel'].sharding.spec[0] is None

  expected_curve, expected_params = one_device[variant]
  np.testing.assert_allclose(curve, expected_curve, rtol=LOSS_RTOL)  # every step
  assert_same_params(jax.device_get(state['params']), expected_params)


@pytest.mark.slow
@pytest.mark.parametrize('first,then', [((2, 2, 2), (8, 1, 1)), ((1, 1, 8), (1, 1, 1)),
                                        ((1, 1, 1), (1, 8, 1))])
def test_a_checkpoint_continues_on_another_mesh(tmp_path, one_device, first, then):
  """Steps 1-3 on one mesh, 4-6 on another: the losses of an uninterrupted run."""
  variant = 'fixed_h_not_dividing_d'
  devices = lambda mesh: jax.devices()[:int(np.prod(mesh))]
  trainer.train_and_evaluate(variant_config(variant, mesh=first), str(tmp_path),
                             devices=devices(first), stop_after=3)

  # The checkpoint lands on the new mesh, in its shardings, with exactly the same values.
  setup = trainer.build_setup(variant_config(variant, mesh=then), devices(then))
  manager = checkpoints.make_manager(str(tmp_path), async_save=False, read_only=True)
  restored = checkpoints.restore_params(manager, 3, setup.abstract_state['params'])
  manager.close()
  for array, expected in zip(jax.tree.leaves(restored),
                             jax.tree.leaves(setup.state_shardings['params'])):
    assert array.sharding == expected
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
               final_params(tmp_path, variant_config(variant)))

  trainer.train_and_evaluate(variant_config(variant, mesh=then), str(tmp_path),
                             devices=devices(then))
  expected_curve, expected_params = one_device[variant]
  np.testing.assert_allclose(losses(tmp_path), expected_curve, rtol=LOSS_RTOL)
  assert_same_params(final_params(tmp_path, variant_config(variant)), expected_params)


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


@pytest.mark.parametrize('mesh,processes,fed', [
    ((4, 1, 1), [0, 0, 1, 1], True), ((1, 2, 2), [0, 0, 1, 1], True),
    ((1, 1, 4), [0, 0, 1, 1], False),  # every device needs the whole batch
    ((2, 1, 2), [0, 1, 0, 1], False),  # devices of one slice in two processes
    ((1, 1, 8), [0] * 8, True)])
def test_each_batch_slice_is_fed_by_one_process(mesh, processes, fed):
  grid = np.asarray(processes).reshape(mesh)
  if fed:
    sharding.check_batch_feed(grid)
  else:
    with pytest.raises(ValueError, match=r'config.mesh \(data=.*over 2 processes.*multiple of 2'):
      sharding.check_batch_feed(grid)


@pytest.mark.slow
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


@pytest.mark.slow
def test_incompatible_workdir_is_refused(tmp_path):
  trainer.train_and_evaluate(tiny_config(steps=2), str(tmp_path), devices=jax.devices()[:1])
  with pytest.raises(ValueError, match=r'incompatible.*model.num_heads: saved 4, now 2'):
    trainer.train_and_evaluate(tiny_config(steps=4, num_heads=2), str(tmp_path),
                               devices=jax.devices()[:1])


def test_eval_without_checkpoint_is_an_error(tmp_path):
  with pytest.raises(UsageError, match='no checkpoint in'):
    trainer.evaluate(tiny_config(), str(tmp_path), devices=jax.devices()[:1])


def test_eval_of_a_missing_workdir_or_a_file_says_which(tmp_path):
  missing, a_file = str(tmp_path / 'never_trained'), tmp_path / 'notes.txt'
  a_file.write_text('x')
  for config in (None, tiny_config()):  # with or without --config: no dead end to follow
    with pytest.raises(UsageError, match=rf'^--workdir={missing} does not exist: train a run '
                       rf'there first \(python train.py --config=\.\.\. --workdir={missing}\)'):
      trainer.evaluate(config, missing, devices=jax.devices()[:1])
    with pytest.raises(UsageError, match=rf'^--workdir={a_file} is a file, not the workdir'):
      trainer.evaluate(config, str(a_file), devices=jax.devices()[:1])
  assert not os.path.exists(missing) and a_file.read_text() == 'x'


def _unlinked(c):
  """``c`` with model.max_len and model.vocab_size set on their own, not read from the data
  (as the repository's LM configs do): a config that can set them apart."""
  c.model = ml_collections.ConfigDict(c.model.to_dict())
  return c


def test_the_lm_configs_set_the_vocabulary_and_length_once():
  c = tiny_config()
  c.data.update(dict(seq_len=12, vocab_size=10))
  assert (c.model.max_len, c.model.vocab_size) == (12, 10)
  c.model.vocab_size = 9  # either side: one value
  assert c.data.vocab_size == 9


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
    (lambda c: _unlinked(c).data.update(dict(seq_len=9)), r'config.data.seq_len=9 exceeds'),
    (lambda c: c.data.update(dict(memory_len=8)), r'memory_len=8: must be an integer in'),
    (lambda c: c.data.update(dict(copies=3)), r"data options for data.name='synthetic'.*copies"),
    (lambda c: c.update(dict(dropout_rng_impl='philox')), r"config.dropout_rng_impl='philox'"),
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


@pytest.mark.slow
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
  saved = _run('eval.py', f'--workdir={workdir}')  # the run's config.json, no --config
  assert saved.returncode == 0, saved.stderr
  assert saved.stdout.splitlines()[0] == evaluation.stdout.splitlines()[0]
  bad = cli.run('train.py', '--config=configs/default.py', f'--workdir={workdir}x',
                '--config.model.num_heads=7', '--config.model.head_size=None')  # in process
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith('error: model.num_heads=7 does not')
  assert 'Traceback' not in bad.stderr


@pytest.mark.slow
def test_profile_steps_traces_and_changes_nothing(tmp_path):
  """config.profile_steps: a jax.profiler trace of steps 2..3 in WORKDIR/profile, and the
  same losses and parameters as a run without it."""
  config = tiny_config(steps=4)
  trainer.train_and_evaluate(config, str(tmp_path / 'plain'), devices=jax.devices()[:1])
  profiled = copy.deepcopy(config)
  profiled.profile_steps = 2
  trainer.train_and_evaluate(profiled, str(tmp_path / 'traced'), devices=jax.devices()[:1])
  traces = list((tmp_path / 'traced' / 'profile').rglob('*.xplane.pb'))
  assert len(traces) == 1
  assert losses(tmp_path / 'plain') == losses(tmp_path / 'traced')
  jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / 'plain', config),
               final_params(tmp_path / 'traced', config))
  bad = copy.deepcopy(config)
  bad.profile_steps = -1
  with pytest.raises(UsageError, match=r'config.profile_steps=-1: must be an integer >= 0'):
    trainer.train_and_evaluate(bad, str(tmp_path / 'bad'), devices=jax.devices()[:1])
  assert not (tmp_path / 'bad').exists()


@pytest.mark.slow
def test_fsdp_keeps_each_devices_rows():
  """With the parameters split over 'fsdp', each device still computes only its own rows:
  the compiled step needs the temporaries of data parallelism, not those of the whole
  batch. (Without the models' activation constraints, XLA follows the parameters' split into
  the scanned blocks' activations: 4.6x the temporaries here, 19x for BERT-large on a
  128-chip TPU slice.)"""
  temporaries = {}
  for mesh in ((8, 1, 1), (1, 8, 1)):
    config = tiny_config(emb_dim=32, num_heads=4, head_size=16, num_layers=2, mlp_dim=64,
                         scan_layers=True)
    config.batch_size = 64
    config.mesh.update(dict(zip(('data', 'fsdp', 'tensor'), mesh)))
    compiled, _ = trainer.compile_train_step(trainer.build_setup(config))
    temporaries[mesh] = compiled.memory_analysis().temp_size_in_bytes
  assert temporaries[(1, 8, 1)] < 1.2 * temporaries[(8, 1, 1)], temporaries


@pytest.mark.slow
def test_dropout_rng_impl_resumes_exactly_and_only_changes_the_masks(tmp_path):
  """config.dropout_rng_impl='unsafe_rbg' (MaxText's): a run repeats itself and resumes
  exactly, from the initialisation threefry2x32 gives, with other dropout masks."""
  config = tiny_config(steps=6)
  config.dropout_rng_impl = 'unsafe_rbg'
  one = jax.devices()[:1]
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'), devices=one)
  config.checkpoint.every_steps = 100  # only the interruption itself leaves a checkpoint
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), devices=one, stop_after=3)
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'), devices=one)
  assert losses(tmp_path / 'resumed') == losses(tmp_path / 'straight')
  jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / 'resumed', config),
               final_params(tmp_path / 'straight', config))

  first_losses, initial = {}, {}
  for impl in run_config.DROPOUT_RNG_IMPLS:
    config = tiny_config(steps=1)
    config.dropout_rng_impl = impl
    setup = trainer.build_setup(config, one)
    initial[impl] = jax.tree.map(np.asarray, trainer.init_state(setup)['params'])
    first_losses[impl] = train_steps(config, one)[0][0]
  for impl in ('rbg', 'unsafe_rbg'):
    jax.tree.map(np.testing.assert_array_equal, initial[impl], initial['threefry2x32'])
  assert len(set(first_losses.values())) == 3, first_losses  # three sets of masks
