"""Learning curves: every evaluation a run made, so "has it flattened?" can be read off.

A run's curve is one row per evaluated step of its report evaluator ('valid', else the
first): the evaluations in ``metrics.jsonl`` (every ``eval_every_steps`` and the last step),
overlaid with the run's own ``eval/step_<N>.json`` that eval.py wrote for a step (its numbers
win: eval.py may have measured more, e.g. the loss by position of a run trained before the
evaluator reported it). Other data's or evaluators' files (``step_<N>.<tag>.json``) are not
the run's curve and are left out.

``curves.csv`` (report.py) holds the rows of every finished run of a sweep; ``curves.png``
plots the eval metric against the step, one line per configuration (the mean over seeds,
the band between the lowest and highest seed).
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from fixed_head import files

CSV = 'curves.csv'
PNG = 'curves.png'
METRICS = ('loss', 'gap_to_optimal', 'accuracy')
BY_POSITION = 'loss_by_position/'


def run_curve(workdir: str, evaluator: str = 'valid') -> list[dict[str, float]]:
  """[{'step', metric: value, 'loss_by_position/<bin>': value, ...}] sorted by step, for
  ``evaluator``'s evaluations of the run in ``workdir``."""
  by_step: dict[int, dict[str, float]] = {}
  prefix = evaluator + '/'
  path = files.join(workdir, 'metrics.jsonl')
  for line in files.read_text(path).splitlines() if files.exists(path) else []:
    try:
      row = json.loads(line)
    except ValueError:
      continue  # a torn last line of a killed run
    values = {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}
    if values:
      by_step.setdefault(int(row['step']), {}).update(values)
  for eval_path in files.glob(files.join(workdir, 'eval'), 'step_*.json'):
    match = re.fullmatch(r'step_(\d+)\.json', os.path.basename(eval_path))
    if match:
      evals = json.loads(files.read_text(eval_path))['evals']
      if evaluator in evals:
        by_step.setdefault(int(match.group(1)), {}).update(evals[evaluator])
  return [{'step': step, **{k: v for k, v in values.items()
                            if k in METRICS or k.startswith(BY_POSITION)}}
          for step, values in sorted(by_step.items())]


def columns(rows: Sequence[dict[str, Any]], leading: Sequence[str]) -> list[str]:
  """``leading``, 'step', the metrics present, then the position bins in their order."""
  present = {k for row in rows for k in row}
  bins = sorted({k for k in present if k.startswith(BY_POSITION)},
                key=lambda k: int(k[len(BY_POSITION):].split('-')[0]))
  return [*leading, 'step', *(m for m in METRICS if m in present), *bins]


def plot(rows: Sequence[dict[str, Any]], label_of, metric: str, path: str, footer: str,
         title: str, floors: dict[str, float] | None = None) -> str:
  """Writes ``metric`` against the step, one line per ``label_of(row)`` (mean over its
  runs, a band from the lowest to the highest); ``floors``: {label: value} drawn as dotted
  horizontal lines (the count n-gram floors)."""
  from fixed_head.experiments import figures  # pylint: disable=g-import-not-at-top
  fig, ax = figures.new_figure(title, 'training step', f'eval {metric} (nats)', footer,
                               size=(7.5, 4.8), footer_y=0.005)
  groups: dict[str, dict[int, list[float]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for row in rows:
    if row.get(metric) not in (None, ''):
      groups[label_of(row)][int(row['step'])].append(float(row[metric]))
  for label in sorted(groups):
    steps = sorted(groups[label])
    values = [groups[label][s] for s in steps]
    line, = ax.plot(steps, [sum(v) / len(v) for v in values], marker='.', label=label)
    if any(len(v) > 1 for v in values):
      ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values],
                      color=line.get_color(), alpha=0.2, linewidth=0)
  for name, value in (floors or {}).items():
    ax.axhline(value, color='0.4', linestyle=':', linewidth=0.9)
    ax.annotate(name, (ax.get_xlim()[1], value), fontsize=7, color='0.3', ha='right',
                va='bottom')
  ax.legend(fontsize=7)
  files.write_atomically(path, figures.png(fig, bottom=0.03))
  return path
