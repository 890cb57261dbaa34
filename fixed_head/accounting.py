"""Parameter and FLOP accounting, computed analytically from a model config.

``count_params`` equals the number of parameters of the model that
``fixed_head.nn.build_model`` builds from the same config (a test checks this), and
reproduces the paper's published BERT totals (docs/paper.md, Tables 1-3).

Attention holds 4 h d_p d weights per layer (W_q, W_k, W_v, W_o), against 4 d^2 for the
baseline, so fixed-head parameters grow linearly with h.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from fixed_head.config import ModelConfig


def _as_config(config: ModelConfig | Mapping[str, Any] | Any) -> ModelConfig:
  """Accepts a ModelConfig, a dict, or an ml_collections ConfigDict (a config's ``model``)."""
  return ModelConfig.from_mapping(config)


def attention_params(config: ModelConfig) -> int:
  """One attention layer: 4 h d_p d weights, plus 3 h d_p + d biases when the attention has
  biases (``attention_use_bias``, by default ``use_bias``)."""
  d, inner = config.emb_dim, config.num_heads * config.resolved_head_size
  count = 4 * d * inner
  if config.resolved_attention_use_bias:
    count += 3 * inner + d
  return count


def param_breakdown(config: ModelConfig | Mapping[str, Any]) -> dict[str, int]:
  """Parameter count by part: embeddings, attention, feed_forward, layer_norm, heads."""
  c = _as_config(config)
  d, m, v = c.emb_dim, c.mlp_dim, c.vocab_size
  norm = 2 * d  # LayerNorm scale + bias
  dense_d = d * d + (d if c.use_bias else 0)  # a d -> d layer

  embeddings = v * d + (c.max_len * d if c.position_embedding == 'learned' else 0)
  feed_forward = c.num_layers * (2 * d * m + ((m + d) if c.use_bias else 0))
  layer_norm = c.num_layers * 2 * norm
  if c.norm == 'pre':
    layer_norm += norm  # final LayerNorm
  heads = 0
  if c.model_type == 'lm':
    if not c.tie_embeddings:
      heads += d * v  # output projection, no bias
  else:  # bert
    embeddings += c.type_vocab_size * d
    if c.norm == 'post':
      layer_norm += norm  # LayerNorm on the summed embeddings
    heads += dense_d  # pooler
    heads += dense_d + norm + v  # masked-LM transform, its LayerNorm, output bias (tied W)
    heads += 2 * d + 2  # next-sentence classifier
  return dict(
      embeddings=embeddings,
      attention=c.num_layers * attention_params(c),
      feed_forward=feed_forward,
      layer_norm=layer_norm,
      heads=heads,
  )


def count_params(config: ModelConfig | Mapping[str, Any]) -> int:
  """Exact number of parameters of ``build_model(config)``."""
  return sum(param_breakdown(config).values())


@dataclasses.dataclass(frozen=True)
class FlopsPerToken:
  """Forward FLOPs per token by part (a multiply-add counts 2). ``training`` = 3 x forward."""

  attention_projection: int
  attention_scores: int
  feed_forward: int
  embedding_output: int

  @property
  def forward(self) -> int:
    return (self.attention_projection + self.attention_scores + self.feed_forward
            + self.embedding_output)

  @property
  def training(self) -> int:
    """Forward + backward; the backward pass costs twice the forward's matmuls."""
    return 3 * self.forward


def flops_per_token(config: ModelConfig | Mapping[str, Any],
                    seq_len: int | None = None) -> FlopsPerToken:
  """Matmul FLOPs per token of one forward pass at sequence length n (default max_len).

  With L layers, d = emb_dim, h heads of size d_p, feed-forward width m, vocabulary V:

    attention_projection = L * 2 * 4 d h d_p        (x W_q, x W_k, x W_v, heads W_o)
    attention_scores     = L * 2 * 2 n h d_p        (Q K^T and P V over all n keys)
    feed_forward         = L * 2 * 2 d m
    embedding_output     = 2 d V                    (LM: output logits)
                         = 2 d V + 2 d^2            (BERT: MLM transform + logits, every token)

  Scores count the full n x n product that the einsum implementation computes, also
  under a causal mask. Embedding look-ups, biases, LayerNorm, softmax and activations
  are lower order and not counted; BERT's pooler and NSP head run once per sequence
  and are left out.
  """
  c = _as_config(config)
  n = c.max_len if seq_len is None else seq_len
  if n <= 0:
    raise ValueError(f'seq_len={n} must be positive.')
  d, h, dp, m, v, L = (c.emb_dim, c.num_heads, c.resolved_head_size, c.mlp_dim,
                       c.vocab_size, c.num_layers)
  output = 2 * d * v + (2 * d * d if c.model_type == 'bert' else 0)
  return FlopsPerToken(
      attention_projection=L * 2 * 4 * d * h * dp,
      attention_scores=L * 2 * 2 * n * h * dp,
      feed_forward=L * 2 * 2 * d * m,
      embedding_output=output,
  )


def match_num_heads(baseline: ModelConfig | Mapping[str, Any], head_size: int, *,
                    max_heads: int = 1024, **overrides: Any) -> int:
  """Number of fixed-head heads h whose parameter count is closest to ``baseline``'s.

  The fixed-head model is ``baseline`` with ``head_size`` and any ``overrides`` (for
  example ``emb_dim=256`` to match a d = 512 baseline with a d = 256 model, as in the
  paper's LM1B experiments). Ties go to the smaller h. Build the matched config with
  ``baseline.replace(head_size=head_size, num_heads=h, **overrides)``.
  """
  base = _as_config(baseline)
  target = count_params(base)
  best_h, best_gap = None, None
  for h in range(1, max_heads + 1):
    gap = abs(count_params(base.replace(head_size=head_size, num_heads=h, **overrides)) - target)
    if best_gap is None or gap < best_gap:
      best_h, best_gap = h, gap
    elif gap > best_gap:
      break  # the count grows with h, so the gap only widens from here
  return best_h
