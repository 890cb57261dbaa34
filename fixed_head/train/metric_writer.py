"""Training output: ``metrics.jsonl``, TensorBoard event files, and a console progress line.

Only process 0 writes; the other processes keep silent. ``metrics.jsonl`` holds one row for
each step that logs (every ``log_every_steps``) or evaluates (every ``eval_every_steps``, and
the last step), its train metrics and evals together: a run resumed from step S first drops the
rows after S that the interrupted run had written (rewriting the file atomically), and
TensorBoard purges its events after S, so the steps trained again are not counted twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fixed_head import files


def format_duration(seconds: float) -> str:
  """'1m05s', or '2h03m09s' from an hour on (whole seconds, rounded down)."""
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


def drop_rows_after(path: str, step: int) -> int:
  """Rewrites the JSON-lines file ``path`` without its rows of steps after ``step``
  (``files.write_atomically``). Returns how many rows were dropped."""
  if not files.exists(path):
    return 0
  lines = [line for line in files.read_text(path).splitlines(keepends=True) if line.strip()]
  kept = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      pass  # a torn last line from a killed run
  if len(kept) == len(lines):
    return 0
  files.write_atomically(path, ''.join(line if line.endswith('\n') else line + '\n'
                                      for line in kept))
  return len(lines) - len(kept)


class MetricWriter:
  """Appends one JSON row per logging or evaluating step to ``workdir/metrics.jsonl`` and
  mirrors the scalars to TensorBoard (``workdir/tensorboard``)."""

  def __init__(self, workdir: str, *, num_train_steps: int, start_step: int,
               enabled: bool = True):
    self.enabled = enabled
    self.num_train_steps = num_train_steps
    self._last_time, self._last_step = time.perf_counter(), start_step
    self._row: dict[str, Any] | None = None  # the step's row, until flushed
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    path = files.join(workdir, 'metrics.jsonl')
    drop_rows_after(path, start_step)
    self._jsonl = files.LineLog(path)
    self._tb = SummaryWriter(files.join(workdir, 'tensorboard'),
                             purge_step=start_step + 1 if start_step else None)

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    """Adds ``scalars`` to the row of ``step`` (train metrics and evals of one step share a
    row, written by ``flush`` or when a later step arrives)."""
    if not self.enabled:
      return
    if self._row is not None and self._row['step'] != int(step):
      self.flush()
    if self._row is None:
      self._row = {'step': int(step)}
    for key, value in scalars.items():
      self._row[key] = float(value)
      self._tb.add_scalar(key, float(value), step)

  def flush(self) -> None:
    """Appends the pending row to metrics.jsonl and flushes TensorBoard."""
    if not self.enabled or self._row is None:
      return
    self._jsonl.write(json.dumps(self._row))
    self._jsonl.flush()
    self._tb.flush()
    self._row = None

  def rate(self, step: int) -> float:
    """Steps per second since the previous call."""
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    return rate

  def progress(self, step: int, scalars: dict[str, float], steps_per_sec: float) -> None:
    if not self.enabled:
      return
    eta = (self.num_train_steps - step) / max(steps_per_sec, 1e-9)
    shown = ' | '.join(f'{k} {v:.4g}' for k, v in scalars.items())
    print(f'step {step}/{self.num_train_steps} | {shown} | {steps_per_sec:.2f} steps/s | '
          f'ETA {format_duration(eta)}', flush=True)

  def log(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self.enabled:
      self.flush()
      self._jsonl.close()
      self._tb.close()
