"""Optimiser and learning-rate schedule, built from ``config.optimizer``.

Schedules (s = step, w = warmup_steps, T = num_train_steps, lr = learning_rate):
  'rsqrt'     lr * min(1, s / w) / sqrt(max(s, w))   (tensor2tensor's linear warm-up +
              inverse-square-root decay, as in the paper's LM1B runs: lr = 0.1 with
              w = 10k peaks at 1e-3)
  'linear'    lr * min(1, s / w), then linear decay to 0 at T   (BERT)
  'cosine'    lr * min(1, s / w), then cosine decay to 0 at T
  'constant'  lr * min(1, s / w)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ('rsqrt', 'linear', 'cosine', 'constant')
OPTIMIZERS = ('adamw', 'adam')


def make_schedule(opt: Mapping[str, Any], num_train_steps: int) -> optax.Schedule:
  lr, warmup, name = opt['learning_rate'], opt['warmup_steps'], opt['schedule']
  if name not in SCHEDULES:
    raise ValueError(f'optimizer.schedule={name!r} is not one of {SCHEDULES}.')

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, step / warmup) if warmup > 0 else 1.0
    if name == 'rsqrt':
      return lr * warm / jnp.sqrt(jnp.maximum(step, max(warmup, 1)))
    decay_steps = max(num_train_steps - warmup, 1)
    frac = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
    if name == 'linear':
      return lr * warm * (1.0 - frac)
    if name == 'cosine':
      return lr * warm * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return lr * warm

  return schedule


def _decay_mask(params):
  """Weight decay on matrices only: not on biases, LayerNorm scales or other vectors."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(opt: Mapping[str, Any],
                   num_train_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optax transformation, schedule) for ``config.optimizer``."""
  if opt['name'] not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={opt['name']!r} is not one of {OPTIMIZERS}.")
  schedule = make_schedule(opt, num_train_steps)
  weight_decay = opt['weight_decay'] if opt['name'] == 'adamw' else 0.0
  chain = []
  if opt['grad_clip_norm']:
    chain.append(optax.clip_by_global_norm(opt['grad_clip_norm']))
  chain.append(optax.adamw(schedule, b1=opt['b1'], b2=opt['b2'], eps=opt['eps'],
                           weight_decay=weight_decay, mask=_decay_mask))
  return optax.chain(*chain), schedule
