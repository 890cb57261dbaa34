r"""What the heads of a trained LM attend to (``python analyze.py --workdir=DIR``).

On the first ``num_rows`` rows of the run's own eval split, for every layer and head of the
TransformerLM, each query i's distribution P_i over the keys it may see (j <= i, in its own
document) gives three numbers, each averaged over the queries of those rows:

  entropy        -sum_j P_ij log P_ij, in nats      (log(i + 1) for uniform causal attention)
  mean_distance  sum_j P_ij |i - j|                (i / 2 uniform; 0 all on the diagonal)
  local_share    sum of P_ij over i - j < 8          (the last 8 positions; 1 on the diagonal)

A query the model lets attend nowhere (padding: segment id 0) is left out, and a key it
masks gets weight 0, exactly as in training. The weights are recomputed from the trained
parameters by a pure function (``attention_weights``): the model's blocks run in order, and
each layer's own query and key projections are applied to that layer's input (after its
LayerNorm with norm='pre') as ``fixed_head.nn.attention`` does,
P = softmax(Q K^T / sqrt(d_p)) in float32; the training path is not touched.

Files: ``DIR/attention_stats.csv`` (one row per layer and head: ``COLUMNS``) and
``DIR/attention_stats.png`` (mean distance and local share per head, one line per layer,
beside what uniform causal attention over a row of n positions gives: no locality). The
rule: nothing else is written, and a file already at either path is replaced only when it
is this analysis's own earlier output (the csv with this header, the png with this
analysis's marker in its metadata); anything else there is refused, never overwritten.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fixed_head import data as data_lib
from fixed_head import files
from fixed_head.config import ModelConfig
from fixed_head.data import vocab
from fixed_head.errors import UsageError
from fixed_head.experiments import figures
from fixed_head.nn import attention as attn
from fixed_head.nn import attention_op, masks
from fixed_head.nn import layers
from fixed_head.train import checkpoints, run_record, trainer

Array = jax.Array

WINDOW = 8  # local_share: keys j with i - j < WINDOW
STATS = ('entropy', 'mean_distance', 'local_share')
COLUMNS = ('layer', 'head', *STATS, 'n', 'd_p', 'heads', 'num_rows', 'step', 'variant',
           'seed')
CSV = 'attention_stats.csv'
PNG = 'attention_stats.png'
PNG_MARKER = 'fixed_head attention_stats'  # the png's Description: what may be replaced
WEIGHT_BYTES = 1 << 26  # float32 bytes of one layer's [b, h, n, n] weights per batch


# ---------------------------------------------------------------------------------------
# The weights, recomputed
# ---------------------------------------------------------------------------------------


def layer_blocks(stack: layers.TransformerStack) -> Iterator[layers.TransformerBlock]:
  """The stack's blocks in order; with scan_layers each is cut out of the stacked one."""
  if not stack.config.scan_layers:
    yield from stack.blocks
    return
  graphdef, state = nnx.split(stack.blocks)
  for layer in range(stack.config.num_layers):
    yield nnx.merge(graphdef, jax.tree.map(lambda a, layer=layer: a[layer], state))


def head_weights(attention: attn.MultiHeadAttention, x: Array, mask: Array | None) -> Array:
  """P = softmax(Q K^T / sqrt(d_p)) of every head: x [b, n, d], mask bool [b or 1, 1, n, n]
  (True = may attend; None: nothing masked) -> [b, h, n, n] float32. Rows that may attend
  nowhere are zeros, as the model's output is there."""
  weights = attention_op.attention_weights(attention.query(x), attention.key(x), mask,
                                           attention.precision)  # the model's own product
  if mask is None:
    return weights
  return jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)


def attention_weights(model, tokens: Array, *, positions: Array | None = None,
                      segment_ids: Array | None = None) -> tuple[list[Array], Array]:
  """The attention weights of a TransformerLM's every layer, deterministically (no dropout).

  tokens, positions, segment_ids: [b, n] int (as ``TransformerLM.__call__``). Returns
  ([P of layer 0, 1, ...], each [b, h, n, n] float32, and the mask [b or 1, 1, n, n] bool
  the model attends under: causal, within documents, never from or to padding).
  """
  config = model.config
  layers.check_length(tokens, config)
  n = tokens.shape[1]
  positions = layers.default_positions(tokens) if positions is None else positions
  mask = masks.SegmentMask(segment_ids, causal=True)
  dense = mask.dense(n, n)
  x = layers.embed_inputs(tokens, positions, model.token_embed, model.position_embed, config)
  weights = []
  for block in layer_blocks(model.decoder):
    inputs = x if config.norm == 'post' else block.attention_norm(x)
    weights.append(head_weights(block.attention, inputs, dense))
    x = block(x, mask=mask, deterministic=True)
  return weights, dense


# ---------------------------------------------------------------------------------------
# The statistics
# ---------------------------------------------------------------------------------------


def query_stats(weights: Array, window: int = WINDOW) -> dict[str, Array]:
  """Per query: weights [..., n, n] (row i: query i's distribution over keys j) ->
  {'entropy', 'mean_distance', 'local_share'}, each [..., n]. Zero weights add nothing
  (0 log 0 = 0)."""
  weights = jnp.asarray(weights)
  n = weights.shape[-1]
  i = jnp.arange(n)[:, None]
  j = jnp.arange(n)[None, :]
  safe = jnp.where(weights > 0, weights, 1.0)
  return {
      'entropy': -jnp.sum(jnp.where(weights > 0, weights * jnp.log(safe), 0.0), axis=-1),
      'mean_distance': jnp.sum(weights * jnp.abs(i - j), axis=-1),
      'local_share': jnp.sum(jnp.where((i - j >= 0) & (i - j < window), weights, 0.0),
                             axis=-1),
  }


def uniform_weights(mask: Array) -> Array:
  """Uniform attention over the allowed keys: mask bool [..., n, n] -> float32, rows with
  no allowed key zeros."""
  mask = jnp.asarray(mask, jnp.float32)
  return mask / jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1.0)


def uniform_causal(n: int, window: int = WINDOW) -> dict[str, float]:
  """The statistics of uniform causal attention over one full row of n positions, averaged
  over its n queries, exactly: what no locality at all gives. Query i has entropy log(i + 1),
  distance i / 2 (so the mean distance is (n - 1) / 4) and local share min(i + 1, 8) / (i + 1)."""
  i = np.arange(n, dtype=np.float64)
  return {'entropy': float(np.mean(np.log(i + 1))), 'mean_distance': (n - 1) / 4,
          'local_share': float(np.mean(np.minimum(i + 1, window) / (i + 1)))}


def batch_sums(model, batch: dict[str, Array]) -> dict[str, Array]:
  """Sums over a batch's queries: batch {'tokens', 'positions', 'segment_ids'} [b, n] ->
  {stat: [layers, h]} (the model's weights), {'uniform_' + stat: []} (uniform attention
  over the same allowed keys) and 'queries' (how many queries may attend somewhere)."""
  weights, mask = attention_weights(model, batch['tokens'], positions=batch['positions'],
                                    segment_ids=batch['segment_ids'])
  valid = jnp.any(mask, axis=-1).astype(jnp.float32)  # [b or 1, 1, n]
  valid = jnp.broadcast_to(valid, (batch['tokens'].shape[0], *valid.shape[1:]))
  sums = {stat: [] for stat in STATS}
  for layer in weights:
    for stat, values in query_stats(layer).items():  # [b, h, n]
      sums[stat].append(jnp.sum(values * valid, axis=(0, 2)))
  out = {stat: jnp.stack(values) for stat, values in sums.items()}
  for stat, values in query_stats(uniform_weights(mask)).items():  # [b or 1, 1, n]
    out[f'uniform_{stat}'] = jnp.sum(jnp.broadcast_to(values, valid.shape) * valid)
  out['queries'] = jnp.sum(valid)
  return out


# ---------------------------------------------------------------------------------------
# A workdir
# ---------------------------------------------------------------------------------------


def restore(workdir: str, step: int | None = None) -> tuple[Any, Any, int]:
  """(setup, parameters, step) of an LM run's checkpoint ``step`` (None: the latest), on
  this process's first device. UsageError, naming the flag, for a workdir that holds no
  run, no checkpoint, or a run that is not a causal LM."""
  run_record.check_run_dir(workdir)
  if not files.exists(files.join(workdir, run_record.CONFIG)):
    raise UsageError(f'--workdir={workdir} holds no {run_record.CONFIG}: not the workdir of a '
                     'training run.')
  config = run_record.load_config(workdir)
  task, model_type = config.task.get('name'), config.model.get('model_type')
  if task != 'lm' or model_type != 'lm':
    raise UsageError(f'--workdir={workdir} holds a {task!r} run (model_type {model_type!r}): '
                     "attention statistics are for causal LM runs (task 'lm').")
  config.mesh.update(dict(data=-1, fsdp=1, tensor=1))  # any mesh's checkpoint fits one device
  # The einsum reference, which every fused kernel matches, runs on any backend.
  config.model.attention_impl = 'xla'
  setup = trainer.build_setup(config, jax.local_devices()[:1])
  try:
    step, params = checkpoints.load_params(workdir, step, setup.abstract_state['params'],
                                           field='--step')
  except UsageError as e:
    if step is not None:
      raise
    raise UsageError(f'--workdir={workdir}: {e}') from None
  return setup, params, step


def rows_per_batch(model: ModelConfig, n: int) -> int:
  """Rows per batch: one layer's float32 weights [b, h, n, n] within ``WEIGHT_BYTES``."""
  return int(max(1, min(64, WEIGHT_BYTES // (4 * model.num_heads * n * n))))


def measure(setup, params, workdir: str, num_rows: int) -> dict[str, Any]:
  """Averages over the queries of the first ``num_rows`` eval rows: {stat: [layers, h]},
  {'uniform_' + stat: float}, 'queries', 'num_rows' and 'n'."""
  config = setup.config
  tokenizer = vocab.for_run(config, workdir, train=False)  # the run's, never trained here
  source = data_lib.build_source(config.data, 'eval', tokenizer=tokenizer)
  total = data_lib.num_eval_rows(source, num_rows)
  if total == 0:
    raise UsageError(f'--workdir={workdir}: the eval split of its data holds no rows.')
  n = int(config.data.seq_len)
  step = jax.jit(lambda p, batch: batch_sums(setup.model_of(p), batch))
  totals: dict[str, np.ndarray] = {}
  for batch in data_lib.eval_batches(source, rows_per_batch(setup.model_config, n), total):
    tokens = np.asarray(batch['tokens'], np.int32)
    inputs = {'tokens': tokens,
              'positions': np.asarray(batch.get('positions', np.broadcast_to(
                  np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)), np.int32),
              'segment_ids': np.asarray(batch.get('segment_ids', np.ones_like(tokens)),
                                        np.int32)}
    for key, value in jax.device_get(step(params, inputs)).items():
      totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64)
  queries = float(totals.pop('queries'))
  if queries == 0:
    raise UsageError(f'--workdir={workdir}: its first {total} eval rows are all padding.')
  out = {key: value / queries for key, value in totals.items()}
  out.update(queries=queries, num_rows=total, n=n)
  return out


def stat_rows(measured: dict[str, Any], model: ModelConfig, step: int,
              seed: int) -> list[dict[str, Any]]:
  """One csv row per layer and head (``COLUMNS``)."""
  rows = []
  for layer in range(model.num_layers):
    for head in range(model.num_heads):
      row = {'layer': layer, 'head': head}
      row.update({stat: round(float(measured[stat][layer, head]), 6) for stat in STATS})
      row.update(n=measured['n'], d_p=model.resolved_head_size, heads=model.num_heads,
                 num_rows=measured['num_rows'], step=step,
                 variant='fixed' if model.is_fixed_head else 'baseline', seed=seed)
      rows.append(row)
  return rows


def check_replaceable(path: str, ours: Callable[[bytes], bool]) -> None:
  """UsageError unless ``path`` is absent or this analysis's own earlier output."""
  if files.exists(path) and not (files.is_file(path) and ours(files.read_bytes(path))):
    raise UsageError(f'{path} exists and is not an earlier output of analyze.py: move it '
                     'away, it is never overwritten.')


def _is_our_csv(data: bytes) -> bool:
  return data.decode('utf-8', 'replace').split('\n', 1)[0].strip() == ','.join(COLUMNS)


def _is_our_png(data: bytes) -> bool:
  return data.startswith(b'\x89PNG') and PNG_MARKER.encode() in data


def plot(rows: Sequence[dict[str, Any]], measured: dict[str, Any], title: str,
         footer: str) -> bytes:
  """Mean distance and local share against the head, one line per layer, with uniform
  causal attention over a full row (and over these rows' allowed keys) as references."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  n = measured['n']
  full = uniform_causal(n)
  fig = Figure(figsize=(9, 4.2))
  panels = fig.subplots(1, 2)
  labels = {'mean_distance': 'mean distance |i - j| (positions)',
            'local_share': f'share of attention on the last {WINDOW} positions'}
  for ax, stat in zip(panels, ('mean_distance', 'local_share')):
    for layer in sorted({r['layer'] for r in rows}):
      mine = [r for r in rows if r['layer'] == layer]
      ax.plot([r['head'] for r in mine], [r[stat] for r in mine], marker='o',
              label=f'layer {layer}')
    what = '(n - 1) / 4 = ' if stat == 'mean_distance' else ''
    ax.axhline(full[stat], color='0.3', linestyle=':',
               label=f'uniform causal, n = {n}: {what}{full[stat]:.4g}')
    here = measured[f'uniform_{stat}']
    if abs(here - full[stat]) > 0.01 * abs(full[stat]):  # packed or padded rows
      ax.axhline(here, color='0.6', linestyle='--',
                 label=f'uniform over these rows\' keys: {here:.3g}')
    ax.set_xlabel('head')
    ax.set_ylabel(labels[stat])
    ax.set_xticks(sorted({r['head'] for r in rows}))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.text(0.01, 0.005, footer, fontsize=6, color='0.35', ha='left', va='bottom')
  fig.tight_layout(rect=(0, 0.03, 1, 1))
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=120, metadata={'Description': PNG_MARKER})
  return buffer.getvalue()


def table(rows: Sequence[dict[str, Any]]) -> str:
  """The rows as a Markdown table (what analyze.py prints)."""
  return figures.markdown(
      ('layer', 'head', 'entropy (nats)', 'mean distance', 'local share'),
      [(r['layer'], r['head'], f"{r['entropy']:.3f}", f"{r['mean_distance']:.2f}",
        f"{r['local_share']:.3f}") for r in rows])


def analyze(workdir: str, *, num_rows: int = 256, step: int | None = None,
            command: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Measures checkpoint ``step`` (None: the latest) of the LM run in ``workdir`` on its
  first ``num_rows`` eval rows, writes ``DIR/attention_stats.csv`` and ``.png`` (see the
  module doc for when an existing one is replaced) and prints the table.
  Returns {'rows', 'measured', 'step', 'files'}."""
  if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
    raise UsageError(f'--num_rows={num_rows!r}: must be a positive integer.')
  csv_path, png_path = files.join(workdir, CSV), files.join(workdir, PNG)
  setup, params, step = restore(workdir, step)
  check_replaceable(csv_path, _is_our_csv)
  check_replaceable(png_path, _is_our_png)
  measured = measure(setup, params, workdir, num_rows)
  model = setup.model_config
  rows = stat_rows(measured, model, step, int(setup.config.seed))
  variant = rows[0]['variant']
  title = (f'{os.path.basename(os.path.normpath(workdir))}: {variant}, {model.num_layers} '
           f'layers, h = {model.num_heads}, d_p = {model.resolved_head_size}, n = '
           f"{measured['n']}; step {step}, {measured['num_rows']} eval rows")
  files.write_atomically(csv_path, figures.to_csv(rows, COLUMNS))
  files.write_atomically(png_path, plot(rows, measured, title, figures.provenance(command)))
  full = uniform_causal(measured['n'])
  log(title)
  log(table(rows))
  log(f"uniform causal attention over a row of n = {measured['n']} (no locality): entropy "
      f"{full['entropy']:.3f}, mean distance {full['mean_distance']:.2f}, local share "
      f"{full['local_share']:.3f}; uniform over these rows' allowed keys: entropy "
      f"{measured['uniform_entropy']:.3f}, mean distance "
      f"{measured['uniform_mean_distance']:.2f}, local share "
      f"{measured['uniform_local_share']:.3f}")
  for path in (csv_path, png_path):
    log(f'wrote {path}')
  return {'rows': rows, 'measured': measured, 'step': step, 'files': [csv_path, png_path]}
