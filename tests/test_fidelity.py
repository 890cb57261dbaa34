"""Fidelity to the paper's setups: the LM1B batch, weight decay by role, tensor2tensor's LM
recipe (configs/lm1b.py:...,recipe=t2t), and Google BERT's details.

New names are reached through their modules (``layers.sinusoidal_positions``), so that on
code without them each test fails on its own, with its own reason.
"""

import json
import math
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from fixed_head import accounting, errors, paper
from fixed_head.nn import attention
from fixed_head.tasks import losses
from fixed_head import nn
from fixed_head.nn import layers
from fixed_head.train import optim
from fixed_head.train import run_config, run_record
from fixed_head import tasks as tasks_lib
from fixed_head.train import trainer
from fixed_head.config import ModelConfig
from test_train import REPO, tiny_config

import repo_configs

default, lm1b = repo_configs.load('default'), repo_configs.load('lm1b')


def pure_params(config: ModelConfig):
  return nnx.to_pure_dict(nnx.state(nn.build_model(config, rngs=nnx.Rngs(0))))


def paths(tree, predicate=lambda _: True) -> set[str]:
  return {jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(tree)
          if predicate(v)}


def built_count(config: ModelConfig) -> int:
  model = nnx.eval_shape(lambda: nn.build_model(config, rngs=nnx.Rngs(0)))
  return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def parse_config(arg: str, *overrides: str) -> ml_collections.ConfigDict:
  """The config train.py would get from --config=configs/<arg> and --config.* overrides."""
  argv = ['train.py', f'--config={os.path.join(REPO, "configs", arg)}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


# --- 1. the LM1B batch --------------------------------------------------------------------


def test_resolve_turns_a_batch_in_tokens_into_rows():
  c = default.get_config()  # n = data.seq_len = 32, batch_size = 64, batch_tokens = None
  assert run_config.resolve(c).batch_size == 64
  c.batch_tokens, c.batch_size = 2048, None
  resolved = run_config.resolve(c)
  assert (resolved.batch_size, resolved.batch_tokens) == (64, 2048)
  assert c.batch_size is None  # a copy: the config itself is left as it was
  c.batch_size = 64  # both given, and they agree
  assert run_config.resolve(c).batch_size == 64


@pytest.mark.parametrize('tokens,size,message', [
    (2048, 32, r'config.batch_tokens=2048 \(= 64 rows of 32 tokens\) and '
               r'config.batch_size=32 disagree'),
    (2050, None, r'config.batch_tokens=2050 is not a whole number of rows of '
                 r'config.data.seq_len=32 tokens'),
    (16, None, r'config.batch_tokens=16 is not a whole number of rows'),
    (1e3, None, r'config.batch_tokens=1000.0: must be a positive integer'),
    (None, None, r'config.batch_size=None and config.batch_tokens=None'),
])
def test_resolve_refuses_a_batch_it_cannot_place(tokens, size, message):
  c = default.get_config()
  c.batch_tokens, c.batch_size = tokens, size
  for check in (run_config.resolve, run_config.validate):
    with pytest.raises(errors.UsageError, match=message):
      check(c)


@pytest.mark.parametrize('arg', ['fixed', 'baseline', 'fixed,h=64,recipe=t2t'])
def test_lm1b_batch_is_128_rows_of_256_tokens(arg):
  c = run_config.resolve(lm1b.get_config(arg))
  assert (c.batch_size, c.data.seq_len, c.batch_tokens) == (128, 256, 128 * 256)
  assert c.batch_tokens == 8 * 4096  # T2T's batch_size 4096 tokens, on each of 8 cores
  run_config.validate(c, num_devices=8)


@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')  # config_flags
def test_lm1b_batch_overrides_parse_and_resolve():
  def rows(*overrides):
    return run_config.resolve(parse_config('lm1b.py:fixed', *overrides)).batch_size

  assert rows() == 128
  assert rows('--config.batch_tokens=65536') == 256
  assert rows('--config.batch_tokens=None', '--config.batch_size=64') == 64
  assert rows('--config.batch_tokens=16384', '--config.batch_size=64') == 64
  with pytest.raises(errors.UsageError, match=r'config.batch_tokens=32768 \(= 128 rows of 256 '
                     r'tokens\) and config.batch_size=256 disagree'):
    rows('--config.batch_size=256')
  # The default configs give their batch in rows, as before.
  assert parse_config('default.py', '--config.batch_size=16').batch_size == 16
  assert rows('--config.batch_size=None', '--config.batch_tokens=8192') == 32


def test_lm1b_evaluates_the_whole_test_split_in_train_sized_batches():
  c = lm1b.get_config('fixed')
  assert 'num_examples' not in c.evals.valid
  assert c.evals.valid.batch_size == run_config.resolve(c).batch_size == 128


def test_a_config_saved_before_the_new_fields_still_validates():
  """eval.py --workdir on a run written before batch_tokens, label_smoothing and
  optimizer.weight_decay_mode existed: missing fields mean their defaults."""
  saved = default.get_config().to_dict()
  for section, field in ((saved, 'batch_tokens'), (saved, 'label_smoothing'),
                         (saved['optimizer'], 'weight_decay_mode')):
    section.pop(field, None)
  run_config.validate(ml_collections.ConfigDict(saved), num_devices=1)


def test_validate_returns_the_one_resolved_frozen_run_config():
  config = lm1b.get_config('fixed')
  del config.optimizer['weight_decay_mode']  # a field missing: it takes its default
  run = run_config.validate(config, num_devices=8)
  assert isinstance(run, ml_collections.FrozenConfigDict)
  assert (run.batch_size, run.batch_tokens) == (128, 32_768)  # the batch in rows
  assert run.optimizer.weight_decay_mode == 'decoupled'
  with pytest.raises(AttributeError):
    run.batch_size = 1
  assert run_config.validate(run, num_devices=8) == run  # validating it again changes nothing


def test_label_smoothing_is_an_option_of_the_lm_task():
  config = default.get_config()
  with config.unlocked():
    config.label_smoothing = 0.1
  with pytest.raises(errors.UsageError, match=r'config.label_smoothing is now '
                     r'config.task.label_smoothing: set --config.task.label_smoothing=0.1'):
    run_config.validate(config)
  # A run saved before the move reads its label smoothing where it is now.
  saved = default.get_config().to_dict()
  saved['label_smoothing'] = 0.1
  completed = run_config.complete(saved)
  assert 'label_smoothing' not in completed
  assert completed['task'] == {'name': 'lm', 'label_smoothing': 0.1}
  saved['label_smoothing'] = 0.0
  assert run_config.complete(saved)['task'] == {'name': 'lm'}
  config = default.get_config()
  config.task.label_smoothing = 1.0
  with pytest.raises(errors.UsageError, match=r'config.task.label_smoothing=1.0: must lie in'):
    run_config.validate(config)
  config = default.get_config()
  config.task = ml_collections.ConfigDict(dict(name='classification', label_smoothing=0.1))
  with pytest.raises(errors.UsageError, match=r"unknown option\(s\) \['label_smoothing'\]"):
    run_config.validate(config)


def test_the_smoothed_objective_does_not_depend_on_dropout():
  """The LM task minimises the smoothed cross entropy whatever `deterministic` says; the
  reported loss is the plain nll."""
  config = default.get_config()
  config.task.label_smoothing = 0.1
  run = run_config.validate(config)
  task = tasks_lib.build_task(run, run_config.model_config(run))
  model = task.build_model(nnx.Rngs(0))
  batch = {'tokens': jnp.arange(64, dtype=jnp.int32).reshape(2, 32) % 32}
  for deterministic in (True, False):
    stats = task.stats(model, batch, deterministic=deterministic,
                       rngs=nnx.Rngs(dropout=jax.random.key(0)))
    metrics = task.metrics(stats)
    assert float(task.objective(stats)) == pytest.approx(float(metrics['objective']))
    assert float(metrics['objective']) > float(metrics['loss'])


def test_label_smoothing_may_change_when_a_run_resumes_the_task_may_not(tmp_path):
  saved = run_record.as_dict(default.get_config())
  config = default.get_config()
  config.task.label_smoothing = 0.1
  run_record.check_resume(saved, config, str(tmp_path))  # only the objective changes
  config.task.name = 'classification'
  with pytest.raises(errors.UsageError, match=r"task.name: saved 'lm', now 'classification'"):
    run_record.check_resume(saved, config, str(tmp_path))


# --- 2. weight decay by name and role ------------------------------------------------------

TINY = dict(vocab_size=11, emb_dim=8, num_heads=2, head_size=3, num_layers=1, mlp_dim=8,
            max_len=4)
BLOCK = ["['attention']['query']['kernel']", "['attention']['key']['kernel']",
         "['attention']['value']['kernel']", "['attention']['out']['kernel']",
         "['mlp']['wi']['kernel']", "['mlp']['wo']['kernel']"]
DECAYED = {
    'lm': {*(f"['decoder']['blocks'][0]{p}" for p in BLOCK),
           "['token_embed']['embedding']", "['position_embed']['embedding']"},
    'bert': {*(f"['encoder']['encoder']['blocks'][0]{p}" for p in BLOCK),
             "['encoder']['token_embed']['embedding']",
             "['encoder']['position_embed']['embedding']",
             "['encoder']['type_embed']['embedding']", "['encoder']['pooler']['kernel']",
             "['mlm_head']['transform']['kernel']", "['nsp_head']['kernel']"},
}


@pytest.mark.parametrize('model_type', ['lm', 'bert'])
def test_weight_decay_hits_exactly_the_kernels_and_embedding_tables(model_type):
  params = pure_params(ModelConfig(model_type=model_type, **TINY))
  assert paths(optim.decay_mask(params), predicate=bool) == DECAYED[model_type]
  # Not decayed, whatever their rank: the [h, d_p] query/key/value biases, every other
  # bias (the masked-LM output bias included), and LayerNorm scales and offsets.
  kept = paths(params) - DECAYED[model_type]
  assert all(p.endswith(("['bias']", "['scale']")) for p in kept)
  assert len([p for p in kept if "['attention']['query']['bias']" in p]) == 1
  assert ("['mlm_head']['bias']" in kept) == (model_type == 'bert')


@pytest.mark.parametrize('model_type', ['lm', 'bert'])
def test_adamw_decays_exactly_those_parameters(model_type):
  """AdamW's step with zero gradients is the decay alone: -lr * weight_decay * p (biases
  start at 0, so every parameter is moved off its initial value first)."""
  params = jax.tree.map(lambda p: p + 1.0, pure_params(ModelConfig(model_type=model_type,
                                                                   **TINY)))
  opt = dict(name='adamw', learning_rate=0.1, schedule='constant', warmup_steps=0,
             weight_decay=0.5, b1=0.9, b2=0.98, eps=1e-9, grad_clip_norm=0.0)
  tx, _ = optim.make_optimizer(opt, 10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  moved = paths(updates, predicate=lambda u: bool(np.any(np.asarray(u) != 0)))
  assert moved == DECAYED[model_type]
  for (path, u), p in zip(jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(params)):
    if jax.tree_util.keystr(path) in moved:
      np.testing.assert_allclose(u, -0.1 * 0.5 * np.asarray(p), rtol=1e-6)


# --- 3. tensor2tensor's recipe --------------------------------------------------------------


def test_sinusoids_are_tensor2tensors_timing_signal():
  d, positions = 6, np.array([[0, 1, 2, 7]])
  got = np.asarray(layers.sinusoidal_positions(jnp.asarray(positions), d))
  half = d // 2
  increment = math.log(1e4) / (half - 1)
  for t in range(4):
    for i in range(half):
      angle = positions[0, t] * math.exp(-i * increment)
      assert got[0, t, i] == pytest.approx(math.sin(angle), abs=1e-6)
      assert got[0, t, half + i] == pytest.approx(math.cos(angle), abs=1e-6)


def test_t2t_model_has_no_position_table_or_attention_biases_and_scales_embeddings():
  config = ModelConfig(vocab_size=11, emb_dim=8, num_heads=2, head_size=3, num_layers=1,
                       mlp_dim=8, max_len=4, norm='pre', position_embedding='sinusoidal',
                       scale_embeddings=True, attention_use_bias=False)
  names = paths(pure_params(config))
  assert not [p for p in names if 'position_embed' in p]
  assert not [p for p in names if "['attention']" in p and p.endswith("['bias']")]
  assert [p for p in names if "['mlp']['wi']['bias']" in p]  # feed-forward keeps biases
  model = nn.build_model(config, rngs=nnx.Rngs(0))
  tokens = jnp.array([[1, 2, 3, 4]])
  x = model.token_embed(tokens) * math.sqrt(8) + layers.sinusoidal_positions(
      jnp.arange(4)[None], 8)
  expected = model.token_embed.attend(model.decoder(x, mask=attention.causal_mask(4)))
  np.testing.assert_allclose(model(tokens), expected, rtol=1e-5, atol=1e-6)


def test_t2t_config_follows_each_choice():
  c = lm1b.get_config('fixed,recipe=t2t')
  m = c.model
  assert (m.position_embedding, m.scale_embeddings, m.attention_use_bias) == (
      'sinusoidal', True, False)
  assert (m.embed_init, m.embed_init_std, m.kernel_init) == ('normal', 256 ** -0.5,
                                                             'xavier_uniform')
  assert m.mlp_dropout_rate == m.dropout_rate == m.attention_dropout_rate == 0.1
  assert (c.optimizer.name, c.optimizer.b2, c.optimizer.eps) == ('adam', 0.997, 1e-9)
  assert (c.optimizer.weight_decay_mode, c.optimizer.weight_decay) == ('l2', 0.01)
  assert (c.optimizer.schedule, c.optimizer.learning_rate) == ('rsqrt', 0.1)
  assert c.task.label_smoothing == 0.1
  run_config.validate(c, num_devices=8)
  ours = lm1b.get_config('fixed')
  assert (ours.model.position_embedding, ours.optimizer.name,
          ours.task.get('label_smoothing', 0.0)) == ('learned', 'adamw', 0.0)
  assert lm1b.get_config('baseline,d=512,recipe=t2t').model.embed_init_std == 512 ** -0.5


@pytest.mark.parametrize('arg', ['fixed,recipe=t2t', 'baseline,d=512,recipe=t2t'])
def test_t2t_parameter_count_is_the_built_models(arg):
  config = ModelConfig.from_mapping(lm1b.get_config(arg).model)
  ours = ModelConfig.from_mapping(lm1b.get_config(arg.replace('t2t', 'ours')).model)
  d, h, dp = config.emb_dim, config.num_heads, config.resolved_head_size
  parts = accounting.param_breakdown(config)
  assert parts['embeddings'] == 32_000 * d  # no position table
  assert parts['attention'] == 6 * 4 * h * dp * d  # no attention biases
  assert accounting.count_params(config) == built_count(config)
  assert accounting.count_params(ours) - accounting.count_params(config) == (
      256 * d + 6 * (3 * h * dp + d))
  # Biases and look-ups are not matmuls: the FLOPs per token are the same in both recipes.
  assert accounting.flops_per_token(config) == accounting.flops_per_token(ours)


def test_label_smoothing_is_tensor2tensors():
  log_probs = jax.nn.log_softmax(jnp.array([[0.5, -1.0, 2.0, 0.0]]))
  got = losses.smoothed_cross_entropy(log_probs, jnp.array([2]), 0.1)
  lp = np.asarray(log_probs[0], np.float64)
  expected = -(0.9 * lp[2] + 0.1 / 3 * (lp[0] + lp[1] + lp[3]))
  assert float(got[0]) == pytest.approx(expected, rel=1e-6)


def _l2_loss(params, weight_decay):
  """tensor2tensor's optimize.weight_decay term, weight_decay * sum(tf.nn.l2_loss(p)), over
  the leaves decay_mask selects: the reference the 'l2' optimizer's gradient follows."""
  decayed = [p for p, d in zip(jax.tree.leaves(params), jax.tree.leaves(optim.decay_mask(params)))
             if d]
  return 0.5 * weight_decay * sum(jnp.sum(jnp.square(p)) for p in decayed)


@pytest.mark.parametrize('clip', [0.0, 0.1])
def test_l2_mode_is_adam_on_the_gradient_of_t2ts_l2_loss(clip):
  """The 'l2' optimizer on the task's gradient = clipping and Adam on the gradient of
  (task loss + T2T's l2 term); biases, LayerNorm scales are not decayed."""
  opt = dict(name='adam', learning_rate=0.1, schedule='constant', warmup_steps=0,
             weight_decay=0.5, b1=0.9, b2=0.997, eps=1e-9, grad_clip_norm=clip,
             weight_decay_mode='l2')
  params = {'dense': {'kernel': jnp.arange(6.0).reshape(2, 3) - 2, 'bias': jnp.ones(3)},
            'norm': {'scale': jnp.full(3, 2.0)}}
  grads = jax.tree.map(lambda p: 0.1 * jnp.cos(p), params)  # a task's gradient
  tx, _ = optim.make_optimizer(opt, 10)
  reference, _ = optim.make_optimizer(dict(opt, weight_decay_mode='decoupled'), 10)
  full = jax.tree.map(jnp.add, grads, jax.grad(_l2_loss)(params, 0.5))
  state, ref_state = tx.init(params), reference.init(params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    expected, ref_state = reference.update(full, ref_state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 updates, expected)
  # In 'l2' mode the bias and scale see only the task's gradient.
  np.testing.assert_array_equal(full['dense']['bias'], grads['dense']['bias'])
  np.testing.assert_array_equal(full['norm']['scale'], grads['norm']['scale'])
  assert not np.allclose(full['dense']['kernel'], grads['dense']['kernel'])


def test_decoupled_and_plain_adam_are_unchanged_by_the_l2_mode():
  opt = dict(name='adamw', learning_rate=0.1, schedule='constant', warmup_steps=0,
             weight_decay=0.5, b1=0.9, b2=0.98, eps=1e-9, grad_clip_norm=0.0,
             weight_decay_mode='decoupled')
  params = {'dense': {'kernel': jnp.ones((2, 3))}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  for name, mode, decays in (('adamw', 'decoupled', True), ('adam', 'decoupled', False),
                             ('adamw', 'l2', True)):
    tx, _ = optim.make_optimizer(dict(opt, name=name, weight_decay_mode=mode), 10)
    updates, _ = tx.update(zeros, tx.init(params), params)
    assert bool(np.any(updates['dense']['kernel'] != 0)) == decays, (name, mode)


def test_noam_schedule_peaks_at_the_end_of_warmup_depending_on_width():
  opt = dict(learning_rate=0.1, warmup_steps=10_000, schedule='noam')
  for d in (256, 512):
    schedule = optim.make_schedule(opt, 250_000, emb_dim=d)
    peak = 0.1 * d ** -0.5 * 10_000 ** -0.5
    assert float(schedule(10_000)) == pytest.approx(peak, rel=1e-5)
    assert float(schedule(5_000)) == pytest.approx(peak / 2, rel=1e-5)
    assert float(schedule(40_000)) == pytest.approx(peak / 2, rel=1e-5)
  assert float(optim.make_schedule(opt, 250_000, emb_dim=256)(10_000)) == pytest.approx(
      6.25e-5, rel=1e-5)
  rsqrt = optim.make_schedule(dict(opt, schedule='rsqrt'), 250_000)
  assert float(rsqrt(10_000)) == pytest.approx(1e-3, rel=1e-6)


def test_noam_with_lr_1_is_tensor2tensors_legacy_noam_with_lr_0_1():
  """T2T learning_rate.legacy_learning_rate_schedule, decay scheme 'noam', Adam."""
  def t2t_legacy(step, d=256, warmup=10_000, learning_rate=0.1):
    ret = 5000.0 * d ** -0.5 * min((step + 1) * warmup ** -1.5, (step + 1) ** -0.5)
    return ret * 0.002 * learning_rate  # optimizer_correction for Adam

  ours = optim.make_schedule(dict(learning_rate=1.0, warmup_steps=10_000, schedule='noam'),
                             250_000, emb_dim=256)
  for step in (1_000, 9_999, 50_000):
    assert float(ours(step + 1)) == pytest.approx(t2t_legacy(step), rel=1e-5)
  assert t2t_legacy(9_999) == pytest.approx(6.25e-4)


def test_the_t2t_objective_trains_and_is_reported_beside_the_plain_loss(tmp_path):
  config = tiny_config(steps=3)
  config.model.update(dict(position_embedding='sinusoidal', scale_embeddings=True,
                           attention_use_bias=False, embed_init_std=16 ** -0.5))
  config.optimizer.update(dict(name='adam', b2=0.997, weight_decay=0.01,
                               weight_decay_mode='l2'))
  config.task.label_smoothing = 0.1
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with open(os.path.join(tmp_path, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  assert all(r['train/objective'] > r['train/loss'] > 0 for r in rows)
  assert 'valid/objective' not in rows[-1] and 'valid/loss' in rows[-1]


def test_new_model_fields_default_to_the_previous_model():
  c = ModelConfig()
  assert (c.position_embedding, c.scale_embeddings, c.resolved_attention_use_bias,
          c.resolved_mlp_dropout_rate, c.kernel_init, c.embed_init, c.embed_init_std) == (
              'learned', False, True, c.dropout_rate, 'xavier_uniform', 'normal', 0.02)
  for field in ('attention_use_bias', 'position_embedding'):  # they change the shapes
    assert field in run_config.SHAPE_FIELDS


# --- 4. Google BERT's details -----------------------------------------------------------------


def test_bert_has_no_dropout_after_the_feed_forward_activation():
  x = jax.random.normal(jax.random.key(0), (2, 3, 8))
  small = dict(emb_dim=8, mlp_dim=16, num_layers=1, dropout_rate=0.5)
  bert = paper.bert_config(512, 8, 128).replace(**small)
  for config, changed in ((bert, False), (ModelConfig(**small), True)):
    block = layers.MlpBlock(config, rngs=nnx.Rngs(0))
    train = block(x, deterministic=False, rngs=nnx.Rngs(dropout=jax.random.key(1)))
    assert (not np.allclose(train, block(x))) == changed


def test_bert_initialises_kernels_and_embeddings_like_tf_truncated_normal():
  config = paper.bert_config(512, 8, 128).replace(num_layers=1, vocab_size=1000, max_len=16)
  params = pure_params(config)
  block = params['encoder']['encoder']['blocks'][0]
  weights = [block['mlp']['wi']['kernel'], block['attention']['query']['kernel'],
             block['attention']['out']['kernel'], params['encoder']['pooler']['kernel'],
             params['mlm_head']['transform']['kernel'],
             params['encoder']['token_embed']['embedding'],
             params['encoder']['position_embed']['embedding']]
  for w in map(np.asarray, weights):
    assert np.abs(w).max() <= 0.04 + 1e-7  # redrawn beyond 2 std
    # TF truncates N(0, 0.02^2) at 2 std: the result has std 0.02 * 0.8796 = 0.01759.
    assert w.std() == pytest.approx(0.02 * 0.87962566, rel=0.03)
  nsp = np.asarray(params['nsp_head']['kernel'])  # 1024 weights: a looser check
  assert np.abs(nsp).max() <= 0.04 + 1e-7 and nsp.std() == pytest.approx(0.0176, rel=0.1)


def test_bert_vocabulary_is_the_released_wordpiece_one():
  assert paper.bert_config(1024, 16).vocab_size == 30_522


# Google BERT's optimization.py: create_optimizer's schedule and AdamWeightDecayOptimizer.
GOOGLE_EXCLUDE_FROM_WEIGHT_DECAY = ('LayerNorm', 'layer_norm', 'bias')


def google_learning_rate(step, init_lr, num_train_steps, num_warmup_steps):
  """create_optimizer: polynomial_decay(init_lr, step, T, 0.0, power=1.0, cycle=False),
  replaced by init_lr * step / w while step < w."""
  learning_rate = init_lr * (1.0 - min(step, num_train_steps) / num_train_steps) ** 1.0
  if num_warmup_steps and step < num_warmup_steps:
    learning_rate = init_lr * step / num_warmup_steps
  return learning_rate


def google_bert_adamw(params, grads_per_step, init_lr, num_train_steps, num_warmup_steps,
                      weight_decay_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                      clip_norm=1.0):
  """create_optimizer and AdamWeightDecayOptimizer.apply_gradients in float64, on a dict
  name -> array: the params after each step, and the global norm of each step's gradient."""
  params = {name: np.asarray(p, np.float64) for name, p in params.items()}
  m = {name: np.zeros_like(p) for name, p in params.items()}
  v = {name: np.zeros_like(p) for name, p in params.items()}
  history, norms = [], []
  for global_step, grads in enumerate(grads_per_step):
    learning_rate = google_learning_rate(global_step, init_lr, num_train_steps,
                                         num_warmup_steps)
    grads = {name: np.asarray(g, np.float64) for name, g in grads.items()}
    global_norm = math.sqrt(sum(np.sum(g ** 2) for g in grads.values()))  # clip_by_global_norm
    grads = {name: g * clip_norm / max(global_norm, clip_norm) for name, g in grads.items()}
    norms.append(global_norm)
    for name, param in params.items():
      next_m = beta_1 * m[name] + (1.0 - beta_1) * grads[name]
      next_v = beta_2 * v[name] + (1.0 - beta_2) * np.square(grads[name])
      update = next_m / (np.sqrt(next_v) + epsilon)
      if not any(re.search(r, name) for r in GOOGLE_EXCLUDE_FROM_WEIGHT_DECAY):
        update += weight_decay_rate * param
      params[name] = param - learning_rate * update
      m[name], v[name] = next_m, next_v
    history.append(dict(params))
  return history, norms


def test_bert_schedule_is_googles_polynomial_decay_overridden_by_the_warm_up():
  lr, w, total = 1e-4, 100, 1_000
  opt = dict(learning_rate=lr, warmup_steps=w)
  bert = optim.make_schedule(dict(opt, schedule='bert'), total)
  linear = optim.make_schedule(dict(opt, schedule='linear'), total)
  for s in (0, 1, 50, 99, 100, 101, 400, 999, 1_000, 1_001, 5_000):
    expected = lr * s / w if s < w else lr * (1.0 - min(s, total) / total)
    assert float(bert(s)) == pytest.approx(expected, rel=1e-6, abs=1e-6 * lr), s  # float32
    assert expected == pytest.approx(google_learning_rate(s, lr, total, w), rel=1e-12, abs=0)
  for s in (100, 101, 400, 990):  # after warm-up 'linear' decays over T - w steps
    assert float(linear(s)) / float(bert(s)) == pytest.approx(total / (total - w), rel=1e-5)
  no_warmup = optim.make_schedule(dict(opt, schedule='bert', warmup_steps=0), total)
  assert [float(no_warmup(s)) for s in (0, 500)] == pytest.approx([lr, lr / 2], rel=1e-6)


def test_bert_adamw_is_googles_adam_weight_decay_optimizer():
  """Five steps of 'bert_adamw' against a transcription of Google's update: clipped on the
  steps whose global norm exceeds 1, decay on the kernel alone, lr from 'bert'."""
  rng = np.random.default_rng(0)
  params = {'dense': {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=4)},
            'LayerNorm': {'scale': 1.0 + 0.1 * rng.normal(size=4)}}
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
  grads = []
  for size in (0.3, 3.0, 0.5, 8.0, 0.1):  # global norms: clipped on steps 1 and 3
    g = jax.tree.map(lambda p: rng.normal(size=p.shape), params)
    norm = math.sqrt(sum(np.sum(x ** 2) for x in jax.tree.leaves(g)))
    grads.append(jax.tree.map(lambda x: jnp.asarray(size / norm * x, jnp.float32), g))
  opt = dict(name='bert_adamw', learning_rate=0.1, schedule='bert', warmup_steps=2,
             weight_decay=0.1, b1=0.9, b2=0.999, eps=1e-6, grad_clip_norm=1.0)
  tx, _ = optim.make_optimizer(opt, 5)

  def named(tree):
    return {f'{scope}/{leaf}': np.asarray(value) for scope, leaves in tree.items()
            for leaf, value in leaves.items()}

  expected, norms = google_bert_adamw(named(params), [named(g) for g in grads], 0.1, 5, 2,
                                      weight_decay_rate=0.1)
  assert [n > 1.0 for n in norms] == [False, True, False, True, False]
  state, ours = tx.init(params), params
  for step, g in enumerate(grads):
    updates, state = tx.update(g, state, ours)
    ours = optax.apply_updates(ours, updates)
    got = named(ours)
    for name, value in expected[step].items():
      np.testing.assert_allclose(got[name], value, rtol=2e-5, atol=1e-6, err_msg=(step, name))
  # Its moments are parameter trees, which the trainer shards as the parameters.
  kinds = optax.tree_map_params(tx, lambda _: 'param', state, transform_non_params=lambda _: '-')
  moments = [s for s in jax.tree.leaves(
      kinds, is_leaf=lambda x: isinstance(x, optim.ScaleByBertAdamState))
             if isinstance(s, optim.ScaleByBertAdamState)]
  assert len(moments) == 1
  assert set(jax.tree.leaves(moments[0])) == {'param'}


def test_bert_adamw_skips_adams_bias_correction():
  """Step 1: optax.adamw's m_hat = g, v_hat = g^2 give g / (|g| + eps); Google's m = (1 - b1) g,
  v = (1 - b2) g^2 give (1 - b1) g / (sqrt(1 - b2) |g| + eps), (1 - b1) / sqrt(1 - b2) = 3.162
  times more where |g| >> eps."""
  b1, b2, eps, lr = 0.9, 0.999, 1e-6, 0.01
  opt = dict(learning_rate=lr, schedule='constant', warmup_steps=0, weight_decay=0.0, b1=b1,
             b2=b2, eps=eps, grad_clip_norm=0.0)
  params = {'dense': {'kernel': jnp.ones((2, 3))}}
  g = jnp.asarray([[1e-6, 1e-3, 0.5], [-2e-6, -0.1, 3.0]], jnp.float32)
  grads = {'dense': {'kernel': g}}
  steps = {}
  for name in ('bert_adamw', 'adamw'):
    tx, _ = optim.make_optimizer(dict(opt, name=name), 10)
    steps[name] = np.asarray(tx.update(grads, tx.init(params), params)[0]['dense']['kernel'],
                             np.float64)
  a = np.abs(np.asarray(g, np.float64))
  factor = (1 - b1) * (a + eps) / (math.sqrt(1 - b2) * a + eps)
  np.testing.assert_allclose(steps['bert_adamw'] / steps['adamw'], factor, rtol=1e-5)
  np.testing.assert_allclose(steps['adamw'], -lr * g / (a + eps), rtol=1e-5)
  assert factor[1, 2] == pytest.approx((1 - b1) / math.sqrt(1 - b2), rel=1e-4)  # |g| = 3
  assert (1 - b1) / math.sqrt(1 - b2) == pytest.approx(3.1623, rel=1e-4)


@pytest.mark.parametrize('scan_layers', [True, False])
def test_decay_mask_is_googles_exclusion_rule_on_a_bert_model(scan_layers):
  """Google decays a variable unless its name contains 'LayerNorm', 'layer_norm' or 'bias'.
  Our names, with each LayerNorm module called 'LayerNorm': the same leaves as decay_mask."""
  config = paper.bert_config(16, 2, 4, num_layers=2, mlp_dim=32, max_len=8, vocab_size=20,
                             scan_layers=scan_layers)
  model = nn.build_model(config, rngs=nnx.Rngs(0))
  norms = {path for path, module in nnx.iter_modules(model)
           if isinstance(module, nnx.LayerNorm)}
  assert len(norms) == (4 if scan_layers else 6)  # embeddings, 2 a block (or 2 blocks), mlm
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  mask = optim.decay_mask(params)

  def google_name(path):
    keys = tuple(getattr(k, 'key', getattr(k, 'idx', None)) for k in path)
    scopes = ['LayerNorm' if keys[:i + 1] in norms else str(key) for i, key in
              enumerate(keys[:-1])]
    return '/'.join(scopes + [str(keys[-1])])

  leaves = jax.tree_util.tree_leaves_with_path(params)
  decayed = {jax.tree_util.keystr(p): bool(d)
             for (p, _), d in zip(leaves, jax.tree.leaves(mask))}
  for path, _ in leaves:
    name = google_name(path)
    google_decays = not any(re.search(r, name) for r in GOOGLE_EXCLUDE_FROM_WEIGHT_DECAY)
    assert decayed[jax.tree_util.keystr(path)] == google_decays, name
    assert name.endswith(('kernel', 'embedding') if google_decays else ('bias', 'scale')), name
  assert sum(decayed.values()) == 6 * (1 if scan_layers else 2) + 6  # + 3 tables, 3 heads


def test_bert_adamw_refuses_l2_weight_decay():
  config = default.get_config()
  config.optimizer.update(dict(name='bert_adamw', schedule='bert', weight_decay_mode='l2'))
  with pytest.raises(errors.UsageError, match=r"^config.optimizer.weight_decay_mode='l2': "
                     r"'bert_adamw' .* set --config.optimizer.weight_decay_mode=decoupled.$"):
    run_config.validate(config)
  with pytest.raises(ValueError, match=r"weight_decay_mode='l2' must be 'decoupled'"):
    optim.make_optimizer(config.optimizer, 10)
  config.optimizer.weight_decay_mode = 'decoupled'
  run_config.validate(config)


def test_bert_adamw_trains(tmp_path):
  config = tiny_config(steps=3)
  config.optimizer.update(dict(name='bert_adamw', schedule='bert', b2=0.999, eps=1e-6))
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with open(os.path.join(tmp_path, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f if 'train/loss' in line]
  assert len(rows) == 3 and all(math.isfinite(r['train/loss']) for r in rows)



def test_a_batch_given_in_tokens_trains_and_is_saved_in_rows(tmp_path):
  config = tiny_config(steps=2)  # 16 rows of seq_len 8
  config.batch_size = None
  config.batch_tokens = 16 * 8
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with open(os.path.join(tmp_path, 'config.json'), encoding='utf-8') as f:
    saved = json.load(f)
  assert (saved['batch_size'], saved['batch_tokens']) == (16, 128)
  assert trainer.evaluate(None, str(tmp_path), devices=jax.devices()[:1])['step'] == 2
