"""Training output: ``metrics.jsonl``, TensorBoard event files, and a console progress line.

Only process 0 writes; the other processes keep silent.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


class MetricWriter:
  """Appends one JSON object per call to ``workdir/metrics.jsonl`` and mirrors the scalars
  to TensorBoard (``workdir/tensorboard``)."""

  def __init__(self, workdir: str, *, num_train_steps: int, start_step: int,
               enabled: bool = True):
    self.enabled = enabled
    self.num_train_steps = num_train_steps
    self._last_time, self._last_step = time.perf_counter(), start_step
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for key, value in record.items():
      if key != 'step':
        self._tb.add_scalar(key, value, step)
    self._tb.flush()

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
          f'ETA {_format_duration(eta)}', flush=True)

  def log(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
