"""fixed_head/train/optim.py: which parameters weight decay reaches, decoupled and L2 decay,
the noam and BERT schedules against tensor2tensor's and Google BERT's, and 'bert_adamw'
against Google BERT's AdamWeightDecayOptimizer."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fixed_head import errors, nn, paper
from fixed_head.config import ModelConfig
from fixed_head.train import optim, run_config

import repo_configs

default = repo_configs.load('default')


def pure_params(config: ModelConfig):
  return nnx.to_pure_dict(nnx.state(nn.build_model(config, rngs=nnx.Rngs(0))))


def paths(tree, predicate=lambda _: True) -> set[str]:
  return {jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(tree)
          if predicate(v)}


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


@pytest.mark.slow
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


@pytest.mark.slow
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
  with pytest.raises(errors.UsageError, match=r"^config.optimizer.weight_decay_mode='l2': "
                     r"'bert_adamw' .* set --config.optimizer.weight_decay_mode=decoupled.$"):
    optim.make_optimizer(config.optimizer, 10)  # the same one check
  config.optimizer.weight_decay_mode = 'decoupled'
  run_config.validate(config)
