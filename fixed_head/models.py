"""The paper's models: a decoder-only Transformer LM (LM1B) and a BERT encoder.

Both are stacks of the same ``TransformerBlock``: attention (``fixed_head.attention``,
head size d_p free) and a feed-forward block, each wrapped in a residual connection and
LayerNorm. ``norm='post'`` is the paper's Z = LN(X + f(X)); ``norm='pre'`` is
Z = X + f(LN(X)) with one final LayerNorm.

Dropout is driven by an ``nnx.Rngs`` passed at call time (``rngs=nnx.Rngs(dropout=key)``);
modules hold no RNG state, so a step is a pure function of (params, batch, key).

Conventions: tokens are int32 [b, n]. ``segment_ids`` [b, n] mark packed documents
(equal ids attend to each other; 0 = padding) and ``positions`` [b, n] restart at 0 in
each document. The LM does not shift its inputs: logits[:, i] predict tokens[:, i + 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fixed_head import attention as attn
from fixed_head import config as config_lib
from fixed_head.config import ModelConfig
from fixed_head.sharding import with_logical_axes

Array = jax.Array

_zeros = nnx.initializers.zeros_init()
_ones = nnx.initializers.ones_init()

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    'relu': jax.nn.relu,
    'gelu': jax.nn.gelu,
}


def _dtypes(config: ModelConfig) -> dict:
  return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))


def initializer(name: str, std: float) -> nnx.initializers.Initializer:
  """'xavier_uniform' (std unused), 'normal' N(0, std^2), or 'truncated_normal': N(0, std^2)
  redrawn outside 2 std (so its std is 0.88 std), as TF's truncated_normal_initializer in
  Google BERT's create_initializer (std 0.02)."""
  if name == 'xavier_uniform':
    return nnx.initializers.xavier_uniform()
  if name == 'normal':
    return nnx.initializers.normal(stddev=std)
  if name == 'truncated_normal':
    return nnx.initializers.truncated_normal(stddev=std)  # std of the untruncated normal
  raise ValueError(f'initializer {name!r} is not one of {config_lib.INITIALIZERS}.')


def _kernel_init(config: ModelConfig) -> nnx.initializers.Initializer:
  return initializer(config.kernel_init, config.kernel_init_std)


def sinusoidal_positions(positions: Array, dim: int) -> Array:
  """positions [b, n] (int) -> [b, n, dim] float32: tensor2tensor's timing signal
  (``get_timing_signal_1d``): sin in the first dim / 2 channels, cos in the rest, with
  timescales from 1 to 10^4 in geometric progression."""
  half = dim // 2
  log_increment = jnp.log(1.0e4) / max(half - 1, 1)
  inv_timescales = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -log_increment)
  scaled = positions.astype(jnp.float32)[..., None] * inv_timescales
  return jnp.concatenate([jnp.sin(scaled), jnp.cos(scaled)], axis=-1)


def _embed(num: int, config: ModelConfig, names: tuple[str | None, str], rngs: nnx.Rngs) -> nnx.Embed:
  init = initializer(config.embed_init, config.embed_init_std)
  return nnx.Embed(num, config.emb_dim, embedding_init=with_logical_axes(init, names),
                   rngs=rngs, **_dtypes(config))


def _layer_norm(config: ModelConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      config.emb_dim, epsilon=config.layer_norm_eps,
      scale_init=with_logical_axes(_ones, ('norm',)),
      bias_init=with_logical_axes(_zeros, ('norm',)),
      rngs=rngs, **_dtypes(config))


def _linear(in_features: int, out_features: int, names: tuple[str | None, str | None],
            config: ModelConfig, rngs: nnx.Rngs, use_bias: bool | None = None) -> nnx.Linear:
  use_bias = config.use_bias if use_bias is None else use_bias
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias,
      kernel_init=with_logical_axes(_kernel_init(config), names),
      bias_init=with_logical_axes(_zeros, names[1:]),
      rngs=rngs, **_dtypes(config))


def _dropout(x: Array, rate: float, deterministic: bool, rngs: nnx.Rngs | None) -> Array:
  """Inverted dropout; a no-op when deterministic or rate == 0."""
  if deterministic or rate == 0.0:
    return x
  if rngs is None:
    raise ValueError("deterministic=False needs rngs with a 'dropout' stream, "
                     'e.g. rngs=nnx.Rngs(dropout=jax.random.key(step)).')
  return attn.dropout(x, rate, rngs.dropout())


class MlpBlock(nnx.Module):
  """Feed-forward block: [b, n, d] -> [b, n, mlp_dim] -> [b, n, d], with dropout at
  ``mlp_dropout_rate`` after the activation (tensor2tensor's relu_dropout; Google BERT has
  none there, only after the output projection, which ``TransformerBlock`` applies)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.wi = _linear(config.emb_dim, config.mlp_dim, ('embed', 'mlp'), config, rngs)
    self.wo = _linear(config.mlp_dim, config.emb_dim, ('mlp', 'embed'), config, rngs)

  def __call__(self, x: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    h = _ACTIVATIONS[self.config.activation](self.wi(x))
    h = _dropout(h, self.config.resolved_mlp_dropout_rate, deterministic, rngs)
    return self.wo(h)


class TransformerBlock(nnx.Module):
  """Attention + feed-forward, each residual with LayerNorm (post- or pre-LN)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.attention = attn.MultiHeadAttention(
        in_features=config.emb_dim,
        num_heads=config.num_heads,
        head_size=config.resolved_head_size,
        dropout_rate=config.attention_dropout_rate,
        use_bias=config.resolved_attention_use_bias,
        kernel_init=_kernel_init(config),
        implementation=config.attention_impl,
        rngs=rngs,
        **_dtypes(config),
    )
    self.attention_norm = _layer_norm(config, rngs)
    self.mlp = MlpBlock(config, rngs=rngs)
    self.mlp_norm = _layer_norm(config, rngs)

  def __call__(self, x: Array, *, mask: Array | None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    """x: [b, n, d]; mask broadcastable to [b, h, n, n]. Returns [b, n, d]."""
    rate = self.config.dropout_rate

    def attention(y):
      return self.attention(y, mask=mask, deterministic=deterministic, rngs=rngs)

    def mlp(y):
      return self.mlp(y, deterministic=deterministic, rngs=rngs)

    for sublayer, norm in ((attention, self.attention_norm), (mlp, self.mlp_norm)):
      if self.config.norm == 'post':
        x = norm(x + _dropout(sublayer(x), rate, deterministic, rngs))
      else:
        x = x + _dropout(sublayer(norm(x)), rate, deterministic, rngs)
    return x


class TransformerStack(nnx.Module):
  """``num_layers`` blocks, plus the final LayerNorm that pre-LN needs."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.blocks = nnx.List([TransformerBlock(config, rngs=rngs)
                            for _ in range(config.num_layers)])
    self.final_norm = _layer_norm(config, rngs) if config.norm == 'pre' else None

  def __call__(self, x: Array, *, mask: Array | None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    for block in self.blocks:
      x = block(x, mask=mask, deterministic=deterministic, rngs=rngs)
    if self.final_norm is not None:
      x = self.final_norm(x)
    return x


def _default_positions(tokens: Array) -> Array:
  return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


def _position_table(config: ModelConfig, rngs: nnx.Rngs) -> nnx.Embed | None:
  """The learned position embeddings, or None for sinusoids (no parameters)."""
  if config.position_embedding == 'sinusoidal':
    return None
  return _embed(config.max_len, config, ('pos', 'embed'), rngs)


def _embed_inputs(tokens: Array, positions: Array, token_embed: nnx.Embed,
                  position_embed: nnx.Embed | None, config: ModelConfig) -> Array:
  """tokens, positions [b, n] -> token embeddings (times sqrt(d) with ``scale_embeddings``,
  as tensor2tensor's multiply_embedding_mode='sqrt_depth') plus position embeddings."""
  x = token_embed(tokens)
  if config.scale_embeddings:
    x = x * jnp.sqrt(jnp.asarray(config.emb_dim, x.dtype))
  if position_embed is None:
    return x + sinusoidal_positions(positions, config.emb_dim).astype(x.dtype)
  return x + position_embed(positions)


def _check_length(tokens: Array, config: ModelConfig) -> None:
  if tokens.ndim != 2:
    raise ValueError(f'tokens must be [batch, length] integers, got shape {tokens.shape}.')
  if tokens.shape[1] > config.max_len:
    raise ValueError(f'sequence length {tokens.shape[1]} exceeds model.max_len='
                     f'{config.max_len} (the number of learned positions); raise max_len.')


class TransformerLM(nnx.Module):
  """Decoder-only Transformer language model (the paper's LM1B model).

  tokens [b, n] -> logits [b, n, vocab_size] (float32); logits[:, i] predict token i + 1.
  With ``tie_embeddings`` the output layer is the transposed token embedding.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    if config.model_type != 'lm':
      raise ValueError(f"TransformerLM needs model.model_type='lm', got {config.model_type!r}.")
    self.config = config
    self.token_embed = _embed(config.vocab_size, config, ('vocab', 'embed'), rngs)
    self.position_embed = _position_table(config, rngs)
    self.decoder = TransformerStack(config, rngs=rngs)
    self.output = (None if config.tie_embeddings else
                   _linear(config.emb_dim, config.vocab_size, ('embed', 'vocab'), config,
                           rngs, use_bias=False))

  def __call__(self, tokens: Array, *, positions: Array | None = None,
               segment_ids: Array | None = None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    """tokens, positions, segment_ids: [b, n] int. Returns logits [b, n, vocab_size]."""
    _check_length(tokens, self.config)
    positions = _default_positions(tokens) if positions is None else positions
    mask = attn.causal_mask(tokens.shape[1])
    if segment_ids is not None:
      mask = attn.combine_masks(mask, attn.packed_mask(segment_ids))
    x = _embed_inputs(tokens, positions, self.token_embed, self.position_embed, self.config)
    x = _dropout(x, self.config.dropout_rate, deterministic, rngs)
    x = self.decoder(x, mask=mask, deterministic=deterministic, rngs=rngs)
    logits = self.token_embed.attend(x) if self.output is None else self.output(x)
    return logits.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class EncoderOutput:
  """sequence_output: [b, n, d], the encoder's last layer; pooled_output: [b, d], tanh(W h_[CLS])."""

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

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    if config.model_type != 'bert':
      raise ValueError(f"BertEncoder needs model.model_type='bert', got {config.model_type!r}.")
    self.config = config
    self.token_embed = _embed(config.vocab_size, config, ('vocab', 'embed'), rngs)
    self.position_embed = _position_table(config, rngs)
    self.type_embed = _embed(config.type_vocab_size, config, (None, 'embed'), rngs)
    self.embed_norm = _layer_norm(config, rngs) if config.norm == 'post' else None
    self.encoder = TransformerStack(config, rngs=rngs)
    self.pooler = _linear(config.emb_dim, config.emb_dim, ('embed', None), config, rngs)

  def __call__(self, tokens: Array, *, token_types: Array | None = None,
               input_mask: Array | None = None, positions: Array | None = None,
               segment_ids: Array | None = None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> EncoderOutput:
    """tokens [b, n]; token_types [b, n] (sentence A = 0 / B = 1); input_mask [b, n]
    (1 = real token, 0 = padding); segment_ids [b, n] for packed rows (0 = padding).
    The pooled output reads position 0 ([CLS]) of each row."""
    _check_length(tokens, self.config)
    positions = _default_positions(tokens) if positions is None else positions
    token_types = jnp.zeros_like(tokens) if token_types is None else token_types
    mask = None
    if input_mask is not None:
      mask = attn.padding_mask(input_mask)
    if segment_ids is not None:
      mask = attn.combine_masks(mask, attn.packed_mask(segment_ids))
    x = (_embed_inputs(tokens, positions, self.token_embed, self.position_embed, self.config)
         + self.type_embed(token_types))
    if self.embed_norm is not None:
      x = self.embed_norm(x)
    x = _dropout(x, self.config.dropout_rate, deterministic, rngs)
    x = self.encoder(x, mask=mask, deterministic=deterministic, rngs=rngs)
    pooled = jnp.tanh(self.pooler(x[:, 0]))
    return EncoderOutput(sequence_output=x, pooled_output=pooled)


class MaskedLMHead(nnx.Module):
  """BERT's masked-LM head: dense + activation + LayerNorm, then the tied embedding + bias.

  hidden [b, m, d] -> logits [b, m, vocab_size] (float32).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.transform = _linear(config.emb_dim, config.emb_dim, ('embed', None), config, rngs)
    self.norm = _layer_norm(config, rngs)
    self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.dtype(config.param_dtype)),
                          out_sharding=('vocab',), eager_sharding=False)

  def __call__(self, hidden: Array, embedding: nnx.Embed) -> Array:
    h = self.norm(_ACTIVATIONS[self.config.activation](self.transform(hidden)))
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

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.encoder = BertEncoder(config, rngs=rngs)
    self.mlm_head = MaskedLMHead(config, rngs=rngs)
    self.nsp_head = _linear(config.emb_dim, 2, ('embed', None), config, rngs, use_bias=True)

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


MODELS: dict[str, type[nnx.Module]] = {
    'lm': TransformerLM,
    'bert': BertForPreTraining,
}


def build_model(config: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  """The model named by ``config.model_type``: 'lm' -> TransformerLM, 'bert' -> BertForPreTraining."""
  config = ModelConfig.from_mapping(config)
  return MODELS[config.model_type](config, rngs=rngs)
