"""Optimiser and learning-rate schedule, built from ``config.optimizer``.

Schedules (s = step, w = warmup_steps, T = num_train_steps, lr = learning_rate):
  'rsqrt'     lr * min(1, s / w) / sqrt(max(s, w))   (tensor2tensor's
              'constant*linear_warmup*rsqrt_decay'; our reading of the paper's LM1B runs:
              lr = 0.1 with w = 10k peaks at 1e-3 whatever the width)
  'linear'    lr * min(1, s / w), then linear decay to 0 at T
  'bert'      lr * s / w for s < w, else lr * (1 - min(s, T) / T)   (Google BERT's
              optimization.create_optimizer: polynomial_decay to 0 over all T steps from
              step 0, which the warm-up overrides; after warm-up 'linear' is T / (T - w)
              times 'bert')
  'cosine'    lr * min(1, s / w), then cosine decay to 0 at T
  'constant'  lr * min(1, s / w)
  'noam'      lr * d^-0.5 * min(s / w^1.5, 1 / sqrt(s))   (the Transformer paper's schedule;
              tensor2tensor's transformer_base 'constant*linear_warmup*rsqrt_decay*
              rsqrt_hidden_size'; its peak depends on the width d = model.emb_dim). T2T's
              legacy learning_rate_decay_scheme='noam' is this times 5000 * 0.002 (its Adam
              correction) = 10, at step + 1: learning_rate 0.1 there is lr = 1.0 here.

Optimisers (``name``; g the gradient after global-norm clipping at ``grad_clip_norm``):
  'adamw'      optax.adamw: Adam with bias correction, decoupled weight decay
  'adam'       optax.adamw without the decoupled decay ('l2' mode still decays)
  'bert_adamw' Google BERT's AdamWeightDecayOptimizer: m = b1 m + (1 - b1) g,
               v = b2 v + (1 - b2) g^2, p -= lr_t * (m / (sqrt(v) + eps) + weight_decay * p),
               the decay on the ``decay_mask`` leaves only; no bias correction; 'decoupled'
               mode only

Weight decay (``weight_decay_mode``), on the leaves ``decay_mask`` selects:
  'decoupled' AdamW: params -= lr * weight_decay * params, outside Adam's moments (default)
  'l2'        tensor2tensor's: the gradient of weight_decay * sum(p^2) / 2 (T2T adds that
              term to the loss), weight_decay * p, is added to the gradient before clipping
              and Adam's moments (``optax.add_decayed_weights`` at the head of the chain), so
              it passes through Adam like any gradient. The reported loss and gradient norm
              are the task's, without it.
Both use the same mask. T2T's ``optimize.weight_decay`` skips only 1-D variables named
'bias', so it also decays LayerNorm scales (towards 0, not their initial 1); we never do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fixed_head.config import section_from_mapping
from fixed_head.errors import UsageError

SCHEDULES = ('rsqrt', 'linear', 'bert', 'cosine', 'constant', 'noam')
OPTIMIZERS = ('adamw', 'adam', 'bert_adamw')
WEIGHT_DECAY_MODES = ('decoupled', 'l2')


def _fail(field: str, value: Any, message: str):
  raise UsageError(f'config.optimizer.{field}={value!r}: {message}')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """``config.optimizer``, typed; each field is checked here, once, when it is built."""
  name: str = 'adamw'
  learning_rate: float = 1e-3
  schedule: str = 'cosine'
  warmup_steps: int = 100
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-9
  grad_clip_norm: float | None = 1.0
  weight_decay_mode: str = 'decoupled'

  def __post_init__(self):
    for field, choices in (('name', OPTIMIZERS), ('schedule', SCHEDULES),
                           ('weight_decay_mode', WEIGHT_DECAY_MODES)):
      if getattr(self, field) not in choices:
        _fail(field, getattr(self, field), f'not one of {choices}.')
    if not _number(self.learning_rate) or not self.learning_rate > 0:
      _fail('learning_rate', self.learning_rate, 'must be positive.')
    if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
        or self.warmup_steps < 0:
      _fail('warmup_steps', self.warmup_steps, 'must be an integer >= 0.')
    if not _number(self.weight_decay) or self.weight_decay < 0:
      _fail('weight_decay', self.weight_decay, 'must be >= 0.')
    for field in ('b1', 'b2'):
      if not _number(getattr(self, field)) or not 0 <= getattr(self, field) < 1:
        _fail(field, getattr(self, field), 'must lie in [0, 1).')
    if not _number(self.eps) or not self.eps > 0:
      _fail('eps', self.eps, 'must be positive.')
    if self.grad_clip_norm is not None and (not _number(self.grad_clip_norm)
                                            or self.grad_clip_norm < 0):
      _fail('grad_clip_norm', self.grad_clip_norm, 'must be >= 0 (0 or None: no clipping).')
    if self.name == 'bert_adamw' and self.weight_decay_mode != 'decoupled':
      _fail('weight_decay_mode', self.weight_decay_mode,
            "'bert_adamw' decays the weights decoupled, as Google BERT; set "
            '--config.optimizer.weight_decay_mode=decoupled.')

  @classmethod
  def of(cls, opt: Mapping[str, Any] | OptimizerConfig) -> OptimizerConfig:
    """``opt`` typed: a mapping's missing fields take their defaults; an unknown one is
    refused, naming it."""
    return section_from_mapping(cls, opt, 'config.optimizer', UsageError)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


# config.optimizer's fields and their defaults (run_config.defaults() takes them from here).
DEFAULTS = OptimizerConfig().to_dict()


def make_schedule(opt: Mapping[str, Any] | OptimizerConfig, num_train_steps: int,
                  emb_dim: int | None = None) -> optax.Schedule:
  """The learning rate at a step; 'noam' needs the model width ``emb_dim``."""
  opt = OptimizerConfig.of(opt)
  lr, warmup, name = opt.learning_rate, opt.warmup_steps, opt.schedule

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, step / warmup) if warmup > 0 else 1.0
    if name == 'rsqrt':
      return lr * warm / jnp.sqrt(jnp.maximum(step, max(warmup, 1)))
    if name == 'noam':
      if emb_dim is None:
        raise ValueError("optimizer.schedule='noam' needs the model width (emb_dim).")
      w = max(warmup, 1)
      return lr * emb_dim ** -0.5 * jnp.minimum(step * w ** -1.5,
                                                 1.0 / jnp.sqrt(jnp.maximum(step, 1.0)))
    if name == 'bert':
      total = max(num_train_steps, 1)
      decayed = lr * (1.0 - jnp.minimum(step, total) / total)
      return jnp.where(step < warmup, lr * step / max(warmup, 1), decayed)
    decay_steps = max(num_train_steps - warmup, 1)
    frac = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
    if name == 'linear':
      return lr * warm * (1.0 - frac)
    if name == 'cosine':
      return lr * warm * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return lr * warm

  return schedule


# Leaf names of the parameters weight decay applies to: dense kernels (attention's
# [d, h, d_p] ones included) and embedding tables. Biases (also attention's [h, d_p] ones and
# the masked-LM output bias) and LayerNorm scales and offsets ('bias', 'scale') are never
# decayed, whatever their rank.
DECAYED_NAMES = ('kernel', 'embedding')


def decay_mask(params):
  """True for the leaves weight decay applies to, decided by name (``DECAYED_NAMES``)."""
  def decayed(path, _):
    name = getattr(path[-1], 'key', getattr(path[-1], 'name', None))
    return name in DECAYED_NAMES
  return jax.tree_util.tree_map_with_path(decayed, params)


class ScaleByBertAdamState(NamedTuple):
  """Google BERT's Adam moments: mu = m, nu = v, each shaped as the parameters."""
  mu: optax.Updates
  nu: optax.Updates


def scale_by_bert_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6
                       ) -> optax.GradientTransformation:
  """AdamWeightDecayOptimizer's step direction, without bias correction:
  m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, update = m / (sqrt(v) + eps)."""
  def init(params):
    return ScaleByBertAdamState(mu=optax.tree.zeros_like(params),
                                nu=optax.tree.zeros_like(params))

  def update(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, ScaleByBertAdamState(mu=mu, nu=nu)

  return optax.GradientTransformation(init, update)


def make_optimizer(opt: Mapping[str, Any] | OptimizerConfig, num_train_steps: int,
                   emb_dim: int | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optax transformation, schedule) for ``config.optimizer`` (a mapping's missing fields
  take their defaults)."""
  opt = OptimizerConfig.of(opt)
  schedule = make_schedule(opt, num_train_steps, emb_dim)
  chain = []
  if opt.weight_decay_mode == 'l2' and opt.weight_decay:  # T2T's: in the gradient, first
    chain.append(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask))
  if opt.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'bert_adamw':
    chain += [scale_by_bert_adam(opt.b1, opt.b2, opt.eps),
              optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
              optax.scale_by_learning_rate(schedule)]
  else:
    decoupled = opt.name == 'adamw' and opt.weight_decay_mode == 'decoupled'
    chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay if decoupled else 0.0,
                             mask=decay_mask))
  return optax.chain(*chain), schedule
