"""The building blocks shared by the paper's models: embeddings, LayerNorm, dense layers,
dropout, the feed-forward block, and the Transformer block and stack.

A ``TransformerBlock`` is attention (``fixed_head.nn.attention``, head size d_p free) and a
feed-forward block, each wrapped in a residual connection and LayerNorm. ``norm='post'`` is
the paper's Z = LN(X + f(X)); ``norm='pre'`` is Z = X + f(LN(X)) with one final LayerNorm.

Dropout is driven by an ``nnx.Rngs`` passed at call time (``rngs=nnx.Rngs(dropout=key)``);
modules hold no RNG state, so a step is a pure function of (params, batch, key).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fixed_head import config as config_lib
from fixed_head.config import ModelConfig
from fixed_head.nn import attention as attn
from fixed_head.nn import attention_op, masks
from fixed_head.nn.attention_op import AttentionOp
from fixed_head.nn import axes
from fixed_head.nn.axes import with_logical_axes

RESIDUAL_AXES = ('batch', None, None)  # the residual stream [b, n, d]: split by rows

Array = jax.Array

_zeros = nnx.initializers.zeros_init()
_ones = nnx.initializers.ones_init()

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    'relu': jax.nn.relu,
    'gelu': jax.nn.gelu,
}


def dtypes(config: ModelConfig) -> dict:
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


def kernel_init(config: ModelConfig) -> nnx.initializers.Initializer:
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


def embed(num: int, config: ModelConfig, names: tuple[str | None, str],
          rngs: nnx.Rngs) -> nnx.Embed:
  init = initializer(config.embed_init, config.embed_init_std)
  return nnx.Embed(num, config.emb_dim, embedding_init=with_logical_axes(init, names),
                   rngs=rngs, **dtypes(config))


def layer_norm(config: ModelConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      config.emb_dim, epsilon=config.layer_norm_eps,
      scale_init=with_logical_axes(_ones, ('norm',)),
      bias_init=with_logical_axes(_zeros, ('norm',)),
      rngs=rngs, **dtypes(config))


def linear(in_features: int, out_features: int, names: tuple[str | None, str | None],
           config: ModelConfig, rngs: nnx.Rngs, use_bias: bool | None = None) -> nnx.Linear:
  use_bias = config.use_bias if use_bias is None else use_bias
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias,
      kernel_init=with_logical_axes(kernel_init(config), names),
      bias_init=with_logical_axes(_zeros, names[1:]),
      rngs=rngs, **dtypes(config))


def dropout(x: Array, rate: float, deterministic: bool, rngs: nnx.Rngs | None) -> Array:
  """Inverted dropout; a no-op when deterministic or rate == 0."""
  if deterministic or rate == 0.0:
    return x
  if rngs is None:
    raise ValueError("deterministic=False needs rngs with a 'dropout' stream, "
                     'e.g. rngs=nnx.Rngs(dropout=jax.random.key(step)).')
  return attention_op.dropout(x, rate, rngs.dropout())


class MlpBlock(nnx.Module):
  """Feed-forward block: [b, n, d] -> [b, n, mlp_dim] -> [b, n, d], with dropout at
  ``mlp_dropout_rate`` after the activation (tensor2tensor's relu_dropout; Google BERT has
  none there, only after the output projection, which ``TransformerBlock`` applies)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.wi = linear(config.emb_dim, config.mlp_dim, ('embed', 'mlp'), config, rngs)
    self.wo = linear(config.mlp_dim, config.emb_dim, ('mlp', 'embed'), config, rngs)

  def __call__(self, x: Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    h = ACTIVATIONS[self.config.activation](self.wi(x))
    h = dropout(h, self.config.resolved_mlp_dropout_rate, deterministic, rngs)
    return self.wo(h)


class TransformerBlock(nnx.Module):
  """Attention + feed-forward, each residual with LayerNorm (post- or pre-LN).
  ``attention_op``: the AttentionOp its attention calls (default: config.attention_impl's)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
               attention_op: AttentionOp | None = None):
    self.config = config
    self.attention = attn.MultiHeadAttention(
        in_features=config.emb_dim,
        num_heads=config.num_heads,
        head_size=config.resolved_head_size,
        dropout_rate=config.attention_dropout_rate,
        use_bias=config.resolved_attention_use_bias,
        kernel_init=kernel_init(config),
        implementation=attention_op or config.attention_impl,
        rngs=rngs,
        **dtypes(config),
    )
    self.attention_norm = layer_norm(config, rngs)
    self.mlp = MlpBlock(config, rngs=rngs)
    self.mlp_norm = layer_norm(config, rngs)

  def __call__(self, x: Array, *, mask: Array | None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    """x: [b, n, d]; mask broadcastable to [b, h, n, n]. Returns [b, n, d]."""
    rate = self.config.dropout_rate

    def attention(y):
      if self.config.remat == 'attention':
        return recomputed(self.attention, y, mask=mask, deterministic=deterministic, rngs=rngs,
                          in_scan=self.config.scan_layers)
      return self.attention(y, mask=mask, deterministic=deterministic, rngs=rngs)

    def mlp(y):
      return self.mlp(y, deterministic=deterministic, rngs=rngs)

    for name, sublayer, norm in (('attention', attention, self.attention_norm),
                                 ('feed_forward', mlp, self.mlp_norm)):
      if self.config.norm == 'post':
        x = norm(x + dropout(_scoped(name, sublayer, x), rate, deterministic, rngs))
      else:
        x = x + dropout(_scoped(name, sublayer, norm(x)), rate, deterministic, rngs)
    return x


def _scoped(name: str, fn: Callable[[Array], Array], x: Array) -> Array:
  """fn(x) with its operations named ``name`` in the compiled program (and in its gradient's),
  so a profile of a step says which sublayer an operation belongs to."""
  with jax.named_scope(name):
    return fn(x)


def recomputed(module: nnx.Module, x: Array, *, mask: Array | masks.SegmentMask | None,
               deterministic: bool, rngs: nnx.Rngs | None, in_scan: bool) -> Array:
  """``module(x, mask=..., deterministic=..., rngs=...)`` [b, n, d] -> [b, n, d] under
  ``nnx.remat``: the backward pass recomputes its activations from x instead of keeping
  them. The dropout keys it draws from ``rngs`` are the same in the recomputation, so
  outputs and gradients do not change.

  Outside a scan, jax.checkpoint keeps XLA from merging the recomputation back into the
  forward pass with optimisation barriers, which XLA's CPU compiler removes (its
  cse_barrier_expander pass): on a CPU only the scanned stack saves memory. Inside
  ``nnx.scan`` the loop itself keeps them apart, so the barriers are left out there.
  """

  @nnx.remat(prevent_cse=not in_scan)
  def call(module, x, mask, rngs):
    return module(x, mask=mask, deterministic=deterministic, rngs=rngs)

  return call(module, x, mask, rngs)


class TransformerStack(nnx.Module):
  """``num_layers`` blocks, plus the final LayerNorm that pre-LN needs. [b, n, d] -> [b, n, d].

  By default ``blocks`` is an ``nnx.List`` of blocks applied by a Python loop (blocks/0,
  blocks/1, ...). With ``config.scan_layers`` it is one ``TransformerBlock`` whose
  parameters are stacked: each has a leading axis of size num_layers, logical name
  'layers', and the blocks run under ``nnx.scan``, so the step compiles one block whatever
  the depth. The two hold the same parameters (stack the loop's per-layer leaves on axis 0).
  ``config.remat`` ('attention' or 'full') recomputes activations in the backward pass,
  in either layout. Every block calls one ``AttentionOp`` (``attention_op``, or one made from
  config.attention_impl).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
               attention_op: AttentionOp | None = None):
    self.config = config
    attention_op = attention_op or AttentionOp(config.attention_impl)
    if config.scan_layers:
      @nnx.vmap(in_axes=0, out_axes=0, axis_size=config.num_layers,
                transform_metadata={nnx.PARTITION_NAME: 'layers'})
      def make_blocks(layer_rngs: nnx.Rngs) -> TransformerBlock:
        return TransformerBlock(config, rngs=layer_rngs, attention_op=attention_op)

      self.blocks = make_blocks(rngs.split(config.num_layers))
    else:
      self.blocks = nnx.List([TransformerBlock(config, rngs=rngs, attention_op=attention_op)
                              for _ in range(config.num_layers)])
    self.final_norm = layer_norm(config, rngs) if config.norm == 'pre' else None

  def __call__(self, x: Array, *, mask: Array | None, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> Array:
    """x: [b, n, d]; mask broadcastable to [b, h, n, n]. Returns [b, n, d]."""
    if self.config.scan_layers:
      x = self._scan(x, mask, deterministic, rngs)
    else:
      for block in self.blocks:
        x = self._block(block, x, mask, deterministic, rngs)
    if self.final_norm is not None:
      x = self.final_norm(x)
    return x

  def _scan(self, x: Array, mask: Array | None, deterministic: bool,
            rngs: nnx.Rngs | None) -> Array:
    """The stacked blocks under ``nnx.scan``. With dropout, one key is drawn from
    ``rngs.dropout`` and split into one key per layer, so layers drop differently and the
    result stays a pure function of (params, x, key)."""
    config = self.config
    keys = None
    if not deterministic and rngs is not None and _uses_dropout(config):
      keys = jax.random.split(rngs.dropout(), config.num_layers)

    @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=nnx.Carry,
              transform_metadata={nnx.PARTITION_NAME: 'layers'})
    def step(h: Array, block: TransformerBlock, key: Array | None) -> Array:
      layer_rngs = None if key is None else nnx.Rngs(dropout=key)
      return self._block(block, h, mask, deterministic, layer_rngs)

    return step(x, self.blocks, keys)

  def _block(self, block: TransformerBlock, x: Array, mask: Array | None, deterministic: bool,
             rngs: nnx.Rngs | None) -> Array:
    """One block, recomputed in the backward pass with ``remat='full'``; its input and
    output [b, n, d] stay split by rows over the mesh in context."""
    x = axes.constrain(x, RESIDUAL_AXES)
    if self.config.remat == 'full':
      x = recomputed(block, x, mask=mask, deterministic=deterministic, rngs=rngs,
                     in_scan=self.config.scan_layers)
    else:
      x = block(x, mask=mask, deterministic=deterministic, rngs=rngs)
    return axes.constrain(x, RESIDUAL_AXES)


def _uses_dropout(config: ModelConfig) -> bool:
  return any(rate > 0.0 for rate in (config.dropout_rate, config.attention_dropout_rate,
                                     config.resolved_mlp_dropout_rate))


def default_positions(tokens: Array) -> Array:
  return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


def position_table(config: ModelConfig, rngs: nnx.Rngs) -> nnx.Embed | None:
  """The learned position embeddings, or None for sinusoids (no parameters)."""
  if config.position_embedding == 'sinusoidal':
    return None
  return embed(config.max_len, config, ('pos', 'embed'), rngs)


def embed_inputs(tokens: Array, positions: Array, token_embed: nnx.Embed,
                 position_embed: nnx.Embed | None, config: ModelConfig) -> Array:
  """tokens, positions [b, n] -> token embeddings (times sqrt(d) with ``scale_embeddings``,
  as tensor2tensor's multiply_embedding_mode='sqrt_depth') plus position embeddings."""
  x = token_embed(tokens)
  if config.scale_embeddings:
    x = x * jnp.sqrt(jnp.asarray(config.emb_dim, x.dtype))
  if position_embed is None:
    return x + sinusoidal_positions(positions, config.emb_dim).astype(x.dtype)
  return x + position_embed(positions)


def check_length(tokens: Array, config: ModelConfig) -> None:
  if tokens.ndim != 2:
    raise ValueError(f'tokens must be [batch, length] integers, got shape {tokens.shape}.')
  if tokens.shape[1] > config.max_len:
    raise ValueError(f'sequence length {tokens.shape[1]} exceeds model.max_len='
                     f'{config.max_len} (the number of learned positions); raise max_len.')
