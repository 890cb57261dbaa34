"""Several runs' attention statistics side by side: what ``analyze.py`` wrote in each
``DIR/attention_stats.csv``, one row per variant and n (and h, d_p, so that other models are
never averaged together).

Each run counts once: its entropy, mean distance and local share are its means over all
layers and heads; a row of the summary is the mean and sample standard deviation of those
over the runs (seeds) of one configuration, beside what uniform causal attention over a row
of n positions gives (mean distance (n - 1) / 4: no locality).
"""

from __future__ import annotations

import collections
import csv
import io
from collections.abc import Sequence
from typing import Any

from fixed_head import files, metrics
from fixed_head.errors import UsageError
from fixed_head.experiments import attention_stats, figures

KEY = ('variant', 'n', 'heads', 'd_p')
COLUMNS = (*KEY, 'seeds', 'steps', *(f'{s}_{m}' for s in attention_stats.STATS
                                      for m in ('mean', 'std')), 'uniform_mean_distance')


def read_run(workdir: str) -> list[dict[str, Any]]:
  """The rows of ``workdir``'s attention_stats.csv, numbers as numbers."""
  path = files.join(workdir, attention_stats.CSV)
  if not files.exists(path):
    raise UsageError(f'{workdir} holds no {attention_stats.CSV}: run python analyze.py '
                     f'--workdir={workdir} first.')
  rows = list(csv.DictReader(io.StringIO(files.read_text(path))))
  if not rows or tuple(rows[0]) != attention_stats.COLUMNS:
    raise UsageError(f'{path} is not an attention_stats.csv of this version (columns '
                     f'{list(attention_stats.COLUMNS)}): run analyze.py on {workdir} again.')
  numbers = set(attention_stats.STATS)
  return [{k: (float(v) if k in numbers else v if k == 'variant' else int(v))
           for k, v in row.items()} for row in rows]


def run_means(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """One run's csv rows (one per layer and head) -> its KEY, seed, step and each statistic's
  mean over layers and heads."""
  first = rows[0]
  entry = {k: first[k] for k in (*KEY, 'seed', 'step')}
  for stat in attention_stats.STATS:
    entry[stat] = sum(r[stat] for r in rows) / len(rows)
  return entry


def summarize(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
  """Several runs' csv rows -> one entry per configuration (``COLUMNS``), sorted by n,
  variant, h and d_p."""
  groups: dict[tuple, list[dict[str, Any]]] = collections.defaultdict(list)
  for rows in runs:
    means = run_means(rows)
    groups[tuple(means[k] for k in KEY)].append(means)
  summary = []
  for key, members in groups.items():
    entry = dict(zip(KEY, key))
    entry['seeds'] = len(members)
    entry['steps'] = ';'.join(str(s) for s in sorted({m['step'] for m in members}))
    for stat in attention_stats.STATS:
      mean, std = metrics.mean_and_spread([m[stat] for m in members])
      entry[f'{stat}_mean'], entry[f'{stat}_std'] = mean, std
    entry['uniform_mean_distance'] = attention_stats.uniform_causal(entry['n'])['mean_distance']
    summary.append(entry)
  summary.sort(key=lambda e: (e['n'], e['variant'], e['heads'], e['d_p']))
  return summary


def summarize_workdirs(workdirs: Sequence[str]) -> list[dict[str, Any]]:
  """``summarize`` of the attention_stats.csv of every workdir."""
  return summarize([read_run(w) for w in workdirs])


def table(summary: Sequence[dict[str, Any]]) -> str:
  """A Markdown table of the summary."""
  def pm(entry, stat, digits):
    return f"{entry[stat + '_mean']:.{digits}f} ± {entry[stat + '_std']:.{digits}f}"

  return figures.markdown(
      ('variant', 'n', 'h', 'd_p', 'seeds', 'mean distance', 'uniform (n - 1) / 4',
       'local share', 'entropy (nats)'),
      [(e['variant'], e['n'], e['heads'], e['d_p'], e['seeds'], pm(e, 'mean_distance', 2),
        f"{e['uniform_mean_distance']:.2f}", pm(e, 'local_share', 3), pm(e, 'entropy', 3))
       for e in summary])
