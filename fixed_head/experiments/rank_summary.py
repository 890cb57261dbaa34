"""Several runs' logit ranks side by side: what ``analyze.py`` wrote in each run's
``logit_rank.csv`` and ``rank_ablation.csv`` (``fixed_head.experiments.logit_rank``), one row
per configuration (variant, n, h, d_p) and, for the ablation, per cut rank r.

Each run counts once: its effective rank and rank99 are its means over layers and heads, and
its ablation cost at r is its eval loss with every head cut to rank r minus its loss uncut
(r = d_p), overall and by target position. A row is the mean and sample standard deviation
of those over the runs (seeds) of one configuration. A head that loses nothing when cut to
r does not use more than rank r on these rows.
"""

from __future__ import annotations

import collections
import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from fixed_head import files, metrics
from fixed_head.experiments import figures, logit_rank

KEY = ('variant', 'n', 'heads', 'd_p')


def _read(path: str) -> list[dict[str, str]]:
  return list(csv.DictReader(io.StringIO(files.read_text(path))))


def measured(workdirs: Sequence[str]) -> list[str]:
  """The workdirs that hold both of analyze.py's rank files."""
  return [w for w in workdirs if all(files.exists(files.join(w, name)) for name in
                                     (logit_rank.CSV, logit_rank.ABLATION_CSV))]


def summarize(workdirs: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(ranks, ablation): ranks, one entry per configuration: 'erank' and 'rank99' (mean, std
  over seeds of each run's mean over layers and heads), 'seeds'; ablation, one per
  configuration and r: 'cost' (loss - uncut loss) and 'cost_<bin>' per position bin, each
  (mean, std), 'seeds'."""
  ranks: dict[tuple, list[tuple[float, float]]] = collections.defaultdict(list)
  costs: dict[tuple, list[dict[str, float]]] = collections.defaultdict(list)
  for workdir in workdirs:
    spectrum = _read(files.join(workdir, logit_rank.CSV))
    key = tuple(spectrum[0][k] if k == 'variant' else int(spectrum[0][k]) for k in KEY)
    ranks[key].append((sum(float(r['erank']) for r in spectrum) / len(spectrum),
                       sum(float(r['rank99']) for r in spectrum) / len(spectrum)))
    ablation = {int(r['r']): r for r in _read(files.join(workdir, logit_rank.ABLATION_CSV))}
    uncut = ablation[key[3]]
    bins = [c for c in uncut if c.startswith('loss_')]
    for r, row in ablation.items():
      if r != key[3]:
        costs[(*key, r)].append({'cost': float(row['loss']) - float(uncut['loss']), **{
            f'cost_{b[len("loss_"):]}': float(row[b]) - float(uncut[b]) for b in bins}})
  rank_rows = [{**dict(zip(KEY, key)), 'seeds': len(values),
                'erank': metrics.mean_and_spread([v[0] for v in values]),
                'rank99': metrics.mean_and_spread([v[1] for v in values])}
               for key, values in sorted(ranks.items())]
  ablation_rows = []
  for key, values in sorted(costs.items()):
    entry = {**dict(zip(KEY, key[:4])), 'r': key[4], 'seeds': len(values)}
    for name in values[0]:
      finite = [v[name] for v in values if not math.isnan(v[name])]
      entry[name] = metrics.mean_and_spread(finite) if finite else (math.nan, math.nan)
    ablation_rows.append(entry)
  return rank_rows, ablation_rows


def table(ranks: Sequence[dict[str, Any]], ablation: Sequence[dict[str, Any]]) -> str:
  """Both summaries as Markdown tables."""
  first = figures.markdown(
      ('variant', 'n', 'h', 'd_p', 'seeds', 'effective rank', 'rank99'),
      [(e['variant'], e['n'], e['heads'], e['d_p'], e['seeds'],
        f"{e['erank'][0]:.2f} ± {e['erank'][1]:.2f}",
        f"{e['rank99'][0]:.2f} ± {e['rank99'][1]:.2f}") for e in ranks])
  if not ablation:
    return first
  bins = [k for k in ablation[0] if k.startswith('cost_')]
  second = figures.markdown(
      ('variant', 'n', 'h', 'd_p', 'cut to r', 'seeds', 'loss - uncut',
       *(f't = {b[len("cost_"):]}' for b in bins)),
      [(e['variant'], e['n'], e['heads'], e['d_p'], e['r'], e['seeds'],
        f"{e['cost'][0]:+.4f} ± {e['cost'][1]:.4f}",
        *(f'{e[b][0]:+.4f}' for b in bins)) for e in ablation])
  return (first + '\n\nThe eval loss with every head\'s logits cut to rank r, minus the loss '
          'uncut (mean ± std over seeds; by target position t: the mean):\n\n' + second)


def plot(ablation: Sequence[dict[str, Any]], path: str, footer: str, title: str) -> str:
  """The ablation cost against r, one line per configuration (error bars: std over seeds)."""
  fig, ax = figures.new_figure(title, 'every head cut to rank r', 'eval loss - uncut (nats)',
                               footer, size=(7, 4.6), footer_y=0.005)
  for key in sorted({tuple(e[k] for k in KEY) for e in ablation}):
    mine = sorted((e for e in ablation if tuple(e[k] for k in KEY) == key),
                  key=lambda e: e['r'])
    ax.errorbar([e['r'] for e in mine] + [key[3]], [e['cost'][0] for e in mine] + [0.0],
                yerr=[e['cost'][1] for e in mine] + [0.0], capsize=3, marker='o',
                label=f'{key[0]} n={key[1]} h={key[2]} d_p={key[3]}')
  ax.set_xscale('log', base=2)
  ticks = sorted({e['r'] for e in ablation} | {e['d_p'] for e in ablation})
  ax.set_xticks(ticks, [str(t) for t in ticks])
  ax.minorticks_off()
  ax.axhline(0, color='0.5', linewidth=0.8)
  ax.legend(fontsize=7)
  files.write_atomically(path, figures.png(fig, bottom=0.03))
  return path
