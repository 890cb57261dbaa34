"""fixed_head/nn/layers.py: tensor2tensor's sinusoidal positions, and BERT's feed-forward block
(no dropout after its activation) and truncated-normal initialisation, as Google's."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head import paper
from fixed_head.config import ModelConfig
from fixed_head.nn import layers

from test_optim import pure_params


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


def test_bert_has_no_dropout_after_the_feed_forward_activation():
  x = jax.random.normal(jax.random.key(0), (2, 3, 8))
  small = dict(emb_dim=8, mlp_dim=16, num_layers=1, dropout_rate=0.5)
  bert = paper.bert_config(512, 8, 128).replace(**small)
  for config, changed in ((bert, False), (ModelConfig(**small), True)):
    block = layers.MlpBlock(config, rngs=nnx.Rngs(0))
    train = block(x, deterministic=False, rngs=nnx.Rngs(dropout=jax.random.key(1)))
    assert (not np.allclose(train, block(x))) == changed


@pytest.mark.slow
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
