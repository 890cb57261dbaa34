"""Float64 NumPy stand-ins for the tests that check a recomputed forward pass
(test_analyze, test_logit_rank): a tiny LM with every parameter random, its parameters as
float64 arrays, and LayerNorm."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fixed_head.config import ModelConfig
from fixed_head.nn import build_model


def random_model(norm: str, scan_layers: bool):
  """A tiny LM (2 layers, h = 3 heads of d_p = 5 at d = 8, n = 7) with every parameter
  random, biases and LayerNorm scales included."""
  config = ModelConfig(vocab_size=13, emb_dim=8, num_heads=3, head_size=5, num_layers=2,
                       mlp_dim=16, max_len=7, norm=norm, scan_layers=scan_layers,
                       dropout_rate=0.0, attention_dropout_rate=0.0)
  # Built abstractly, then filled with NumPy draws: no initialiser is compiled.
  model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
  shapes, tree = jax.tree.flatten(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(1)
  nnx.update(model, jax.tree.unflatten(tree, [
      jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype) for a in shapes]))
  return model


def layer_params(model, layer: int) -> dict:
  """Layer ``layer``'s parameters as float64 NumPy (cut from the stacked ones with scan)."""
  blocks = nnx.to_pure_dict(nnx.state(model, nnx.Param))['decoder']['blocks']
  pick = ((lambda a: a[layer]) if model.config.scan_layers else (lambda a: a))
  tree = blocks if model.config.scan_layers else blocks[layer]
  return jax.tree.map(lambda a: np.asarray(pick(a), np.float64), tree)


def layer_norm(x, p, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']
