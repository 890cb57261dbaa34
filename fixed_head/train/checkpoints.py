"""Orbax checkpoints of a run: parameters, optimiser state and the data iterator position.

Layout: ``workdir/checkpoints/<step>/{params, opt_state, data}``. Parameters are their own
item, so evaluation (and later fine-tuning) restores them without the optimiser state.
Restoring targets an abstract, sharded tree, so arrays land directly on the current mesh,
whatever mesh wrote them.

Orbax writes each step into a temporary directory and renames it to ``<step>`` only when
every file is written, so a run killed mid-save leaves no step directory behind (the
temporary one is removed when the next run opens the workdir). A step that cannot be read
(files truncated or deleted later) raises ``CheckpointError`` naming the step, its path and
the good steps; with ``config.checkpoint.on_unreadable='fall_back'`` the trainer moves it
out of the way with ``set_aside`` (deleting nothing) and resumes from the step before.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from fixed_head import files, quiet_logs
from fixed_head.errors import CheckpointError, UsageError

quiet_logs.install()

ON_UNREADABLE = ('error', 'fall_back')


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """``config.checkpoint``, typed and checked once: save every ``every_steps`` steps (and at
  the end), keep the newest ``max_to_keep``, write asynchronously; a newest checkpoint that
  cannot be read stops the run ('error') or is set aside ('fall_back')."""
  every_steps: int = 500
  max_to_keep: int = 3
  async_save: bool = True
  on_unreadable: str = 'error'

  def __post_init__(self):
    for field in ('every_steps', 'max_to_keep'):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f'config.checkpoint.{field}={value!r}: must be a positive integer.')
    if not isinstance(self.async_save, bool):
      raise UsageError(f'config.checkpoint.async_save={self.async_save!r}: must be True or '
                       'False.')
    if self.on_unreadable not in ON_UNREADABLE:
      raise UsageError(f'config.checkpoint.on_unreadable={self.on_unreadable!r}: must be '
                       "'error' or 'fall_back'.")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def checkpoint_dir(workdir: str) -> str:
  return files.join(files.absolute(workdir), 'checkpoints')


def set_aside_dir(workdir: str) -> str:
  return files.join(files.absolute(workdir), 'checkpoints_set_aside')


def make_manager(workdir: str, *, max_to_keep: int = 3, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """The run's manager; ``read_only`` (for evaluation) creates and cleans up nothing."""
  options = ocp.CheckpointManagerOptions(
      # A read-only manager keeps and saves nothing; saying so up front spares its warnings.
      max_to_keep=None if read_only else max_to_keep,
      save_interval_steps=0 if read_only else 1,
      enable_async_checkpointing=async_save, create=not read_only,
      cleanup_tmp_directories=not read_only, read_only=read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def _step_path(manager: ocp.CheckpointManager, step: int) -> str:
  return files.join(os.fspath(manager.directory), str(step))


def _short(error: BaseException) -> str:
  """The first line of an Orbax / TensorStore error, without its spec dump."""
  text = str(error).strip().splitlines()
  first = (text[0] if text else '').split(' See full TensorStore details')[0]
  return f'{type(error).__name__}: {first}'[:300]


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any],
         data_state: dict[str, Any], *, previous_step: int | None = None) -> None:
  """Starts saving (asynchronously when the manager is async) the train state at ``step``,
  once the save of ``previous_step`` (if still in flight) is done.

  Raises CheckpointError naming the step whose save failed (a full disk, say); the
  checkpoints already written are left as they were.
  """
  wait_until_finished(manager, previous_step)
  try:
    manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state['params']),
        opt_state=ocp.args.StandardSave(state['opt_state']),
        data=ocp.args.JsonSave(data_state),
    ))
  except Exception as e:  # pylint: disable=broad-except
    raise _save_error(manager, step, e) from e


def wait_until_finished(manager: ocp.CheckpointManager, step: int | None = None) -> None:
  """Blocks until the save in flight (of ``step``) is durable; CheckpointError if it failed."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_error(manager, step, e) from e


def _save_error(manager: ocp.CheckpointManager, step: int | None,
                error: BaseException) -> CheckpointError:
  good = sorted(manager.all_steps(read=True))
  what = 'the last checkpoint' if step is None else f'the checkpoint of step {step}'
  return CheckpointError(
      f'saving {what} to {manager.directory} failed ({_short(error)}). The checkpoints '
      f'already written are intact: steps {good or "none"}. Free space or fix the directory, '
      'then run the same command again to resume from the latest of them.')


def restore(manager: ocp.CheckpointManager, step: int,
            abstract_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """({'params', 'opt_state'}, data iterator state) of ``step``, placed as
  ``abstract_state`` (sharded ShapeDtypeStructs) says; the caller sets the step counter."""
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state['params']),
        opt_state=ocp.args.StandardRestore(abstract_state['opt_state']),
        data=ocp.args.JsonRestore(),
    ))
    data_state = restored['data']
    if not isinstance(data_state, dict):
      raise ValueError(f'the data item holds {type(data_state).__name__}, not a dict')
  except Exception as e:  # pylint: disable=broad-except
    raise unreadable(manager, step, e) from e
  state = {'params': restored['params'], 'opt_state': restored['opt_state']}
  return state, dict(data_state)


def restore_params(manager: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
  """Only the parameters of ``step``."""
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
  except Exception as e:  # pylint: disable=broad-except
    raise unreadable(manager, step, e) from e
  return restored['params']


def all_steps(workdir: str) -> list[int]:
  """The steps of the checkpoints kept in ``workdir``, oldest first."""
  manager = make_manager(workdir, async_save=False, read_only=True)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def load_params(workdir: str, step: int | None, abstract_params: Any, *,
                field: str = 'step') -> tuple[int, Any]:
  """(step, parameters) of checkpoint ``step`` of the run in ``workdir`` (None: its
  latest), placed as ``abstract_params`` says. UsageError when the run has no checkpoint,
  or none of ``step``; ``field`` names the setting that chose the step."""
  manager = make_manager(workdir, async_save=False, read_only=True)
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      raise UsageError(f'no checkpoint in {checkpoint_dir(workdir)}: train first (python '
                       f'train.py --config=... --workdir={workdir}).')
    if step is not None and step not in steps:
      raise UsageError(f'{field}={step!r}: no checkpoint of that step in '
                       f'{checkpoint_dir(workdir)}; available: {steps} (or None: the latest).')
    step = steps[-1] if step is None else step
    return step, restore_params(manager, step, abstract_params)
  finally:
    manager.close()


def unreadable(manager: ocp.CheckpointManager, step: int,
               error: BaseException) -> CheckpointError:
  """The error for a checkpoint step that cannot be restored, naming the way out."""
  earlier = sorted(s for s in manager.all_steps(read=True) if s < step)
  aside = set_aside_dir(os.path.dirname(os.fspath(manager.directory)))
  if earlier:
    fix = (f'To resume from the previous checkpoint (step {earlier[-1]}) instead, run again '
           f'with --config.checkpoint.on_unreadable=fall_back: step {step} is then moved to '
           f'{aside}, not deleted.')
  else:
    fix = ('There is no earlier checkpoint: --config.checkpoint.on_unreadable=fall_back '
           f'moves step {step} to {aside} and starts afresh.')
  return CheckpointError(
      f'checkpoint step {step} at {_step_path(manager, step)} cannot be restored: its files '
      f'are truncated, missing or not a checkpoint of this model ({_short(error)}). {fix}')


def set_aside(workdir: str, step: int) -> str:
  """Moves checkpoint ``step`` to ``set_aside_dir(workdir)/<step>-<time>`` (process 0;
  the others wait); deletes nothing (in a bucket: copies, then deletes the original).
  Returns the new path."""
  target = files.join(set_aside_dir(workdir), f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
  if jax.process_index() == 0:
    files.make_dirs(set_aside_dir(workdir))
    files.move_tree(files.join(checkpoint_dir(workdir), str(step)), target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'set_aside:{step}')
  return target
