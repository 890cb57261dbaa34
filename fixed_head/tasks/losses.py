"""Next-token losses for the LM, shared by the train step and the evaluators, and the
target-position bins the LM evaluation reports its loss in.

Target position: the target at index t of a row (t = 1 ... n - 1; with packed documents its
position within its document, ``positions``) is predicted by the query at t - 1, which sees
t keys. By Theorem 1 a head of size d_p is not rank-limited there while t <= d_p.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def position_bins(seq_len: int, edges=None) -> tuple[int, ...]:
  """The lower edges of the target-position bins over t = 1 ... seq_len - 1: bin k holds
  edges[k] <= t < edges[k + 1] (the last bin: up to seq_len - 1). ``edges`` None: powers of
  two, (1, 2, 4, ...): bins 1, 2-3, 4-7, ... A given sequence must start at 1, increase and
  stay below seq_len (ValueError otherwise)."""
  if edges is None:
    edges = tuple(1 << k for k in range(max(seq_len - 1, 1).bit_length()))
  edges = tuple(edges)
  if (not edges or edges[0] != 1 or any(isinstance(e, bool) or int(e) != e for e in edges)
      or any(b <= a for a, b in zip(edges, edges[1:])) or edges[-1] >= max(seq_len, 2)):
    raise ValueError(f'position bins {list(edges)}: lower edges must be integers that start at '
                     f'1, increase, and stay below the row length {seq_len}.')
  return tuple(int(e) for e in edges)


def position_bin_labels(edges, seq_len: int) -> tuple[str, ...]:
  """'1', '2-3', '4-7', ...: each bin's first and last target position."""
  uppers = [*(e - 1 for e in edges[1:]), seq_len - 1]
  return tuple(str(lo) if lo == hi else f'{lo}-{hi}' for lo, hi in zip(edges, uppers))


def position_sums(nll: Array, weights: Array, target_positions: Array,
                  edges: tuple[int, ...]) -> dict[str, Array]:
  """Per-bin sums: nll, weights, target_positions [b, n - 1] -> {'nll_by_position',
  'weight_by_position'}, each float32 [len(edges)]. A position below edges[0] (none in a
  row) counts in no bin."""
  bins = jnp.searchsorted(jnp.asarray(edges), target_positions, side='right') - 1
  onehot = (bins[..., None] == jnp.arange(len(edges))).astype(jnp.float32)
  return {'nll_by_position': jnp.einsum('bt,btk->k', nll * weights, onehot),
          'weight_by_position': jnp.einsum('bt,btk->k', weights, onehot)}


def target_positions(batch: dict[str, Array]) -> Array:
  """int [b, n - 1]: each target's position in its document (``positions``), or its index
  in the row without them; the number of keys the query that predicts it sees."""
  if 'positions' in batch:
    return batch['positions'][:, 1:]
  tokens = batch['tokens']
  return jnp.broadcast_to(jnp.arange(1, tokens.shape[1]), (tokens.shape[0], tokens.shape[1] - 1))


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
                     label_smoothing: float = 0.0,
                     position_edges: tuple[int, ...] | None = None) -> dict[str, Array]:
  """Sums over the batch: nll, correct predictions, token count (weights) and, when the
  batch carries ``optimal_nll`` (the synthetic language), the optimal nll of the same
  targets; with ``label_smoothing`` > 0 also the smoothed cross entropy (``smoothed_sum``,
  what training minimises; the nll stays the plain one); with ``position_edges``
  (``position_bins``) the nll and token count per target-position bin (``position_sums``).
  logits: [b, n, V] for inputs batch['tokens'] [b, n]."""
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
  if position_edges:
    stats.update(position_sums(nll, weights, target_positions(batch), position_edges))
  if 'optimal_nll' in batch:
    stats['optimal_nll_sum'] = jnp.sum(batch['optimal_nll'][:, 1:] * weights)
  return stats
