"""Fields that changed name or place, and how a config saved before the change reads today.

Every shim of the package lives here. Each entry says what it reads and when it can go: a
shim stays while a workdir saved before its change may still be resumed or evaluated.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fixed_head.errors import UsageError

# config.label_smoothing became an option of task 'lm' (2026-12-03).
# Reads: a workdir's config.json saved before (the value goes to task.label_smoothing); a new
# config naming the old place is refused with the new one. Can go: with the runs saved
# before 2026-12-03.
MOVED = {'label_smoothing': 'task.label_smoothing'}

# data.seed became two seeds (2026-12-03): data.language_seed, the synthetic language
# itself (its matrix A and examples), and data.shuffle_seed, the order the train examples
# are read in (and BERT pre-training's draws of each row).
# Reads: a workdir's config.json with data.seed; a new config with data.seed is refused
# with the new name. Can go: with the runs saved before 2026-12-03.
RENAMED_DATA_FIELDS = {'synthetic': {'seed': 'language_seed'},
                       'bert_pretraining': {'seed': 'shuffle_seed'},
                       'glue': {'seed': 'shuffle_seed'}, 'squad': {'seed': 'shuffle_seed'}}
_MEANING = {'language_seed': 'the language itself',
            'shuffle_seed': 'the order of the train examples'}


def check_moved(unknown: list[str], config: Mapping[str, Any]) -> None:
  """UsageError (one line) when a field ``unknown`` to today's config is one that moved."""
  for old, new in MOVED.items():
    if old in unknown:
      raise UsageError(f'config.{old} is now config.{new}: set --config.{new}='
                       f'{config[old]!r} instead.')


def moved_to_today(tree: Mapping[str, Any]) -> dict[str, Any]:
  """A saved config (a dict) with the fields of ``MOVED`` where they are now."""
  tree = copy.deepcopy(dict(tree))
  smoothing = tree.pop('label_smoothing', 0.0)
  if smoothing:  # saved before it became an option of task 'lm'
    tree['task'] = {'name': 'lm', **tree.get('task', {}), 'label_smoothing': smoothing}
  return tree


def data_fields_today(data: Mapping[str, Any]) -> dict[str, Any]:
  """A saved data config with its fields under today's names (``RENAMED_DATA_FIELDS``)."""
  data = dict(data)
  for old, new in RENAMED_DATA_FIELDS.get(data.get('name'), {}).items():
    if old in data and new not in data:
      data[new] = data.pop(old)
  return data


def check_data_names(data_config: Mapping[str, Any]) -> None:
  """UsageError (one line) for a data field under its old name (``RENAMED_DATA_FIELDS``)."""
  for old, new in RENAMED_DATA_FIELDS.get(data_config.get('name'), {}).items():
    if old in data_config:
      raise UsageError(f"data.{old} of data.name={data_config.get('name')!r} is now called "
                       f'data.{new} ({_MEANING[new]}); set data.{new} instead.')
