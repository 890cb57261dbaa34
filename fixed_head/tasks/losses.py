"""Next-token losses for the LM, shared by the train step and the evaluators."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def is_argmax(logits: Array, labels: Array) -> Array:
  """bool [...]: whether ``labels`` [...] is ``jnp.argmax(logits [..., C], -1)``, ties going
  to the lowest index as argmax's do. Computed from the row max and the label's logit: on
  [2048, 32000] logits XLA's CPU argmax alone took 4x as long (BENCHMARKS.md)."""
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)
  best = jnp.max(logits, axis=-1, keepdims=True)
  earlier_tie = (logits == best) & (jnp.arange(logits.shape[-1]) < labels[..., None])
  return (label_logit[..., 0] == best[..., 0]) & ~jnp.any(earlier_tie, axis=-1)


def next_token_targets(batch: dict[str, Array]) -> tuple[Array, Array]:
  """targets [b, n-1] (token i + 1) and weights [b, n-1] for logits[:, :-1].

  A target counts when it is not padding and lies in the same packed document as its
  input token (``segment_ids``; 0 = padding). Without segment ids every target counts.
  """
  tokens = batch['tokens']
  targets = tokens[:, 1:]
  if 'segment_ids' in batch:
    seg = batch['segment_ids']
    weights = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
  else:
    weights = jnp.ones(targets.shape, bool)
  return targets, weights.astype(jnp.float32)


def smoothed_cross_entropy(log_probs: Array, targets: Array, label_smoothing: float) -> Array:
  """Cross entropy [...] against targets smoothed as tensor2tensor does: 1 - eps on the
  target, eps / (V - 1) on each other symbol. log_probs: [..., V]; targets: [...] int."""
  vocab = log_probs.shape[-1]
  on_target = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  off_target = jnp.sum(log_probs, axis=-1) - on_target
  return -((1.0 - label_smoothing) * on_target + label_smoothing / (vocab - 1) * off_target)


@jax.named_scope('loss')
def next_token_stats(logits: Array, batch: dict[str, Array], *,
                     label_smoothing: float = 0.0) -> dict[str, Array]:
  """Sums over the batch: nll, correct predictions, token count (weights) and, when the
  batch carries ``optimal_nll`` (the synthetic language), the optimal nll of the same
  targets; with ``label_smoothing`` > 0 also the smoothed cross entropy (``smoothed_sum``,
  what training minimises; the nll stays the plain one). logits: [b, n, V] for inputs
  batch['tokens'] [b, n]."""
  targets, weights = next_token_targets(batch)
  logits = logits[:, :-1].astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  correct = is_argmax(logits, targets).astype(jnp.float32)
  stats = {
      'nll_sum': jnp.sum(nll * weights),
      'correct_sum': jnp.sum(correct * weights),
      'weight_sum': jnp.sum(weights),
  }
  if label_smoothing:
    smoothed = smoothed_cross_entropy(log_probs, targets, label_smoothing)
    stats['smoothed_sum'] = jnp.sum(smoothed * weights)
  if 'optimal_nll' in batch:
    stats['optimal_nll_sum'] = jnp.sum(batch['optimal_nll'][:, 1:] * weights)
  return stats
