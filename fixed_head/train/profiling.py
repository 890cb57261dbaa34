"""A ``jax.profiler`` trace of a few training steps, for seeing where a step's time goes.

``config.profile_steps = N`` traces N steps of a run into ``WORKDIR/profile/`` (every process
its own trace), from the second step the run takes, so that the first, which also moves the
first batch and fills caches, is left out. View it in TensorBoard's profile plugin
(``pip install tensorboard-plugin-profile``; ``tensorboard --logdir WORKDIR/profile``) or
open the ``*.trace.json.gz`` in Perfetto (ui.perfetto.dev). Tracing changes no result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from fixed_head import files


class StepProfiler:
  """Starts a trace before step ``first`` and stops it after step ``last`` has finished."""

  def __init__(self, num_steps: int, workdir: str, start_step: int, end_step: int,
               log: Callable[[str], None]):
    self.directory = files.join(workdir, 'profile')
    self.first = min(start_step + 2, end_step)
    self.last = min(self.first + num_steps - 1, end_step)
    self.enabled = num_steps > 0
    self.active = False
    self.log = log

  def before(self, step: int) -> None:
    if self.enabled and step == self.first:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step: int, outputs: Any) -> None:
    if self.active and step == self.last:
      jax.block_until_ready(outputs)  # the traced steps' device work, all of it
      self.stop()
      self.log(f'Profiled steps {self.first}..{self.last} into {self.directory} (TensorBoard '
               'profile plugin or Perfetto).')

  def stop(self) -> None:
    """Ends a trace still running (on the way out of an error, too)."""
    if self.active:
      self.active = False
      jax.profiler.stop_trace()
