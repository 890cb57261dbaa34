"""Multi-head attention whose head size d_p is its own hyper-parameter.

One head (docs/paper.md, "Notation"), written for row-major activations x of shape [n, d]:

  P = softmax over keys of (x W_q)(x W_k)^T / sqrt(d_p),   head = P (x W_v)

with W_q, W_k, W_v of shape [d, d_p]. The h heads are concatenated ([n, h * d_p]) and
mapped back to d by W_o ([h * d_p, d]). The paper writes the same thing with tokens as
columns (X = x^T, P column-stochastic); ``fixed_head.theory`` keeps that convention.

Baseline attention is ``head_size=None`` (d_p = d / h, h must divide d); any integer
``head_size`` gives the paper's fixed-head attention, where h need not divide d: the
projections are ``out_features=(num_heads, head_size)``, whatever d is.

The product of the projected heads is an ``AttentionOp`` (``fixed_head.nn.attention_op``:
its implementations and 'auto''s choice); masks are ``fixed_head.nn.masks``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fixed_head import config as config_lib
from fixed_head.nn import axes
from fixed_head.nn.attention_op import AUTO, AttentionOp
from fixed_head.nn.masks import SegmentMask

Array = jax.Array
Initializer = Callable[..., Array]

default_kernel_init = nnx.initializers.xavier_uniform()


class MultiHeadAttention(nnx.Module):
  """Multi-head attention with h heads of free size d_p.

  Parameters (all with logical axis names for sharding, see ``fixed_head.nn.axes``):
    query / key / value.kernel: [d, h, d_p]  ('embed', 'heads', 'head_dim'); bias [h, d_p]
    out.kernel: [h, d_p, d_out]              ('heads', 'head_dim', 'embed'); bias [d_out]

  The layout (and the names ``query``, ``key``, ``value``, ``out``) is the same as
  ``flax.nnx.MultiHeadAttention`` with ``qkv_features = h * d_p``, so weights copy across.
  """

  def __init__(
      self,
      *,
      in_features: int,
      num_heads: int,
      head_size: int | None = None,
      out_features: int | None = None,
      dropout_rate: float = 0.0,
      use_bias: bool = True,
      dtype: jnp.dtype | None = None,
      param_dtype: jnp.dtype = jnp.float32,
      kernel_init: Initializer = default_kernel_init,
      out_kernel_init: Initializer | None = None,
      bias_init: Initializer = nnx.initializers.zeros_init(),
      precision: jax.lax.PrecisionLike = None,
      implementation: str | AttentionOp = AUTO,
      rngs: nnx.Rngs,
  ):
    """Args: in_features d, num_heads h, head_size d_p (None = d // h), out_features
    (default d); dtype is the compute dtype, param_dtype the storage dtype; implementation
    the name of one (``attention_op.ATTENTION_IMPLEMENTATIONS``, or 'auto'), or an
    ``AttentionOp`` that the model's layers share."""
    if num_heads <= 0 or in_features <= 0:
      raise ValueError(f'num_heads={num_heads} and in_features={in_features} must be positive.')
    head_size = config_lib.head_size_of(in_features, num_heads, head_size,
                                        names=('in_features', 'num_heads', 'head_size'))
    if not isinstance(implementation, AttentionOp):
      implementation = AttentionOp(implementation)
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f'dropout_rate={dropout_rate} must lie in [0, 1).')
    out_features = in_features if out_features is None else out_features
    self.in_features = in_features
    self.num_heads = num_heads
    self.head_size = head_size
    self.out_features = out_features
    self.dropout_rate = dropout_rate
    self.precision = precision
    self.op = implementation  # the AttentionOp: softmax(Q K^T / sqrt(d_p)) V

    logical = axes.with_logical_axes
    projection = functools.partial(
        nnx.LinearGeneral,
        in_features=in_features,
        out_features=(num_heads, head_size),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=logical(kernel_init, ('embed', 'heads', 'head_dim')),
        bias_init=logical(bias_init, ('heads', 'head_dim')),
        rngs=rngs,
    )
    self.query = projection()
    self.key = projection()
    self.value = projection()
    self.out = nnx.LinearGeneral(
        in_features=(num_heads, head_size),
        out_features=out_features,
        axis=(-2, -1),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=logical(out_kernel_init or kernel_init, ('heads', 'head_dim', 'embed')),
        bias_init=logical(bias_init, ('embed',)),
        rngs=rngs,
    )

  def __call__(
      self,
      inputs_q: Array,
      inputs_kv: Array | None = None,
      *,
      mask: Array | SegmentMask | None = None,
      deterministic: bool = True,
      rngs: nnx.Rngs | None = None,
  ) -> Array:
    """inputs_q: [b, q_len, d]; inputs_kv: [b, kv_len, d] (default: inputs_q, self-attention).

    mask: bool broadcastable to [b, h, q_len, kv_len] (e.g. [q_len, kv_len]), or a
    ``SegmentMask``. With
    ``deterministic=False`` and a positive dropout rate, ``rngs`` must provide a 'dropout'
    stream. Returns [b, q_len, d_out].
    """
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    query = self.query(inputs_q)  # [b, q_len, h, d_p]
    key = self.key(inputs_kv)  # [b, kv_len, h, d_p]
    value = self.value(inputs_kv)
    dropout_rate, dropout_rng = 0.0, None
    if not deterministic and self.dropout_rate > 0.0:
      if rngs is None:
        raise ValueError('MultiHeadAttention: deterministic=False with dropout needs rngs '
                         "with a 'dropout' stream, e.g. rngs=nnx.Rngs(dropout=key).")
      dropout_rate, dropout_rng = self.dropout_rate, rngs.dropout()
    context = self.op(query, key, value, mask=mask, dropout_rate=dropout_rate,
                      dropout_rng=dropout_rng, precision=self.precision)
    return self.out(context)
