"""The decoder-only Transformer language model of the paper's LM1B experiments.

Conventions: tokens are int32 [b, n]. ``segment_ids`` [b, n] mark packed documents
(equal ids attend to each other; 0 = padding) and ``positions`` [b, n] restart at 0 in
each document. The LM does not shift its inputs: logits[:, i] predict tokens[:, i + 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fixed_head.config import ModelConfig
from fixed_head.nn import masks
from fixed_head.nn.attention_op import AttentionOp
from fixed_head.nn.layers import (Array, TransformerStack, check_length, default_positions,
                                  dropout, embed, embed_inputs, linear, position_table)


class TransformerLM(nnx.Module):
  """Decoder-only Transformer language model (the paper's LM1B model).

  tokens [b, n] -> logits [b, n, vocab_size] (float32); logits[:, i] predict token i + 1.
  With ``tie_embeddings`` the output layer is the transposed token embedding.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
               attention_op: AttentionOp | None = None):
    if config.model_type != 'lm':
      raise ValueError(f"TransformerLM needs model.model_type='lm', got {config.model_type!r}.")
    self.config = config
    self.token_embed = embed(config.vocab_size, config, ('vocab', 'embed'), rngs)
    self.position_embed = position_table(config, rngs)
    self.decoder = TransformerStack(config, rngs=rngs, attention_op=attention_op)
    self.output = (None if config.tie_embeddings else
                   linear(config.emb_dim, config.vocab_size, ('embed', 'vocab'), config,
                           rngs, use_bias=False))

  def __call__(self, tokens: Array, *, positions: Array | None = None,
               segment_ids: Array | None = None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    """tokens, positions, segment_ids: [b, n] int. Returns logits [b, n, vocab_size]."""
    check_length(tokens, self.config)
    positions = default_positions(tokens) if positions is None else positions
    mask = masks.SegmentMask(segment_ids, causal=True)  # causal, within documents
    x = embed_inputs(tokens, positions, self.token_embed, self.position_embed, self.config)
    x = dropout(x, self.config.dropout_rate, deterministic, rngs)
    x = self.decoder(x, mask=mask, deterministic=deterministic, rngs=rngs)
    with jax.named_scope('output'):
      logits = self.token_embed.attend(x) if self.output is None else self.output(x)
      return logits.astype(jnp.float32)
