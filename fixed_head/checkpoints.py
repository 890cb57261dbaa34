"""Orbax checkpoints of a run: parameters, optimiser state and the data iterator position.

Layout: ``workdir/checkpoints/<step>/{params, opt_state, data}``. Parameters are their own
item, so evaluation (and later fine-tuning) restores them without the optimiser state.
Restoring targets an abstract, sharded tree, so arrays land directly on the current mesh,
whatever mesh wrote them.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def make_manager(workdir: str, *, max_to_keep: int = 3,
                 async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any],
         data_state: dict[str, Any]) -> None:
  """Starts saving (asynchronously when the manager is async) the train state at ``step``."""
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state['params']),
      opt_state=ocp.args.StandardSave(state['opt_state']),
      data=ocp.args.JsonSave(data_state),
  ))


def restore(manager: ocp.CheckpointManager, step: int,
            abstract_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """({'params', 'opt_state'}, data iterator state) of ``step``, placed as
  ``abstract_state`` (sharded ShapeDtypeStructs) says; the caller sets the step counter."""
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract_state['params']),
      opt_state=ocp.args.StandardRestore(abstract_state['opt_state']),
      data=ocp.args.JsonRestore(),
  ))
  state = {'params': restored['params'], 'opt_state': restored['opt_state']}
  return state, dict(restored['data'])


def restore_params(manager: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
  """Only the parameters of ``step``."""
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract_params)))
  return restored['params']
