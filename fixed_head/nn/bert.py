"""BERT: the bidirectional encoder, and the heads that pre-training and fine-tuning put on it.

The encoder (``BertEncoder``) is one submodule, ``encoder``, of every BERT model here, so
a fine-tuning model loads the pre-trained encoder by name and starts its own head fresh.
tokens, token_types, input_mask are int32 [b, n]; token_types are 0 for [CLS] A [SEP] and
1 for B [SEP]; input_mask is 1 on real tokens and 0 on padding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from fixed_head.config import ModelConfig
from fixed_head.nn import masks
from fixed_head.nn.attention_op import AttentionOp
from fixed_head.nn.layers import (ACTIVATIONS, Array, TransformerStack, check_length,
                                  default_positions, dropout, embed, embed_inputs, layer_norm,
                                  linear, position_table)


@dataclasses.dataclass(frozen=True)
class EncoderOutput:
  """sequence_output: [b, n, d], the encoder's last layer; pooled_output: [b, d],
  tanh(W h_[CLS])."""

  sequence_output: Array
  pooled_output: Array


jax.tree_util.register_dataclass(
    EncoderOutput, data_fields=['sequence_output', 'pooled_output'], meta_fields=[])


class BertEncoder(nnx.Module):
  """Bidirectional encoder: token + position + token-type embeddings, then the blocks.

  With post-LN (BERT) the summed embeddings are layer-normalised; with pre-LN the stack
  ends in a LayerNorm instead. Task heads (pre-training here, fine-tuning later) consume
  the ``EncoderOutput``.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
               attention_op: AttentionOp | None = None):
    if config.model_type != 'bert':
      raise ValueError(f"BertEncoder needs model.model_type='bert', got {config.model_type!r}.")
    self.config = config
    self.token_embed = embed(config.vocab_size, config, ('vocab', 'embed'), rngs)
    self.position_embed = position_table(config, rngs)
    self.type_embed = embed(config.type_vocab_size, config, (None, 'embed'), rngs)
    self.embed_norm = layer_norm(config, rngs) if config.norm == 'post' else None
    self.encoder = TransformerStack(config, rngs=rngs, attention_op=attention_op)
    self.pooler = linear(config.emb_dim, config.emb_dim, ('embed', None), config, rngs)

  def __call__(self, tokens: Array, *, token_types: Array | None = None,
               input_mask: Array | None = None, positions: Array | None = None,
               segment_ids: Array | None = None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> EncoderOutput:
    """tokens [b, n]; token_types [b, n] (sentence A = 0 / B = 1); input_mask [b, n]
    (1 = real token, 0 = padding); segment_ids [b, n] for packed rows (0 = padding).
    The pooled output reads position 0 ([CLS]) of each row."""
    check_length(tokens, self.config)
    positions = default_positions(tokens) if positions is None else positions
    token_types = jnp.zeros_like(tokens) if token_types is None else token_types
    ids = segment_ids  # attend within one's own segment; id 0 = padding
    if input_mask is not None:
      valid = (input_mask > 0).astype(jnp.int32)
      ids = valid if ids is None else jnp.where(valid > 0, ids, 0)
    mask = None if ids is None else masks.SegmentMask(ids)
    x = (embed_inputs(tokens, positions, self.token_embed, self.position_embed, self.config)
         + self.type_embed(token_types))
    if self.embed_norm is not None:
      x = self.embed_norm(x)
    x = dropout(x, self.config.dropout_rate, deterministic, rngs)
    x = self.encoder(x, mask=mask, deterministic=deterministic, rngs=rngs)
    pooled = jnp.tanh(self.pooler(x[:, 0]))
    return EncoderOutput(sequence_output=x, pooled_output=pooled)


class MaskedLMHead(nnx.Module):
  """BERT's masked-LM head: dense + activation + LayerNorm, then the tied embedding + bias.

  hidden [b, m, d] -> logits [b, m, vocab_size] (float32).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.transform = linear(config.emb_dim, config.emb_dim, ('embed', None), config, rngs)
    self.norm = layer_norm(config, rngs)
    self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.dtype(config.param_dtype)),
                          out_sharding=('vocab',), eager_sharding=False)

  def __call__(self, hidden: Array, embedding: nnx.Embed) -> Array:
    h = self.norm(ACTIVATIONS[self.config.activation](self.transform(hidden)))
    return (embedding.attend(h) + self.bias[...]).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class BertPreTrainingOutput:
  """mlm_logits: [b, m, vocab] at the masked positions (m = n when none are given);
  nsp_logits: [b, 2]; encoder: the ``EncoderOutput``."""

  mlm_logits: Array
  nsp_logits: Array
  encoder: EncoderOutput


jax.tree_util.register_dataclass(
    BertPreTrainingOutput, data_fields=['mlm_logits', 'nsp_logits', 'encoder'], meta_fields=[])


class BertForPreTraining(nnx.Module):
  """BERT encoder with the masked-LM and next-sentence-prediction heads.

  ``self.encoder`` is a ``BertEncoder`` on its own, so its parameters can be saved,
  loaded and reused by fine-tuning heads without the pre-training heads.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
               attention_op: AttentionOp | None = None):
    self.config = config
    self.encoder = BertEncoder(config, rngs=rngs, attention_op=attention_op)
    self.mlm_head = MaskedLMHead(config, rngs=rngs)
    self.nsp_head = linear(config.emb_dim, 2, ('embed', None), config, rngs, use_bias=True)

  def __call__(self, tokens: Array, *, token_types: Array | None = None,
               input_mask: Array | None = None, masked_positions: Array | None = None,
               positions: Array | None = None, segment_ids: Array | None = None,
               deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> BertPreTrainingOutput:
    """As ``BertEncoder``; masked_positions [b, m] (int) selects where MLM logits are made."""
    enc = self.encoder(tokens, token_types=token_types, input_mask=input_mask,
                       positions=positions, segment_ids=segment_ids,
                       deterministic=deterministic, rngs=rngs)
    hidden = enc.sequence_output
    if masked_positions is not None:
      hidden = jnp.take_along_axis(hidden, masked_positions[..., None], axis=1)
    mlm_logits = self.mlm_head(hidden, self.encoder.token_embed)
    nsp_logits = self.nsp_head(enc.pooled_output).astype(jnp.float32)
    return BertPreTrainingOutput(mlm_logits=mlm_logits, nsp_logits=nsp_logits, encoder=enc)


class BertForClassification(nnx.Module):
  """BERT encoder with a classifier on the pooled [CLS] output (Google BERT's
  ``create_model`` in run_classifier.py): dropout, then a dense layer to ``num_classes``.

  tokens etc. as ``BertEncoder`` -> logits [b, num_classes] (float32).
  """

  def __init__(self, config: ModelConfig, *, num_classes: int, rngs: nnx.Rngs,
               attention_op: AttentionOp | None = None):
    self.config = config
    self.encoder = BertEncoder(config, rngs=rngs, attention_op=attention_op)
    self.classifier = linear(config.emb_dim, num_classes, ('embed', None), config, rngs,
                             use_bias=True)

  def __call__(self, tokens: Array, *, token_types: Array | None = None,
               input_mask: Array | None = None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    enc = self.encoder(tokens, token_types=token_types, input_mask=input_mask,
                       deterministic=deterministic, rngs=rngs)
    pooled = dropout(enc.pooled_output, self.config.dropout_rate, deterministic, rngs)
    return self.classifier(pooled).astype(jnp.float32)


class BertForSpanQA(nnx.Module):
  """BERT encoder with a span head (Google BERT's run_squad.py): one dense layer from each
  token's final hidden state to a start and an end logit.

  tokens etc. as ``BertEncoder`` -> (start_logits, end_logits), each [b, n] (float32).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
               attention_op: AttentionOp | None = None):
    self.config = config
    self.encoder = BertEncoder(config, rngs=rngs, attention_op=attention_op)
    self.span_head = linear(config.emb_dim, 2, ('embed', None), config, rngs, use_bias=True)

  def __call__(self, tokens: Array, *, token_types: Array | None = None,
               input_mask: Array | None = None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> tuple[Array, Array]:
    enc = self.encoder(tokens, token_types=token_types, input_mask=input_mask,
                       deterministic=deterministic, rngs=rngs)
    logits = self.span_head(enc.sequence_output).astype(jnp.float32)
    return logits[..., 0], logits[..., 1]
