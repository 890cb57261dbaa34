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


def forward(model, tokens, segment_ids, positions=None, cut=None) -> dict:
  """The LM by the formulas, in float64 NumPy: embeddings; per layer S = Q K^T / sqrt(d_p)
  ([b, h, n, n]), ``cut(s)`` applied to S in place when given (before the mask), P = the
  softmax of S under the causal, within-segment mask (zeros for a query that may attend
  nowhere), the attention output, the feed-forward block, residuals and LayerNorms (post- or
  pre-LN); the output logits through the tied embedding. tokens, segment_ids, positions:
  int [b, n] (positions default 0 ... n - 1). Returns {'weights': [P per layer], 'logits':
  [S per layer, uncut], 'mask': bool [b, 1, n, n], 'output': [b, n, V]}."""
  c = model.config
  top = jax.tree.map(lambda a: np.asarray(a, np.float64),
                     nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  n = tokens.shape[1]
  positions = np.arange(n) if positions is None else positions
  x = top['token_embed']['embedding'][tokens] + top['position_embed']['embedding'][positions]
  i, j = np.arange(n)[:, None], np.arange(n)[None, :]
  seg = segment_ids
  mask = ((i >= j)[None] & (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0))[:, None]
  weights, logits = [], []
  for layer in range(c.num_layers):
    p = layer_params(model, layer)

    def attention(y, a=p['attention']):
      proj = lambda name: np.einsum('bnd,dhk->bnhk', y, a[name]['kernel']) + a[name]['bias']
      q, k, v = proj('query'), proj('key'), proj('value')
      s = np.einsum('bqhk,bshk->bhqs', q, k) / np.sqrt(c.head_size)
      logits.append(s.copy())
      if cut is not None:
        cut(s)
      s = np.where(mask, s, -np.inf)
      top_s = np.max(s, -1, keepdims=True)
      e = np.where(mask, np.exp(s - np.where(np.isfinite(top_s), top_s, 0)), 0)
      weights.append(e / np.maximum(e.sum(-1, keepdims=True), 1e-300))
      context = np.einsum('bhqs,bshk->bqhk', weights[-1], v)
      return np.einsum('bqhk,hkd->bqd', context, a['out']['kernel']) + a['out']['bias']

    def mlp(y, p=p):
      hidden = np.maximum(y @ p['mlp']['wi']['kernel'] + p['mlp']['wi']['bias'], 0)
      return hidden @ p['mlp']['wo']['kernel'] + p['mlp']['wo']['bias']

    for f, norm in ((attention, p['attention_norm']), (mlp, p['mlp_norm'])):
      if c.norm == 'post':
        x = layer_norm(x + f(x), norm, c.layer_norm_eps)
      else:
        x = x + f(layer_norm(x, norm, c.layer_norm_eps))
  if c.norm == 'pre':
    x = layer_norm(x, top['decoder']['final_norm'], c.layer_norm_eps)
  return {'weights': weights, 'logits': logits, 'mask': mask,
          'output': x @ top['token_embed']['embedding'].T}
