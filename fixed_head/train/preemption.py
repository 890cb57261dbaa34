"""Knowing when to stop for a preemption: SIGTERM in one process, JAX's sync point in many.

One process: a SIGTERM handler sets a flag, and ``reached(step)`` is true from the next step
on. Ctrl-C (SIGINT) does the same; after the first one the default handler is back, so a
second Ctrl-C raises KeyboardInterrupt at once (abort without saving more). Several
processes: ``jax.distributed`` already listens for the preemption notice (SIGTERM by
default) and agrees on one step for all processes;
``multihost_utils.reached_preemption_sync_point`` says when it is reached. Ctrl-C there
keeps Python's default (KeyboardInterrupt in the process that got it). Either way every
process stops after the same step, so the checkpoint written there is complete.
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
  """Context manager: ``with PreemptionWatcher() as w: ... if w.reached(step): save; stop``.

  Call ``reached`` once per step, on every process, with increasing steps.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self._signalled = False
    self._previous: dict[int, object] = {}
    self.signal_name: str | None = None

  def __enter__(self) -> 'PreemptionWatcher':
    # Several processes: JAX's preemption service owns SIGTERM. A handler can only be
    # installed from the main thread (a notebook or a test thread runs without one).
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    self._signalled = True
    self.signal_name = self.signal_name or signal.Signals(signum).name
    if signum == signal.SIGINT:  # a second Ctrl-C aborts at once
      signal.signal(signal.SIGINT, signal.default_int_handler)

  @property
  def interrupted(self) -> bool:
    """True when the stop was asked for with Ctrl-C rather than a preemption notice."""
    return self.signal_name == 'SIGINT'

  def reached(self, step: int) -> bool:
    """True when training must stop after ``step`` (the same step on every process)."""
    if jax.process_count() > 1:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or 'preemption notice'
        return True
      return False
    return self._signalled
