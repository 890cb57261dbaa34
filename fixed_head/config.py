"""The model configuration: one frozen dataclass, validated on construction.

Baseline versus fixed-head attention is one field: ``head_size=None`` ties the head
size to the width (d_p = d / h, the paper's "standard" attention), an integer fixes
d_p independently of d and h (the paper's "FixedMultiHead" attention).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

MODEL_TYPES = ('lm', 'bert')
NORM_PLACEMENTS = ('post', 'pre')
ACTIVATIONS = ('relu', 'gelu')
POSITION_EMBEDDINGS = ('learned', 'sinusoidal')
INITIALIZERS = ('xavier_uniform', 'normal', 'truncated_normal')
# The keys of ``fixed_head.nn.attention_op.ATTENTION_IMPLEMENTATIONS`` (a test checks it);
# spelled out here so that validating a config imports no model code.
ATTENTION_IMPLEMENTATIONS = ('xla', 'jax', 'cudnn', 'pallas', 'tpu_flash')
# 'auto': chosen per call from backend, dtype, head size, dropout and mask (attention_op.py).
ATTENTION_CHOICES = ('auto', *ATTENTION_IMPLEMENTATIONS)
# What the backward pass recomputes instead of keeping from the forward pass.
REMAT_POLICIES = ('none', 'attention', 'full')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of a Transformer LM (``model_type='lm'``) or BERT encoder ('bert').

  Symbols are the paper's: d = ``emb_dim``, h = ``num_heads``, d_p = ``head_size``,
  n = ``max_len`` (the longest sequence the position embeddings cover).
  """

  model_type: str = 'lm'
  vocab_size: int = 32_000
  emb_dim: int = 256  # d
  num_heads: int = 8  # h
  head_size: int | None = None  # d_p; None = d // h (baseline)
  num_layers: int = 6
  mlp_dim: int = 1024  # feed-forward width
  max_len: int = 256  # n: number of learned positions
  type_vocab_size: int = 2  # BERT segment (sentence A/B) embeddings; unused by 'lm'
  dropout_rate: float = 0.1  # on embeddings, residual branches and feed-forward
  attention_dropout_rate: float = 0.1  # on the attention weights P
  norm: str = 'post'  # 'post': Z = LN(X + f(X)) as in the paper; 'pre': Z = X + f(LN(X))
  activation: str = 'relu'  # feed-forward non-linearity: 'relu' (T2T LM) or 'gelu' (BERT)
  tie_embeddings: bool = True  # LM output layer reuses the token embedding (BERT always ties)
  use_bias: bool = True  # biases on the attention and feed-forward projections
  attention_use_bias: bool | None = None  # biases on W_q, W_k, W_v, W_o; None = use_bias
  mlp_dropout_rate: float | None = None  # after the feed-forward activation; None = dropout_rate
  layer_norm_eps: float = 1e-6
  position_embedding: str = 'learned'  # 'learned' table of max_len rows, or 'sinusoidal'
  scale_embeddings: bool = False  # multiply token embeddings by sqrt(d) (tensor2tensor)
  embed_init: str = 'normal'  # initialiser of every embedding table: 'normal' / 'truncated_normal'
  embed_init_std: float = 0.02  # its std
  kernel_init: str = 'xavier_uniform'  # of dense kernels; or 'normal' / 'truncated_normal'
  kernel_init_std: float = 0.02  # std of a 'normal' or 'truncated_normal' kernel_init
  dtype: str = 'float32'  # compute dtype
  param_dtype: str = 'float32'  # storage dtype of the parameters
  # 'auto' (cuDNN / Pallas kernel on a GPU, JAX's Pallas TPU kernel on a TPU, where they
  # apply; else the einsum 'xla'), or a key of attention_op.ATTENTION_IMPLEMENTATIONS
  attention_impl: str = 'auto'
  # run the blocks under nnx.scan: parameters stacked on a leading 'layers' axis; compile
  # time independent of depth
  scan_layers: bool = False
  # rematerialisation, memory for compute: 'none' keeps every activation for the backward
  # pass; 'attention' recomputes each block's attention sublayer there (its q, k, v and the
  # [b, h, n, n] probabilities are not kept); 'full' recomputes each whole block (only its
  # input is kept). Same outputs and gradients, same parameters
  remat: str = 'none'

  def __post_init__(self):
    _validate(self)

  @property
  def resolved_head_size(self) -> int:
    """d_p: ``head_size`` if given, else the baseline d // h."""
    return self.head_size if self.head_size is not None else self.emb_dim // self.num_heads

  @property
  def is_fixed_head(self) -> bool:
    return self.head_size is not None

  @property
  def resolved_attention_use_bias(self) -> bool:
    return self.use_bias if self.attention_use_bias is None else self.attention_use_bias

  @property
  def resolved_mlp_dropout_rate(self) -> float:
    return self.dropout_rate if self.mlp_dropout_rate is None else self.mlp_dropout_rate

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any] | Any) -> 'ModelConfig':
    """Builds a config from a dict or an ``ml_collections.ConfigDict``.

    Unknown keys are an error (a typo must not silently fall back to a default).
    """
    return section_from_mapping(cls, mapping, 'model config')

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def replace(self, **changes) -> 'ModelConfig':
    return dataclasses.replace(self, **changes)


def section_from_mapping(cls: type, mapping: Mapping[str, Any] | Any, name: str,
                         error: type[Exception] = ValueError) -> Any:
  """``mapping`` (a dict, an ``ml_collections.ConfigDict`` or already a ``cls``) as the frozen
  dataclass ``cls`` of a config section: a field it lacks takes its default, one ``cls`` does
  not have is refused with ``error`` naming the section ``name`` (a typo must not silently
  fall back to a default); ``cls`` checks the values it is built with."""
  if isinstance(mapping, cls):
    return mapping
  if hasattr(mapping, 'to_dict'):
    mapping = mapping.to_dict()
  known = sorted(f.name for f in dataclasses.fields(cls))
  unknown = sorted(set(mapping) - set(known))
  if unknown:
    raise error(f'{name}: unknown field(s) {unknown}; known fields are {known}.')
  return cls(**dict(mapping))


def head_size_of(emb_dim: int, num_heads: int, head_size: int | None, *,
                 names: tuple[str, str, str] = ('emb_dim', 'num_heads', 'head_size')) -> int:
  """d_p: ``head_size``, or the baseline d / h when it is None. Raises ValueError, naming
  the fields as ``names`` (d, h, d_p) spell them, when h does not divide d for the baseline
  or ``head_size`` is no positive integer. The one check of the head size (the config and
  ``MultiHeadAttention`` both call it)."""
  d, h, d_p = names
  if head_size is None:
    if emb_dim % num_heads:
      raise ValueError(
          f'{h}={num_heads} does not divide {d}={emb_dim}, which the baseline head size d/h '
          f'({d_p}=None) requires. Choose {h.rsplit(".", 1)[-1]} dividing {emb_dim}, or set '
          f'{d_p} to fix d_p independently of d and h.')
    return emb_dim // num_heads
  if isinstance(head_size, bool) or not isinstance(head_size, int) or head_size <= 0:
    raise ValueError(f'{d_p}={head_size!r}: must be a positive integer, or None for the '
                     'baseline d / h.')
  return head_size


def _validate(c: ModelConfig) -> None:
  """Raises ValueError naming the offending field and how to fix it."""

  def fail(field, message):
    raise ValueError(f'model.{field}={getattr(c, field)!r}: {message}')

  def choice(field, options):
    if getattr(c, field) not in options:
      fail(field, f'must be one of {options}.')

  choice('model_type', MODEL_TYPES)
  choice('norm', NORM_PLACEMENTS)
  choice('activation', ACTIVATIONS)
  choice('attention_impl', ATTENTION_CHOICES)
  choice('position_embedding', POSITION_EMBEDDINGS)
  choice('kernel_init', INITIALIZERS)
  choice('embed_init', INITIALIZERS[1:])
  choice('remat', REMAT_POLICIES)
  for field in ('scale_embeddings', 'use_bias', 'tie_embeddings', 'scan_layers'):
    if not isinstance(getattr(c, field), bool):
      fail(field, 'must be True or False.')
  if c.attention_use_bias is not None and not isinstance(c.attention_use_bias, bool):
    fail('attention_use_bias', 'must be True, False, or None (= use_bias).')
  for field in ('vocab_size', 'emb_dim', 'num_heads', 'num_layers', 'mlp_dim', 'max_len',
                'type_vocab_size'):
    value = getattr(c, field)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      fail(field, 'must be a positive integer.')
  head_size_of(c.emb_dim, c.num_heads, c.head_size,
               names=('model.emb_dim', 'model.num_heads', 'model.head_size'))
  for field in ('dropout_rate', 'attention_dropout_rate', 'mlp_dropout_rate'):
    if field == 'mlp_dropout_rate' and c.mlp_dropout_rate is None:
      continue
    if not 0.0 <= getattr(c, field) < 1.0:
      fail(field, 'must lie in [0, 1).')
  if c.position_embedding == 'sinusoidal' and c.emb_dim % 2:
    fail('emb_dim', "must be even for position_embedding='sinusoidal' (sin and cos halves).")
  for field in ('layer_norm_eps', 'embed_init_std', 'kernel_init_std'):
    if not getattr(c, field) > 0:
      fail(field, 'must be positive.')
  for field in ('dtype', 'param_dtype'):
    try:
      dtype = jnp.dtype(getattr(c, field))
    except TypeError:
      fail(field, "is not a dtype name; use e.g. 'float32' or 'bfloat16'.")
    if not jnp.issubdtype(dtype, jnp.floating):
      fail(field, "must be a floating dtype such as 'float32' or 'bfloat16'.")
