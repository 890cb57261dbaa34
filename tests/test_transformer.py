"""fixed_head/nn/transformer.py: the LM in tensor2tensor's recipe has no position table and no
attention biases, and adds sinusoids to embeddings scaled by sqrt(d)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head import nn
from fixed_head.config import ModelConfig
from fixed_head.nn import layers, masks

from test_optim import paths, pure_params


@pytest.mark.slow
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
  expected = model.token_embed.attend(model.decoder(x, mask=masks.causal_mask(4)))
  np.testing.assert_allclose(model(tokens), expected, rtol=1e-5, atol=1e-6)
