"""Errors a run ends with on purpose, each with the exit code ``train.py`` / ``eval.py`` use.

  0   finished
  1   an unexpected error (a Python traceback: a bug, please report it)
  2   UsageError: a bad config, workdir, input or checkpoint; the message names the fix
  3   NonFiniteLoss: the loss or gradients became NaN/Inf; nothing after the last good
      checkpoint was written
  3   DoesNotFit (compile.py): the config's steps do not fit the slice's HBM; the line
      names the remedies that apply
  75  Preempted: SIGTERM (or a preemption notice) was received; a checkpoint of the current
      step was written and is durable; run the same command again to continue
  130 Interrupted: Ctrl-C (SIGINT). The first one stops like SIGTERM, after a durable
      checkpoint of the current step; a second one aborts at once, saving nothing more

Only these types are user errors: any other exception (a ValueError from a bug included)
keeps its traceback and exit code 1.
"""

from __future__ import annotations


class UsageError(ValueError):
  """A bad config, workdir, input or checkpoint (exit code 2)."""

  exit_code = 2


class CheckpointError(UsageError):
  """A checkpoint cannot be read or written; earlier checkpoints are left as they were."""


class NonFiniteLoss(RuntimeError):
  """Training produced a NaN or Inf (exit code 3)."""

  exit_code = 3


class DoesNotFit(Exception):
  """compile.py: the compiled steps need more HBM than a device of the slice has (exit 3)."""

  exit_code = 3


class Preempted(Exception):
  """Training stopped early on a preemption signal, after a durable checkpoint (exit 75)."""

  exit_code = 75

  def __init__(self, step: int, message: str):
    super().__init__(message)
    self.step = step


class Interrupted(Preempted):
  """Training stopped on Ctrl-C (SIGINT), after a durable checkpoint (exit 130 = 128 + 2)."""

  exit_code = 130


EXIT_CODES = {'finished': 0, 'unexpected error': 1, 'usage error': UsageError.exit_code,
              'non-finite loss': NonFiniteLoss.exit_code, 'does not fit': DoesNotFit.exit_code,
              'preempted': Preempted.exit_code,
              'interrupted': Interrupted.exit_code}
