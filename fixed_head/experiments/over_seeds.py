"""Several runs that differ only in their seed, summarised as mean ± spread, as the paper
reports its fine-tuning results (``summarize.py``).

A run's result is its final evaluation: the newest ``eval/step_<N>.json`` that eval.py wrote
for the run's own data, else the last row of ``metrics.jsonl`` that holds evaluations.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from fixed_head import files, metrics
from fixed_head.errors import UsageError

COUNTS = ('num_tokens', 'num_rows', 'num_questions', 'num_predictions')


def final_evals(workdir: str) -> tuple[int, dict[str, float]]:
  """(step, {'evaluator/metric': value}) of the run's last evaluation."""
  results = {}
  for path in files.glob(files.join(workdir, 'eval'), 'step_*.json'):
    match = re.fullmatch(r'step_(\d+)\.json', os.path.basename(path))
    if match:
      results[int(match.group(1))] = path
  if results:
    step = max(results)
    evals = json.loads(files.read_text(results[step]))['evals']
    return step, {f'{name}/{k}': v for name, result in evals.items()
                  for k, v in result.items()}
  path = files.join(workdir, 'metrics.jsonl')
  last = None
  for line in files.read_text(path).splitlines() if files.exists(path) else []:
    try:
      row = json.loads(line)
    except ValueError:
      continue
    evals = {k: v for k, v in row.items() if k != 'step' and not k.startswith('train/')}
    if evals:
      last = row['step'], evals
  if last is None:
    raise UsageError(f'{workdir}: no evaluation found (no eval/step_<N>.json and no evaluation '
                     'in metrics.jsonl); train it to the end or run eval.py on it first.')
  return last


def is_count(key: str) -> bool:
  """Whether 'evaluator/metric' counts what was scored (num_rows, tokens_by_position/...)
  rather than measuring it."""
  metric = key.split('/', 1)[-1]
  return metric in COUNTS or metric.startswith('tokens_by_position/')


def summarize(workdirs: Sequence[str]) -> dict[str, Any]:
  """{'runs': [{'workdir', 'step', 'seed'}], 'metrics': {name: {'mean', 'std', 'n'}}} over
  the runs' final evaluations (counts such as num_rows are left out)."""
  if not workdirs:
    raise UsageError('give the workdirs of the runs to summarise.')
  runs, results = [], []
  for workdir in workdirs:
    step, evals = final_evals(workdir)
    seed = None
    config_path = files.join(workdir, 'config.json')
    if files.exists(config_path):
      seed = json.loads(files.read_text(config_path)).get('seed')
    runs.append({'workdir': workdir, 'step': step, 'seed': seed})
    results.append({k: v for k, v in evals.items() if not is_count(k)})
  seeds = [r['seed'] for r in runs]
  if len(set(seeds)) < len(seeds):
    raise UsageError(f'the runs share seeds ({seeds}): give runs of different --config.seed.')
  return {'runs': runs, 'metrics': metrics.summarise_seeds(results)}


def table(summary: dict[str, Any]) -> str:
  """The summary as a text table: metric, mean ± std, n."""
  lines = [f'{"metric":<28} {"mean ± std":>18} {"n":>3}']
  for name, s in summary['metrics'].items():
    lines.append(f'{name:<28} {s["mean"]:>9.4f} ± {s["std"]:<6.4f} {s["n"]:>3}')
  runs = ', '.join(f'{r["workdir"]} (seed {r["seed"]}, step {r["step"]})' for r in summary['runs'])
  return '\n'.join(lines + [f'runs: {runs}'])
