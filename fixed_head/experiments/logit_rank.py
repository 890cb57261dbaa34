r"""How many dimensions each head's logits use, and what cutting them to rank r costs
(``python analyze.py --workdir=DIR [--ablation_ranks=4,8]``).

On the first ``num_rows`` eval rows of an LM run, every layer's logits S = Q K^T / sqrt(d_p)
[b, h, n, n] are recomputed as ``attention_stats`` does: that layer's own query and key
projections of its own input (after its LayerNorm with norm='pre'). A document's block is
the [m, m] block of S over the m queries and keys of one segment (segment id > 0) of a row,
all of it (future keys too): what the head computes before any mask. Its rank is at most
min(m, d_p) by construction (Theorem 1); the question is how much of it a head uses.

Spectrum: per row, the block of its longest segment (the first of equal ones; a row of one
document: its real positions; rows of padding only are left out). With its singular values
sigma_1 >= ... >= sigma_k, k = min(n, d_p) (zeros past m), each the mean over rows:

  erank   exp(-sum_i p_i log p_i), p_i = sigma_i / sum_j sigma_j    (Roy & Vetterli 2007)
  rank90  the smallest r with sum_{i <= r} sigma_i^2 >= 0.9 sum_i sigma_i^2 (rank99: 0.99)
  s<i>    sigma_i / sigma_1, i = 1 ... k                              (the normalised spectrum)

Ablation (``forward``): the eval loss when, in every layer and head, every document's block
of S (each segment of a packed row on its own) is replaced by its best rank-r approximation
(truncated SVD) before the causal and segment mask; the softmax, the value product, the
output projection, residuals, LayerNorms and MLP are the model's own modules. r >= min(m,
d_p) changes nothing, and r = d_p runs with no cut at all: the model's own loss. The loss is
the LM evaluator's (``losses.next_token_stats``: targets within a document), overall and
per target-position bin (``losses.position_bins``).

Files: ``DIR/logit_rank.csv`` (one row per layer and head: ``COLUMNS`` then s1 ... sk) and
``DIR/rank_ablation.csv`` (one row per r: r, loss, loss_<bin> ..., ``ABLATION_TAIL``). As
attention_stats's, a file already there is replaced only when it is this analysis's own
earlier output (recognised by its header); anything else is refused, never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fixed_head import data as data_lib
from fixed_head import files
from fixed_head.config import ModelConfig
from fixed_head.data import vocab
from fixed_head.errors import UsageError
from fixed_head.experiments import attention_stats, figures
from fixed_head.nn import attention as attn
from fixed_head.nn import masks
from fixed_head.nn import layers
from fixed_head.tasks import losses

Array = jax.Array

STATS = ('erank', 'rank90', 'rank99')
COLUMNS = ('layer', 'head', *STATS, 'block_len', 'n', 'd_p', 'heads', 'num_rows', 'step',
           'variant', 'seed')  # then s1 ... sk
ABLATION_TAIL = ('num_tokens', 'num_rows', 'n', 'd_p', 'heads', 'step', 'variant', 'seed')
CSV = 'logit_rank.csv'
ABLATION_CSV = 'rank_ablation.csv'
FLAG = '--ablation_ranks'


def segments(segment_ids: Array) -> tuple[Array, Array]:
  """segment ids [b, n] (0 = padding) -> (ordinal [b, n] int: 0, 1, ... for a row's first,
  second, ... document by first position, -1 on padding; longest [b, n] bool: the positions
  of the row's longest document, the first of equal ones; none in a row of padding)."""
  real = segment_ids > 0
  same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & real[:, :, None]  # [b, n, n]
  start = jnp.argmax(same, axis=-1)  # the first position of each position's document
  n = segment_ids.shape[1]
  starts = (start == jnp.arange(n)) & real
  ordinal = jnp.sum(starts[:, None, :] & (jnp.arange(n) < start[:, :, None]), axis=-1)
  top = jnp.argmax(jnp.sum(same, axis=-1), axis=-1)  # a position in the longest document
  longest = jnp.take_along_axis(same, top[:, None, None], axis=1)[:, 0]
  return jnp.where(real, ordinal, -1), longest


def head_logits(attention: attn.MultiHeadAttention, x: Array) -> Array:
  """S = Q K^T / sqrt(d_p) of every head, as ``attention_op.attention_weights`` computes it before
  the mask: x [b, n, d] -> float32 [b, h, n, n]."""
  query, key = attention.query(x), attention.key(x)
  query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
  logits = jnp.einsum('bqhd,bkhd->bhqk', query, key, precision=attention.precision)
  return logits.astype(jnp.float32)


def _block(logits: Array, positions: Array) -> tuple[Array, Array]:
  """(the logits [b, h, n, n] inside the block of ``positions`` [b, n] bool, zeros outside;
  that block's mask [b, 1, n, n])."""
  inside = positions[:, None, :, None] & positions[:, None, None, :]
  return jnp.where(inside, logits, 0.0), inside


def _svd(block: Array, compute_uv: bool = True):
  """jnp.linalg.svd, by LAPACK's QR-iteration gesvd on a CPU: 2x as fast as its default
  there on [64, 64] blocks."""
  qr = jax.default_backend() == 'cpu'
  return jax.lax.linalg.svd(block, full_matrices=False, compute_uv=compute_uv,
                            algorithm=jax.lax.linalg.SvdAlgorithm.QR if qr else None)


def cut_logits(logits: Array, ordinal: Array, rank) -> Array:
  """logits [b, h, n, n] with every document's block (``segments``' ordinal [b, n]: its
  queries and keys) replaced by its best rank-``rank`` approximation (truncated SVD), one
  document after another; the rest unchanged. Under a vmap over ``rank``, the SVD of
  logits that do not depend on it (layer 0) is computed once."""

  def cut(k, out):
    block, inside = _block(logits, ordinal == k)  # the uncut logits: blocks are disjoint
    u, sigma, vt = _svd(block)
    sigma = jnp.where(jnp.arange(sigma.shape[-1]) < rank, sigma, 0.0)
    return jnp.where(inside, jnp.einsum('...ik,...k,...kj->...ij', u, sigma, vt), out)

  return jax.lax.fori_loop(0, jnp.max(ordinal) + 1, cut, logits)


def forward(model, batch: dict[str, Array], rank=None) -> tuple[Array, list[Array]]:
  """A TransformerLM's output logits [b, n, V] float32 on batch {'tokens', 'positions',
  'segment_ids'} [b, n], deterministically, with every head's S cut to rank ``rank`` per
  document (None: no cut, the model's own computation); and every layer's uncut S
  [b, h, n, n]. Pure: the model's own submodules, no module changed."""
  config = model.config
  tokens = batch['tokens']
  layers.check_length(tokens, config)
  n = tokens.shape[1]
  mask = masks.SegmentMask(batch['segment_ids'], causal=True).dense(n, n)  # [b, 1, n, n]
  has_key = jnp.any(mask, axis=-1, keepdims=True)
  ordinal, _ = segments(batch['segment_ids'])
  x = layers.embed_inputs(tokens, batch['positions'], model.token_embed,
                          model.position_embed, config)
  uncut = []
  for block in attention_stats.layer_blocks(model.decoder):

    def attention(y, a=block.attention):
      logits = head_logits(a, y)
      uncut.append(logits)
      if rank is not None:
        logits = cut_logits(logits, ordinal, rank)  # the cut, then the mask
      weights = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min), axis=-1)
      value = a.value(y)
      weights = jnp.where(has_key, weights, 0.0).astype(value.dtype)
      return a.out(jnp.einsum('bhqk,bkhd->bqhd', weights, value, precision=a.precision))

    for sublayer, norm in ((attention, block.attention_norm), (block.mlp, block.mlp_norm)):
      x = norm(x + sublayer(x)) if config.norm == 'post' else x + sublayer(norm(x))
  if model.decoder.final_norm is not None:
    x = model.decoder.final_norm(x)
  logits = model.token_embed.attend(x) if model.output is None else model.output(x)
  return logits.astype(jnp.float32), uncut


def rank_stats(sigma: Array) -> dict[str, Array]:
  """sigma [..., k] (descending, >= 0) -> {'erank', 'rank90', 'rank99'} [...] and
  'spectrum' [..., k] (sigma_i / sigma_1); the module doc has the definitions."""
  sigma = jnp.asarray(sigma)
  p = sigma / jnp.maximum(jnp.sum(sigma, axis=-1, keepdims=True), 1e-30)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
  energy = jnp.cumsum(sigma**2, axis=-1)
  energy = energy / jnp.maximum(energy[..., -1:], 1e-30)
  return {'erank': jnp.exp(entropy),
          'rank90': 1 + jnp.sum(energy < 0.9, axis=-1).astype(sigma.dtype),
          'rank99': 1 + jnp.sum(energy < 0.99, axis=-1).astype(sigma.dtype),
          'spectrum': sigma / jnp.maximum(sigma[..., :1], 1e-30)}


def batch_sums(model, batch: dict[str, Array], rank, edges: tuple[int, ...]) -> dict[str, Any]:
  """Sums over a batch: the loss's ('nll_sum', 'weight_sum', 'nll_by_position',
  'weight_by_position') with S cut to ``rank`` (None: uncut); uncut also the spectrum's,
  over rows with a document: {stat: [layers, h]}, 'spectrum' [layers, h, k], 'rows', 'len'."""
  logits, uncut = forward(model, batch, rank)
  stats = losses.next_token_stats(logits, batch, position_edges=edges)
  out = {key: stats[key] for key in ('nll_sum', 'weight_sum', 'nll_by_position',
                                     'weight_by_position')}
  if rank is not None:
    return out
  _, longest = segments(batch['segment_ids'])
  rows = jnp.any(longest, axis=-1).astype(jnp.float32)  # [b]
  k = min(uncut[0].shape[-1], model.config.resolved_head_size)
  per_layer = [rank_stats(_svd(_block(s, longest)[0], compute_uv=False)[..., :k])
               for s in uncut]
  for key in (*STATS, 'spectrum'):
    out[key] = jnp.stack([jnp.einsum('b,bh...->h...', rows, p[key]) for p in per_layer])
  out.update(rows=jnp.sum(rows), len=jnp.sum(longest))
  return out


def default_ranks(d_p: int) -> tuple[int, ...]:
  """4, 8, 16, ... below d_p, and d_p."""
  return (*(1 << i for i in range(2, d_p.bit_length()) if 1 << i < d_p), d_p)


def parse_ranks(text: str | None) -> tuple[int, ...] | None:
  """``--ablation_ranks`` '4,8,16' -> (4, 8, 16); None or '' -> None (the default)."""
  if not text:
    return None
  try:
    ranks = tuple(int(r) for r in text.split(','))
  except ValueError:
    ranks = ()
  if not ranks or min(ranks) < 1:
    raise UsageError(f'{FLAG}={text}: must be positive integers separated by commas, '
                     'e.g. 4,8,16.')
  return ranks


def resolve_ranks(ranks: Sequence[int] | None, d_p: int) -> tuple[int, ...]:
  """The ranks to run, ascending, d_p (no cut) always among them; UsageError above d_p."""
  if ranks is None:
    return default_ranks(d_p)
  if max(ranks) > d_p:
    raise UsageError(f'{FLAG}={",".join(map(str, ranks))}: ranks above d_p = {d_p}; a '
                     'head\'s logits have rank <= d_p.')
  return tuple(sorted({*ranks, d_p}))


def measure(setup, params, workdir: str, num_rows: int, ranks: Sequence[int]) -> dict:
  """On the first ``num_rows`` eval rows: {'spectrum': {stat or 'spectrum': mean over rows,
  'block_len', 'rows'}, 'ablation': {r: {'loss', 'by_position', 'num_tokens'}}, 'edges',
  'num_rows', 'n'}."""
  config, model = setup.config, setup.model_config
  tokenizer = vocab.for_run(config, workdir, train=False)
  source = data_lib.build_source(config.data, 'eval', tokenizer=tokenizer)
  total = data_lib.num_eval_rows(source, num_rows)
  if total == 0:
    raise UsageError(f'--workdir={workdir}: the eval split of its data holds no rows.')
  n, d_p = int(config.data.seq_len), model.resolved_head_size
  edges = losses.position_bins(n)
  cuts = [r for r in ranks if r < d_p]  # all at once: layer 0's SVDs shared
  sums_of = lambda p, b, r: batch_sums(setup.model_of(p), b, r, edges)
  uncut = jax.jit(lambda p, b: sums_of(p, b, None))
  cut = jax.jit(jax.vmap(sums_of, in_axes=(None, None, 0)))
  rows = max(1, attention_stats.rows_per_batch(model, n) // max(1, len(cuts)))
  sums: dict[int, dict[str, np.ndarray]] = {r: {} for r in ranks}
  for batch in data_lib.eval_batches(source, rows, total):
    tokens = np.asarray(batch['tokens'], np.int32)
    inputs = {'tokens': tokens,
              'positions': np.asarray(batch.get('positions', np.broadcast_to(
                  np.arange(n, dtype=np.int32), tokens.shape)), np.int32),
              'segment_ids': np.asarray(batch.get('segment_ids', np.ones_like(tokens)),
                                        np.int32)}
    got = {d_p: jax.device_get(uncut(params, inputs))}
    if cuts:
      per_rank = jax.device_get(cut(params, inputs, np.asarray(cuts, np.int32)))
      got.update({r: {k: v[i] for k, v in per_rank.items()} for i, r in enumerate(cuts)})
    for r, values in got.items():
      for key, value in values.items():
        sums[r][key] = sums[r].get(key, 0.0) + np.asarray(value, np.float64)
  top = sums[d_p]
  if top['rows'] == 0 or top['weight_sum'] == 0:
    raise UsageError(f'--workdir={workdir}: its first {total} eval rows are all padding.')
  spectrum = {key: top[key] / top['rows'] for key in (*STATS, 'spectrum')}
  spectrum.update(block_len=float(top['len'] / top['rows']), rows=int(top['rows']))
  ablation = {r: {'loss': float(s['nll_sum'] / s['weight_sum']),
                  'by_position': np.where(s['weight_by_position'] > 0, s['nll_by_position'],
                                          np.nan) / np.maximum(s['weight_by_position'], 1),
                  'num_tokens': int(s['weight_sum'])} for r, s in sums.items()}
  return {'spectrum': spectrum, 'ablation': ablation, 'edges': edges, 'num_rows': total,
          'n': n}


def spectrum_columns(k: int) -> tuple[str, ...]:
  return (*COLUMNS, *(f's{i}' for i in range(1, k + 1)))


def ablation_columns(labels: Sequence[str]) -> tuple[str, ...]:
  return ('r', 'loss', *(f'loss_{label}' for label in labels), *ABLATION_TAIL)


def csv_rows(measured: dict, model: ModelConfig, step: int, seed: int) -> tuple[list, list]:
  """(logit_rank.csv's rows, one per layer and head; rank_ablation.csv's, one per r)."""
  n, spectrum = measured['n'], measured['spectrum']
  run = dict(n=n, d_p=model.resolved_head_size, heads=model.num_heads,
             num_rows=measured['num_rows'], step=step,
             variant='fixed' if model.is_fixed_head else 'baseline', seed=seed)
  rows = []
  for layer in range(model.num_layers):
    for head in range(model.num_heads):
      row = {'layer': layer, 'head': head, 'block_len': round(spectrum['block_len'], 3), **run}
      row.update({s: round(float(spectrum[s][layer, head]), 6) for s in STATS})
      row.update({f's{i + 1}': round(float(v), 6)
                  for i, v in enumerate(spectrum['spectrum'][layer, head])})
      rows.append(row)
  labels = losses.position_bin_labels(measured['edges'], n)
  ablation = [{'r': r, 'loss': round(a['loss'], 6), 'num_tokens': a['num_tokens'], **run,
               **{f'loss_{b}': round(float(v), 6) for b, v in zip(labels, a['by_position'])}}
              for r, a in measured['ablation'].items()]
  return rows, ablation


def _header(data: bytes) -> list[str]:
  return data.decode('utf-8', 'replace').split('\n', 1)[0].strip().split(',')


def _is_spectrum_csv(data: bytes) -> bool:
  head = _header(data)
  return len(head) > len(COLUMNS) and head == list(spectrum_columns(len(head) - len(COLUMNS)))


def _is_ablation_csv(data: bytes) -> bool:
  head = _header(data)
  bins = head[2:-len(ABLATION_TAIL)]
  return (bool(bins) and all(c.startswith('loss_') for c in bins)
          and head == list(ablation_columns([c[len('loss_'):] for c in bins])))


def check(workdir: str, model: ModelConfig, ranks: Sequence[int] | None) -> tuple[int, ...]:
  """UsageError for a file in the way (not this analysis's earlier output) or a rank above
  d_p; returns the ranks to run (``resolve_ranks``). Writes nothing."""
  # pylint: disable=protected-access
  attention_stats.check_replaceable(files.join(workdir, CSV), _is_spectrum_csv)
  attention_stats.check_replaceable(files.join(workdir, ABLATION_CSV), _is_ablation_csv)
  return resolve_ranks(ranks, model.resolved_head_size)


def tables(rows: Sequence[dict], ablation: Sequence[dict]) -> tuple[str, str]:
  """The two csvs' rows as Markdown tables (what analyze.py prints)."""
  k = sum(c.startswith('s') and c[1:].isdigit() for c in rows[0])
  shown = sorted({*(1 << i for i in range(1, k.bit_length()) if 1 << i <= k), k} - {1})
  spectrum = figures.markdown(
      ('layer', 'head', 'erank', 'rank90', 'rank99', *(f'σ{i}/σ1' for i in shown)),
      [(r['layer'], r['head'], f"{r['erank']:.2f}", f"{r['rank90']:.2f}",
        f"{r['rank99']:.2f}", *(f"{r[f's{i}']:.3f}" for i in shown)) for r in rows])
  bins = [c for c in ablation[0] if c.startswith('loss_')]
  uncut = ablation[-1]['loss']
  cuts = figures.markdown(
      ('r', 'loss', 'loss - uncut', *(f't = {c[5:]}' for c in bins)),
      [(a['r'], f"{a['loss']:.4f}", f"{a['loss'] - uncut:+.4f}",
        *(f'{a[c]:.3f}' for c in bins)) for a in ablation])
  return spectrum, cuts


def analyze(workdir: str, *, num_rows: int = 256, step: int | None = None,
            ranks: Sequence[int] | None = None, restored=None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
  """Measures checkpoint ``step`` (None: the latest) of the LM run in ``workdir`` (or
  ``restored``, what ``attention_stats.restore`` returned) on its first ``num_rows`` eval
  rows, writes DIR/logit_rank.csv and DIR/rank_ablation.csv and prints both tables.
  Returns {'rows', 'ablation', 'step', 'files'}."""
  if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
    raise UsageError(f'--num_rows={num_rows!r}: must be a positive integer.')
  setup, params, step = restored or attention_stats.restore(workdir, step)
  model = setup.model_config
  ranks = check(workdir, model, ranks)
  measured = measure(setup, params, workdir, num_rows, ranks)
  rows, ablation = csv_rows(measured, model, step, int(setup.config.seed))
  paths = [files.join(workdir, CSV), files.join(workdir, ABLATION_CSV)]
  k = measured['spectrum']['spectrum'].shape[-1]
  labels = losses.position_bin_labels(measured['edges'], measured['n'])
  files.write_atomically(paths[0], figures.to_csv(rows, spectrum_columns(k)))
  files.write_atomically(paths[1], figures.to_csv(ablation, ablation_columns(labels)))
  spectrum, cuts = tables(rows, ablation)
  log(f"logit rank, d_p = {model.resolved_head_size}, n = {measured['n']}, step {step}, "
      f"{measured['num_rows']} eval rows (mean block length m = "
      f"{measured['spectrum']['block_len']:.1f}):")
  log(spectrum)
  log(f'eval loss with every head\'s logits cut to rank r (r = {model.resolved_head_size}: '
      f"uncut), {ablation[0]['num_tokens']} tokens, by target position t:")
  log(cuts)
  for path in paths:
    log(f'wrote {path}')
  return {'rows': rows, 'ablation': ablation, 'step': step, 'files': paths}
