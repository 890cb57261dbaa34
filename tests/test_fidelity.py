"""Fidelity to the paper's setups: the LM1B batch, weight decay by role, tensor2tensor's LM
recipe (configs/lm1b.py:...,recipe=t2t), and Google BERT's details."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head import attention, errors, losses, optim, paper, run_config, trainer
from fixed_head.config import ModelConfig
from fixed_head.models import MlpBlock, build_model, sinusoidal_positions
from test_train import tiny_config

from configs import lm1b  # noqa: E402  (test_train puts the repository on sys.path)


def pure_params(config: ModelConfig):
  return nnx.to_pure_dict(nnx.state(build_model(config, rngs=nnx.Rngs(0))))


def paths(tree, predicate=lambda _: True) -> set[str]:
  return {jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(tree)
          if predicate(v)}


# --- 1. the LM1B batch --------------------------------------------------------------------


@pytest.mark.parametrize('arg', ['fixed', 'baseline', 'fixed,h=64,recipe=t2t'])
def test_lm1b_batch_is_128_rows_of_256_tokens(arg):
  c = lm1b.get_config(arg)
  assert (c.batch_size, c.data.seq_len, c.batch_tokens) == (128, 256, 32_768)
  run_config.validate(c)
  c.batch_size = 256  # one changed without the other
  with pytest.raises(errors.UsageError, match=r'batch_tokens=32768 \(= 128 rows of 256 '
                     r'tokens\) and config.batch_size=256 disagree'):
    run_config.validate(c)
  c.batch_tokens = None  # the batch in rows alone
  run_config.validate(c)


def test_lm1b_evaluates_the_whole_test_split():
  assert 'num_examples' not in lm1b.get_config('fixed').evals.valid


# --- 2. weight decay by name and role ------------------------------------------------------


@pytest.mark.parametrize('model_type', ['lm', 'bert'])
def test_weight_decay_hits_kernels_and_embeddings_only(model_type):
  params = pure_params(ModelConfig(model_type=model_type, vocab_size=11, emb_dim=8,
                                   num_heads=2, head_size=3, num_layers=1, mlp_dim=8,
                                   max_len=4))
  mask = optim.decay_mask(params)
  decayed = paths(mask, predicate=bool)
  assert decayed == {p for p in paths(params) if p.endswith(("['kernel']", "['embedding']"))}
  qkv_biases = {p for p in paths(params) if "['query']['bias']" in p or "['key']['bias']" in p}
  assert qkv_biases and not qkv_biases & decayed  # [h, d_p] biases: rank 2, never decayed
  assert not {p for p in decayed if p.endswith(("['scale']", "['bias']"))}


def test_decoupled_weight_decay_leaves_biases_alone():
  params = {'dense': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones((2, 3))}}
  tx, _ = optim.make_optimizer(dict(name='adamw', learning_rate=0.1, schedule='constant',
                                    warmup_steps=0, weight_decay=0.5, b1=0.9, b2=0.98,
                                    eps=1e-9, grad_clip_norm=0.0), 10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['dense']['kernel'], -0.1 * 0.5)
  np.testing.assert_array_equal(updates['dense']['bias'], 0.0)


# --- 3. tensor2tensor's recipe --------------------------------------------------------------


def test_sinusoids_are_tensor2tensors_timing_signal():
  d, positions = 6, np.array([[0, 1, 2, 7]])
  got = np.asarray(sinusoidal_positions(jnp.asarray(positions), d))
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
  params = pure_params(config)
  names = paths(params)
  assert not [p for p in names if 'position_embed' in p]
  assert not [p for p in names if "['attention']" in p and p.endswith("['bias']")]
  assert [p for p in names if "['mlp']['wi']['bias']" in p]  # feed-forward keeps biases
  model = build_model(config, rngs=nnx.Rngs(0))
  tokens = jnp.array([[1, 2, 3, 4]])
  x = model.token_embed(tokens) * math.sqrt(8) + sinusoidal_positions(
      jnp.arange(4)[None], 8)
  expected = model.token_embed.attend(model.decoder(x, mask=attention.causal_mask(4)))
  np.testing.assert_allclose(model(tokens), expected, rtol=1e-5, atol=1e-6)


def test_t2t_config_follows_each_choice():
  c = lm1b.get_config('fixed,recipe=t2t')
  m = c.model
  assert (m.position_embedding, m.scale_embeddings, m.attention_use_bias) == (
      'sinusoidal', True, False)
  assert m.embed_init_std == pytest.approx(256 ** -0.5)
  assert (c.optimizer.name, c.optimizer.b2, c.optimizer.eps) == ('adam', 0.997, 1e-9)
  assert (c.optimizer.weight_decay_mode, c.optimizer.weight_decay) == ('l2', 0.01)
  assert c.label_smoothing == 0.1
  ours = lm1b.get_config('fixed')
  assert (ours.model.position_embedding, ours.optimizer.name, ours.label_smoothing) == (
      'learned', 'adamw', 0.0)


def test_label_smoothing_is_tensor2tensors():
  log_probs = jax.nn.log_softmax(jnp.array([[0.5, -1.0, 2.0, 0.0]]))
  got = losses.smoothed_cross_entropy(log_probs, jnp.array([2]), 0.1)
  lp = np.asarray(log_probs[0], np.float64)
  expected = -(0.9 * lp[2] + 0.1 / 3 * (lp[0] + lp[1] + lp[3]))
  assert float(got[0]) == pytest.approx(expected, rel=1e-6)


def test_l2_penalty_is_half_the_decayed_sum_of_squares():
  params = {'a': {'kernel': jnp.full((2, 2), 3.0), 'bias': jnp.full((2, 2), 5.0)},
            'norm': {'scale': jnp.ones(4)}, 'embed': {'embedding': jnp.ones((3, 2))}}
  assert float(optim.l2_penalty(params, 0.01)) == pytest.approx(0.5 * 0.01 * (4 * 9 + 6))


def test_noam_schedule_peaks_at_the_end_of_warmup_depending_on_width():
  opt = dict(learning_rate=0.1, warmup_steps=10_000, schedule='noam')
  for d in (256, 512):
    schedule = optim.make_schedule(opt, 250_000, emb_dim=d)
    peak = 0.1 * d ** -0.5 * 10_000 ** -0.5
    assert float(schedule(10_000)) == pytest.approx(peak, rel=1e-5)
    assert float(schedule(5_000)) == pytest.approx(peak / 2, rel=1e-5)
    assert float(schedule(40_000)) == pytest.approx(peak / 2, rel=1e-5)
  rsqrt = optim.make_schedule(dict(opt, schedule='rsqrt'), 250_000)
  assert float(rsqrt(10_000)) == pytest.approx(1e-3, rel=1e-6)


def test_the_t2t_objective_trains_and_is_reported_beside_the_plain_loss(tmp_path):
  config = tiny_config(steps=3)
  config.model.update(dict(position_embedding='sinusoidal', scale_embeddings=True,
                           attention_use_bias=False, embed_init_std=16 ** -0.5))
  config.optimizer.update(dict(name='adam', b2=0.997, weight_decay=0.01,
                               weight_decay_mode='l2'))
  config.label_smoothing = 0.1
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with open(os.path.join(tmp_path, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  assert all(r['train/objective'] > r['train/loss'] > 0 for r in rows)
  assert 'valid/objective' not in rows[-1] and 'valid/loss' in rows[-1]


# --- 4. Google BERT's details -----------------------------------------------------------------


def test_bert_has_no_dropout_after_the_feed_forward_activation():
  x = jax.random.normal(jax.random.key(0), (2, 3, 8))
  rngs = lambda: nnx.Rngs(dropout=jax.random.key(1))  # noqa: E731
  for config, changed in ((paper.bert_config(512, 8, 128).replace(
      emb_dim=8, mlp_dim=16, num_layers=1, dropout_rate=0.5), False),
                          (ModelConfig(emb_dim=8, mlp_dim=16, dropout_rate=0.5), True)):
    block = MlpBlock(config, rngs=nnx.Rngs(0))
    train = block(x, deterministic=False, rngs=rngs())
    assert (not np.allclose(train, block(x))) == changed


def test_bert_initialises_kernels_and_embeddings_like_tf_truncated_normal():
  config = paper.bert_config(512, 8, 128).replace(num_layers=1, vocab_size=1000, max_len=16)
  params = pure_params(config)
  kernel = np.asarray(params['encoder']['encoder']['blocks'][0]['mlp']['wi']['kernel'])
  table = np.asarray(params['encoder']['token_embed']['embedding'])
  for w in (kernel, table):
    assert np.abs(w).max() <= 0.04 + 1e-7  # redrawn beyond 2 std
    # TF truncates N(0, 0.02^2) at 2 std: the result has std 0.02 * 0.8796 = 0.01759.
    assert w.std() == pytest.approx(0.02 * 0.87962566, rel=0.01)


def test_bert_vocabulary_is_the_released_wordpiece_one():
  assert paper.bert_config(1024, 16).vocab_size == 30_522
