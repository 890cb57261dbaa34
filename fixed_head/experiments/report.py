"""The report of a sweep: every finished run's final evaluation in ``results.csv``, the runs
averaged over seeds in ``summary.csv``, and the paper's figures as PNG files.

Figures (each drawn when the sweep has runs for it; ``sweeps.run(..., figures=...)`` says
which runs belong to which):

  fig1_loss_vs_params.png     eval loss against parameter count, baseline and fixed   (Fig. 1;
                              the runs of figure 'params', else every configuration)
  fig3a_loss_vs_heads.png     eval loss against h at one width                         (Fig. 3a)
  fig3b_loss_vs_head_size.png eval loss against d_p, one line per h                   (Fig. 3b)
  fig4_width.png              baselines whose d_p is held by growing d with h          (Fig. 4)
  length_loss_vs_n.png        eval loss against the row length n, one line per model
  length_gap_vs_n.png         each baseline's eval loss minus the fixed-head model's at the
                              same n and seed, against n (the runs of figure 'length')
  length_attention_distance.png  mean attention distance against n per model (runs measured
                              by analyze.py, at two or more n)

Every evaluation of every finished run goes to curves.csv and curves.png
(``fixed_head.experiments.curves``). On real text (data that knows no optimum) the report
also scores a count n-gram model (``fixed_head.experiments.ngram``, Witten-Bell, orders 1 to
7, trained on the run's train split, scored on the same eval rows and targets) once per
distinct data and evaluator, kept in SWEEP_DIR/ngram_floor-<digest>.json, and writes it to
ngram_floor.md and beside each configuration in summary.md: a model above the floor has not
learned the short-range statistics, so it cannot test a long-context claim. The runs of
figure 'position' get position_effect.md and .png (``fixed_head.experiments.position_effect``).

Runs that ``analyze.py`` has measured (``attention_stats.csv`` in their workdir) are
summarised in attention_summary.md: mean attention distance, local share and entropy per
variant and n (``fixed_head.experiments.attention_summary``); their logit ranks and rank
ablation (``logit_rank.csv``, ``rank_ablation.csv``) in rank_ablation.md and .png
(``fixed_head.experiments.rank_summary``).

The plotted metric is the gap to the optimal loss where the data knows its optimum (the
synthetic language), else the eval loss. Error bars are the sample standard deviation over
seeds. Baseline and fixed-head configurations whose parameter counts agree within 2% are
marked as parameter-matched: "fixed wins with more parameters" is not the paper's claim.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from fixed_head import accounting, files, metrics
from fixed_head.config import ModelConfig
from fixed_head.errors import UsageError
from fixed_head.experiments import (attention_stats, attention_summary, curves, figures, ngram,
                                    over_seeds, position_effect, rank_summary, sweeps)
from fixed_head.train import run_record

MATCH_TOLERANCE = 0.02  # parameter counts within 2% are "matched"
EVAL_METRICS = ('loss', 'perplexity', 'accuracy', 'gap_to_optimal')
CONFIG_COLUMNS = ('variant', 'emb_dim', 'num_heads', 'head_size', 'num_layers', 'mlp_dim',
                  'seq_len', 'vocab_size')
RESULT_COLUMNS = ('run', 'figures', *CONFIG_COLUMNS, 'seed', 'params', 'attention_params',
                  'train_flops_per_token', 'steps', *(f'eval_{m}' for m in EVAL_METRICS),
                  'wall_seconds')


def _evaluator(config) -> str:
  """The evaluator whose numbers the report shows: 'valid' if there is one, else the first."""
  names = list(config.get('evals', {}).keys())
  if not names:
    raise UsageError('the run has no evaluators (config.evals is empty): nothing to report.')
  return 'valid' if 'valid' in names else names[0]


def run_result(workdir: str, in_figures: Sequence[str]) -> dict[str, Any]:
  """One finished run's row of results.csv; ``in_figures``: those the sweep plan gives it
  now."""
  with open(os.path.join(workdir, sweeps.DONE), encoding='utf-8') as f:
    done = json.load(f)
  config = run_record.load_config(workdir)
  model = ModelConfig.from_mapping(config.model)
  step, evals = over_seeds.final_evals(workdir)
  evaluator = _evaluator(config)
  row = {
      'run': done['name'],
      'figures': ';'.join(in_figures),
      'variant': 'fixed' if model.is_fixed_head else 'baseline',
      'emb_dim': model.emb_dim,
      'num_heads': model.num_heads,
      'head_size': model.resolved_head_size,
      'num_layers': model.num_layers,
      'mlp_dim': model.mlp_dim,
      'seq_len': config.data.seq_len,
      'vocab_size': model.vocab_size,
      'seed': config.seed,
      'params': accounting.count_params(model),
      'attention_params': accounting.param_breakdown(model)['attention'],
      'train_flops_per_token': accounting.flops_per_token(model, config.data.seq_len).training,
      'steps': step,
      'wall_seconds': round(done['wall_seconds'], 1),
  }
  for metric in EVAL_METRICS:
    row[f'eval_{metric}'] = evals.get(f'{evaluator}/{metric}', '')
  return row


def collect(sweep_dir: str) -> tuple[list[dict[str, Any]], list[str]]:
  """(rows of the finished runs, names of the runs not finished yet)."""
  path = os.path.join(sweep_dir, sweeps.PLAN)
  if not os.path.exists(path):
    raise UsageError(f'--workdir={sweep_dir} holds no {sweeps.PLAN}: it is not a sweep '
                     'directory (python sweep.py --config=... --workdir=... makes one).')
  with open(path, encoding='utf-8') as f:
    plan = json.load(f)
  rows, missing = [], []
  for entry in plan['runs']:
    workdir = os.path.join(sweep_dir, entry['name'])
    if sweeps.is_done(workdir):
      rows.append(run_result(workdir, entry['figures']))
    else:
      missing.append(entry['name'])
  return rows, missing


def _key(row: dict[str, Any]) -> tuple:
  return tuple(row[c] for c in CONFIG_COLUMNS)


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per configuration: mean and std over its seeds, and its parameter matches."""
  groups: dict[tuple, list[dict[str, Any]]] = collections.defaultdict(list)
  for row in rows:
    groups[_key(row)].append(row)
  summary = []
  for members in groups.values():
    first = members[0]
    entry = {c: first[c] for c in CONFIG_COLUMNS}
    entry['figures'] = ';'.join(sorted({f for m in members for f in m['figures'].split(';')
                                        if f}))
    for c in ('params', 'attention_params', 'train_flops_per_token', 'steps'):
      entry[c] = first[c]
    entry['seeds'] = len(members)
    for metric in EVAL_METRICS:
      values = [m[f'eval_{metric}'] for m in members if m[f'eval_{metric}'] != '']
      mean, std = metrics.mean_and_spread(values) if values else ('', '')
      entry[f'{metric}_mean'], entry[f'{metric}_std'] = mean, std
    entry['wall_seconds_mean'] = round(metrics.mean_and_spread(
        [m['wall_seconds'] for m in members])[0], 1)
    summary.append(entry)
  for entry in summary:
    entry['label'] = label(entry)
  for entry in summary:
    entry['param_match'] = ';'.join(
        other['label'] for other in summary
        if other['variant'] != entry['variant'] and other['seq_len'] == entry['seq_len']
        and abs(other['params'] - entry['params']) <= MATCH_TOLERANCE * entry['params'])
  summary.sort(key=lambda e: (e['variant'], e['emb_dim'], e['num_heads'], e['head_size']))
  return summary


def label(entry: dict[str, Any]) -> str:
  return f"{entry['variant']} d={entry['emb_dim']} h={entry['num_heads']} " \
         f"d_p={entry['head_size']}"


def metric_of(summary: Sequence[dict[str, Any]]) -> str:
  """'gap_to_optimal' when every configuration has it, else 'loss'."""
  if summary and all(e['gap_to_optimal_mean'] != '' for e in summary):
    return 'gap_to_optimal'
  return 'loss'


def _fmt(value: Any, digits: int = 4) -> str:
  return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


FLOOR_ORDER = 5  # the n-gram whose loss stands beside every real-text result


def table(summary: Sequence[dict[str, Any]], floors: dict[int, dict] | None = None) -> str:
  """A Markdown table of the summary (what RESULTS.md quotes); with ``floors`` ({n: ngram
  result}) a column with the 5-gram's loss on the same targets."""
  metric = metric_of(summary)
  lengths = len({e['seq_len'] for e in summary}) > 1  # then a column n, and rows by n
  head = ('variant', *(('n',) if lengths else ()), 'd', 'h', 'd_p', 'params',
          f'eval {metric} (mean ± std)', 'perplexity', 'seeds', 'parameter-matched with',
          *((f'{FLOOR_ORDER}-gram floor',) if floors else ()))
  entries = sorted(summary, key=lambda e: e['seq_len']) if lengths else summary

  def floor(e):
    result = (floors or {}).get(e['seq_len'])
    return (f"{result['orders'][FLOOR_ORDER]['loss']:.4f}",) if result else ('-',)

  return figures.markdown(head, [
      (e['variant'], *((e['seq_len'],) if lengths else ()), e['emb_dim'], e['num_heads'],
       e['head_size'], f"{e['params']:,}",
       f"{_fmt(e[metric + '_mean'])} ± {_fmt(e[metric + '_std'])}",
       _fmt(e['perplexity_mean'], 3), e['seeds'], e['param_match'] or '-',
       *(floor(e) if floors else ()))
      for e in entries])


def _evaluated_data(workdir: str) -> tuple[str, dict]:
  """(digest, the run's data config and report evaluator): what its n-gram floor depends
  on."""
  config = run_record.load_config(workdir)
  evaluator = _evaluator(config)
  saved = run_record.as_dict(config)
  what = {'data': saved['data'], 'eval': saved['evals'][evaluator], 'evaluator': evaluator}
  digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
  return digest[:16], what


def ngram_floors(sweep_dir: str, rows: Sequence[dict[str, Any]],
                 log: Callable[[str], None] = print) -> dict[int, dict]:
  """{n: n-gram floor result} for the real-text runs of ``rows`` (none on the synthetic
  language), computed once per distinct data and evaluator and kept in
  SWEEP_DIR/ngram_floor-<digest>.json. Runs of one n with different data keep the first."""
  floors: dict[int, dict] = {}
  for row in rows:
    if row['eval_gap_to_optimal'] != '' or row['seq_len'] in floors:
      continue
    workdir = os.path.join(sweep_dir, row['run'])
    digest, what = _evaluated_data(workdir)
    path = os.path.join(sweep_dir, f'ngram_floor-{digest}.json')
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        result = json.load(f)
    else:
      log(f'n-gram floor for n = {row["seq_len"]} (the data of {row["run"]}) ...')
      result = ngram.floor_for_run(workdir, evaluator=what['evaluator'], log=log)
      files.write_atomically(path, json.dumps(result, indent=1) + '\n')
    result['orders'] = {int(k): v for k, v in result['orders'].items()}
    floors[row['seq_len']] = result
  return floors


def floor_table(floors: dict[int, dict]) -> str:
  """The n-gram floors, one row per n and order: loss and loss by position bin."""
  parts = []
  for n, result in sorted(floors.items()):
    orders = result['orders']
    labels = list(next(iter(orders.values()))['loss_by_position'])
    parts.append(f"n = {n}: {result['num_eval_tokens']:,} eval targets, "
                 f"{result['num_train_tokens']:,} train tokens\n\n" + figures.markdown(
                     ('order', 'loss', *(f't = {b}' for b in labels)),
                     [(k, f"{o['loss']:.4f}", *(f"{o['loss_by_position'][b]:.4f}"
                                                 for b in labels))
                      for k, o in sorted(orders.items())]))
  return '\n\n'.join(parts)


def curve_rows(sweep_dir: str, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Every evaluation of every finished run (``curves.run_curve``), with the run's
  configuration in front."""
  out = []
  for row in rows:
    config = run_record.load_config(os.path.join(sweep_dir, row['run']))
    lead = {k: row[k] for k in ('run', *CONFIG_COLUMNS, 'seed')}
    out += [{**lead, **point} for point in curves.run_curve(
        os.path.join(sweep_dir, row['run']), _evaluator(config))]
  return out


def position_runs(sweep_dir: str, rows: Sequence[dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], list[str]]:
  """(the runs of figure 'position' with their final loss and token count by position bin,
  the names of those whose final evaluation has none: run eval.py on them)."""
  runs, unmeasured = [], []
  for row in rows:
    if position_effect.FIGURE not in row['figures'].split(';'):
      continue
    workdir = os.path.join(sweep_dir, row['run'])
    evaluator = _evaluator(run_record.load_config(workdir))
    _, evals = over_seeds.final_evals(workdir)
    found = {}
    for what in ('loss', 'tokens'):
      prefix = f'{evaluator}/{what}_by_position/'
      found[what] = {k[len(prefix):]: v for k, v in evals.items() if k.startswith(prefix)}
    if not found['loss']:
      unmeasured.append(row['run'])
      continue
    runs.append({**{k: row[k] for k in ('emb_dim', 'num_heads', 'seq_len', 'head_size',
                                         'seed')}, 'bins': found['loss'],
                 'tokens': found['tokens']})
  return runs, unmeasured


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

def _figure(title: str, xlabel: str, ylabel: str, footer: str):
  return figures.new_figure(title, xlabel, ylabel, footer, size=(7, 4.6), footer_y=0.005)


def _log2_axis(ax, values) -> None:
  """A base-2 log x axis ticked at the values themselves (1, 2, 4, ... not 2^k)."""
  ax.set_xscale('log', base=2)
  ticks = sorted(set(values))
  ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
  ax.minorticks_off()


def _line(ax, entries, x: Callable[[dict], float], metric: str, **style) -> None:
  entries = sorted(entries, key=x)
  ax.errorbar([x(e) for e in entries], [e[f'{metric}_mean'] for e in entries],
              yerr=[e[f'{metric}_std'] for e in entries], capsize=3, marker='o', **style)


def _save(fig, path: str, entries, metric: str) -> str:
  values = [e[f'{metric}_mean'] for e in entries]
  if values and min(values) > 0 and max(values) / min(values) > 10:
    fig.axes[0].set_yscale('log')  # gaps spanning decades
  files.write_atomically(path, figures.png(fig, bottom=0.03))
  return path


def _ylabel(metric: str) -> str:
  return 'eval gap to optimal loss (nats)' if metric == 'gap_to_optimal' else 'eval loss (nats)'


def _in(figure: str, entries):
  return [e for e in entries if figure in e['figures'].split(';')]


def plot_all(summary: Sequence[dict[str, Any]], output_dir: str, footer: str,
             name: str) -> list[str]:
  """Writes every figure the summary has runs for; returns their paths."""
  metric = metric_of(summary)
  written = []
  colors = {'baseline': 'tab:blue', 'fixed': 'tab:red'}
  n = summary[0]['seq_len'] if summary else 0

  heads = _in('heads', summary)
  if heads:
    d = heads[0]['emb_dim']
    fig, ax = _figure(f'{name}: eval vs heads at d = {d} (n = {n})', 'heads h', _ylabel(metric),
                      footer)
    for variant in ('baseline', 'fixed'):
      entries = [e for e in heads if e['variant'] == variant]
      if entries:
        what = 'baseline (d_p = d / h)' if variant == 'baseline' else (
            f"fixed (d_p = {entries[0]['head_size']})")
        _line(ax, entries, lambda e: e['num_heads'], metric, color=colors[variant], label=what)
    _log2_axis(ax, [e['num_heads'] for e in heads])
    ax.axvline(d / n, color='0.5', linestyle=':', label=f'h = d / n = {d / n:g}')
    ax.legend()
    written.append(_save(fig, os.path.join(output_dir, 'fig3a_loss_vs_heads.png'), heads,
                         metric))

  head_size = _in('head_size', summary)
  if head_size:
    fig, ax = _figure(f'{name}: eval vs head size (fixed-head models, n = {n})', 'head size d_p',
                      _ylabel(metric), footer)
    for h in sorted({e['num_heads'] for e in head_size}):
      _line(ax, [e for e in head_size if e['num_heads'] == h], lambda e: e['head_size'], metric,
            label=f'h = {h}')
    _log2_axis(ax, [e['head_size'] for e in head_size] + [n])
    ax.axvline(n, color='0.5', linestyle=':', label=f'd_p = n = {n}')
    ax.legend()
    written.append(_save(fig, os.path.join(output_dir, 'fig3b_loss_vs_head_size.png'),
                         head_size, metric))

  width = [e for e in _in('width', summary) if e['variant'] == 'baseline']
  if width:
    d_p = width[0]['head_size']
    fig, ax = _figure(f'{name}: baseline with d_p held at {d_p} (d = {d_p} h) vs fixed',
                      'heads h', _ylabel(metric), footer)
    _line(ax, width, lambda e: e['num_heads'], metric, color=colors['baseline'],
          label=f'baseline, d = {d_p} h')
    fixed = [e for e in heads if e['variant'] == 'fixed']
    if fixed:
      _line(ax, fixed, lambda e: e['num_heads'], metric, color=colors['fixed'],
            label=f"fixed, d = {fixed[0]['emb_dim']}, d_p = {fixed[0]['head_size']}")
    _log2_axis(ax, [e['num_heads'] for e in width + fixed])
    ax.legend()
    written.append(_save(fig, os.path.join(output_dir, 'fig4_width.png'), width + fixed,
                         metric))

  # The runs of figure 'params', else every configuration if they share one n.
  one_length = len({e['seq_len'] for e in summary}) == 1
  matched = _in('params', summary) or (list(summary) if one_length else [])
  if matched:
    fig, ax = _figure(f'{name}: eval vs parameters', 'parameters', _ylabel(metric), footer)
    for variant in ('baseline', 'fixed'):
      entries = [e for e in matched if e['variant'] == variant]
      if not entries:
        continue
      _line(ax, entries, lambda e: e['params'], metric, color=colors[variant], label=variant)
      for e in entries:
        ax.annotate(f"d={e['emb_dim']} h={e['num_heads']} d_p={e['head_size']}",
                    (e['params'], e[f'{metric}_mean']), fontsize=7, xytext=(4, 4),
                    textcoords='offset points')
    for e in matched:  # parameter-matched pairs, joined once (baseline -> fixed)
      if e['variant'] == 'baseline':
        for other in matched:
          if other['label'] in e['param_match'].split(';'):
            ax.plot([e['params'], other['params']],
                    [e[f'{metric}_mean'], other[f'{metric}_mean']], color='0.6',
                    linestyle='--', linewidth=0.8)
    ax.set_xscale('log')
    ax.plot([], [], color='0.6', linestyle='--', linewidth=0.8,
            label=f'parameter-matched (within {MATCH_TOLERANCE:.0%})')
    ax.legend()
    written.append(_save(fig, os.path.join(output_dir, 'fig1_loss_vs_params.png'), matched,
                         metric))
  return written


def model_label(row: dict[str, Any]) -> str:
  """A model apart from its length n: variant, d, h, d_p (not mlp_dim, which a parameter-
  matched model may set per n)."""
  return f"{row['variant']} d={row['emb_dim']} h={row['num_heads']} d_p={row['head_size']}"


def length_gaps(rows: Sequence[dict[str, Any]], metric: str = 'loss') -> list[dict[str, Any]]:
  """The runs of figure 'length': for each baseline model and n, its eval ``metric`` minus
  the fixed-head model's at the same n and seed, as mean and sample std over the seeds both
  finished: [{'model', 'seq_len', 'gap_mean', 'gap_std', 'seeds'}], sorted by model and n."""
  runs = [r for r in rows if 'length' in r['figures'].split(';') and r[f'eval_{metric}'] != '']
  fixed = {(r['seq_len'], r['seed']): r[f'eval_{metric}'] for r in runs
           if r['variant'] == 'fixed'}
  gaps: dict[tuple, list[float]] = collections.defaultdict(list)
  for r in runs:
    if r['variant'] == 'baseline' and (r['seq_len'], r['seed']) in fixed:
      gaps[(model_label(r), r['seq_len'])].append(
          r[f'eval_{metric}'] - fixed[(r['seq_len'], r['seed'])])
  out = []
  for (model, n), values in sorted(gaps.items()):
    mean, std = metrics.mean_and_spread(values)
    out.append({'model': model, 'seq_len': n, 'gap_mean': mean, 'gap_std': std,
                'seeds': len(values)})
  return out


def plot_length(rows: Sequence[dict[str, Any]], output_dir: str, footer: str,
                name: str) -> list[str]:
  """The figures of the runs of figure 'length' (none without them); returns the paths."""
  runs = [r for r in rows if 'length' in r['figures'].split(';')]
  if not runs:
    return []
  written = []
  fig, ax = _figure(f'{name}: eval loss vs row length n', 'row length n (tokens)',
                    'eval loss (nats)', footer)
  for model in sorted({model_label(r) for r in runs}):
    entries = summarize([r for r in runs if model_label(r) == model])
    _line(ax, entries, lambda e: e['seq_len'], 'loss', label=model)
  _log2_axis(ax, [r['seq_len'] for r in runs])
  ax.legend(fontsize=8)
  path = os.path.join(output_dir, 'length_loss_vs_n.png')
  files.write_atomically(path, figures.png(fig, bottom=0.03))
  written.append(path)
  gaps = length_gaps(runs)
  if gaps:
    fig, ax = _figure(f'{name}: baseline minus fixed-head eval loss vs n',
                      'row length n (tokens)', 'eval loss gap (nats; > 0: fixed better)',
                      footer)
    for model in sorted({g['model'] for g in gaps}):
      mine = [g for g in gaps if g['model'] == model]
      ax.errorbar([g['seq_len'] for g in mine], [g['gap_mean'] for g in mine],
                  yerr=[g['gap_std'] for g in mine], capsize=3, marker='o', label=model)
    ax.axhline(0, color='0.5', linewidth=0.8)
    _log2_axis(ax, [g['seq_len'] for g in gaps])
    ax.legend(fontsize=8)
    path = os.path.join(output_dir, 'length_gap_vs_n.png')
    files.write_atomically(path, figures.png(fig, bottom=0.03))
    written.append(path)
  return written


def plot_attention_vs_n(attention: Sequence[dict[str, Any]], output_dir: str, footer: str,
                        name: str) -> str:
  """Mean attention distance against n, one line per model (h, d_p, variant), beside
  uniform causal attention's (n - 1) / 4; ``attention``: ``attention_summary.summarize``."""
  fig, ax = _figure(f'{name}: how far the heads look, vs row length n', 'row length n (tokens)',
                    'mean attention distance |i - j| (tokens)', footer)
  for key in sorted({(e['variant'], e['heads'], e['d_p']) for e in attention}):
    mine = sorted((e for e in attention if (e['variant'], e['heads'], e['d_p']) == key),
                  key=lambda e: e['n'])
    ax.errorbar([e['n'] for e in mine], [e['mean_distance_mean'] for e in mine],
                yerr=[e['mean_distance_std'] for e in mine], capsize=3, marker='o',
                label=f'{key[0]} h={key[1]} d_p={key[2]}')
  lengths = sorted({e['n'] for e in attention})
  ax.plot(lengths, [(n - 1) / 4 for n in lengths], color='0.5', linestyle=':',
          label='uniform causal attention: (n - 1) / 4')
  _log2_axis(ax, lengths)
  ax.set_yscale('log', base=2)
  ax.legend(fontsize=8)
  path = os.path.join(output_dir, 'length_attention_distance.png')
  files.write_atomically(path, figures.png(fig, bottom=0.03))
  return path


def gap_table(gaps: Sequence[dict[str, Any]]) -> str:
  """A Markdown table of ``length_gaps``."""
  return figures.markdown(('baseline model', 'n', 'baseline - fixed eval loss', 'seeds'), [
      (g['model'], g['seq_len'], f"{g['gap_mean']:+.4f} ± {g['gap_std']:.4f}", g['seeds'])
      for g in gaps])


def write_report(sweep_dir: str, output_dir: str | None = None, *,
                 command: str | None = None, log: Callable[[str], None] = print) -> dict:
  """Collects the sweep's finished runs and writes results.csv, summary.csv, summary.md and
  the figures to ``output_dir`` (default SWEEP_DIR/report). The files are derived from the
  runs and rewritten on every call. Returns {'rows', 'summary', 'missing', 'files'}."""
  rows, missing = collect(sweep_dir)
  if not rows:
    raise UsageError(f'--workdir={sweep_dir}: no run has finished yet ({len(missing)} to '
                     'train); run sweep.py first.')
  output_dir = output_dir or os.path.join(sweep_dir, 'report')
  os.makedirs(output_dir, exist_ok=True)
  summary = summarize(rows)
  footer = figures.provenance(command)
  name = os.path.basename(os.path.normpath(sweep_dir))
  summary_columns = (*CONFIG_COLUMNS, 'figures', 'params', 'attention_params',
                     'train_flops_per_token', 'steps', 'seeds',
                     *(f'{m}_{s}' for m in EVAL_METRICS for s in ('mean', 'std')),
                     'wall_seconds_mean', 'param_match')
  written = [os.path.join(output_dir, 'results.csv'), os.path.join(output_dir, 'summary.csv'),
             os.path.join(output_dir, 'summary.md')]
  files.write_atomically(written[0], figures.to_csv(rows, RESULT_COLUMNS))
  files.write_atomically(written[1], figures.to_csv(summary, summary_columns))
  floors = ngram_floors(sweep_dir, rows, log)
  files.write_atomically(written[2], table(summary, floors) + f'\n\n{footer}\n')
  written += plot_all(summary, output_dir, footer, name)
  written += plot_length(rows, output_dir, footer, name)
  written += write_curves(sweep_dir, rows, output_dir, footer, name, metric_of(summary), floors)
  if floors:
    written.append(os.path.join(output_dir, 'ngram_floor.md'))
    files.write_atomically(written[-1], floor_table(floors) + f'\n\n{footer}\n')
  written += write_position_effect(sweep_dir, rows, output_dir, footer, name, floors, log)
  log(table(summary, floors))
  gaps = length_gaps(rows)
  if gaps:
    written.append(os.path.join(output_dir, 'length_gaps.md'))
    files.write_atomically(written[-1], gap_table(gaps) + f'\n\n{footer}\n')
    log(gap_table(gaps))
  measured = [os.path.join(sweep_dir, r['run']) for r in rows
              if os.path.exists(os.path.join(sweep_dir, r['run'], attention_stats.CSV))]
  if measured:
    attention = attention_summary.summarize_workdirs(measured)
    written.append(os.path.join(output_dir, 'attention_summary.md'))
    files.write_atomically(written[-1], attention_summary.table(attention) + f'\n\n{footer}\n')
    log(attention_summary.table(attention))
    if len({e['n'] for e in attention}) > 1:
      written.append(plot_attention_vs_n(attention, output_dir, footer, name))
  ranked = rank_summary.measured([os.path.join(sweep_dir, r['run']) for r in rows])
  if ranked:
    ranks, ablation = rank_summary.summarize(ranked)
    text = rank_summary.table(ranks, ablation)
    written.append(os.path.join(output_dir, 'rank_ablation.md'))
    files.write_atomically(written[-1], text + f'\n\n{footer}\n')
    log(text)
    if ablation:
      written.append(rank_summary.plot(ablation, os.path.join(output_dir, 'rank_ablation.png'),
                                       footer, f'{name}: every head cut to rank r'))
  if missing:
    log(f'{len(missing)} of {len(rows) + len(missing)} runs have not finished: '
        f'{", ".join(missing[:5])}{" ..." if len(missing) > 5 else ""}')
  for path in written:
    log(f'wrote {path}')
  return {'rows': rows, 'summary': summary, 'missing': missing, 'files': written}


def write_curves(sweep_dir: str, rows: Sequence[dict[str, Any]], output_dir: str, footer: str,
                 name: str, metric: str, floors: dict[int, dict]) -> list[str]:
  """curves.csv and curves.png; the n-gram floors (orders 3, 5, 7) drawn when the runs
  share one n."""
  curve = curve_rows(sweep_dir, rows)
  if not curve:
    return []
  leading = ('run', *CONFIG_COLUMNS, 'seed')
  paths = [os.path.join(output_dir, curves.CSV), os.path.join(output_dir, curves.PNG)]
  files.write_atomically(paths[0], figures.to_csv(curve, curves.columns(curve, leading)))
  lines = {}
  if metric == 'loss' and len({r['seq_len'] for r in rows}) == 1 and floors:
    orders = next(iter(floors.values()))['orders']
    lines = {f'{k}-gram floor': orders[k]['loss'] for k in (3, 5, 7) if k in orders}
  curves.plot(curve, lambda r: (label(r) if len({x['seq_len'] for x in rows}) == 1 else
                                f"{label(r)} n={r['seq_len']}"),
              metric, paths[1], footer, f'{name}: eval {metric} during training', lines)
  return paths


def write_position_effect(sweep_dir: str, rows: Sequence[dict[str, Any]], output_dir: str,
                          footer: str, name: str, floors: dict[int, dict],
                          log: Callable[[str], None]) -> list[str]:
  """position_effect.md and .png for the runs of figure 'position' (none without them)."""
  runs, unmeasured = position_runs(sweep_dir, rows)
  if unmeasured:
    log(f'{len(unmeasured)} runs of figure {position_effect.FIGURE!r} have no loss by position '
        f'in their final evaluation: python eval.py --workdir={sweep_dir}/{unmeasured[0]} '
        '(and the others) adds it.')
  floor = {n: {'bins': r['orders'][FLOOR_ORDER]['loss_by_position'],
               'tokens': r['orders'][FLOOR_ORDER]['tokens_by_position']}
           for n, r in floors.items() if FLOOR_ORDER in r['orders']}
  entries = position_effect.effects(runs, floor, FLOOR_ORDER)
  if not entries:
    return []
  paths = [os.path.join(output_dir, 'position_effect.md'),
           os.path.join(output_dir, 'position_effect.png')]
  text = position_effect.table(entries)
  files.write_atomically(paths[0], text + f'\n\n{footer}\n')
  position_effect.plot(entries, paths[1], footer,
                       f'{name}: where a small head costs (loss by target position)')
  log(text)
  return paths
