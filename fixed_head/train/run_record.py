"""The workdir's record of a run: ``config.json``, ``config_history.jsonl`` and eval results.

``config.json`` always describes the checkpoints beside it. A rerun that changes settings
which leave the checkpoints valid (learning rate, steps, intervals, ...) is accepted: the
new config replaces ``config.json`` and one line of ``config_history.jsonl`` records what
changed and from which step it applies. Changes that would make the record untrue (the
model's shapes, the optimizer, the data) are refused by ``check_resume`` before anything is
written. A finished run that is started again writes nothing.

Evaluation results go to ``eval/step_<N>.json`` when they score the run's own data with the
run's own evaluators; any other data or evaluator settings get a file of their own,
``eval/step_<N>.<tag>.json`` (tag: a hash of those settings, which the file also holds), so a
result is never overwritten by one of other data.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import ml_collections

from fixed_head import renames
from fixed_head import files
from fixed_head.errors import UsageError
from fixed_head.train import run_config

CONFIG = 'config.json'
HISTORY = 'config_history.jsonl'
# Model fields that do not change what a checkpoint computes at evaluation time.
EVAL_FREE_MODEL_FIELDS = ('dropout_rate', 'attention_dropout_rate', 'attention_impl', 'remat')
# Data fields that say where or how fast the data is read, not what it is: they may change
# when a run resumes (the data moved to another disk, more reader threads, a pre-packed copy
# moved; the copy's own metadata and the iterator state still refuse another copy).
DATA_LOCATION_FIELDS = ('data.data_dir', 'data.read_threads', 'data.prepacked_dir')
# Task options that change only what training minimises, not what the checkpoints hold.
OBJECTIVE_FIELDS = ('task.label_smoothing',)


def as_dict(config: run_config.RunConfig | ml_collections.ConfigDict | dict[str, Any]
            ) -> dict[str, Any]:
  """The config as config.json holds it (JSON types: tuples become lists)."""
  if isinstance(config, dict):
    return json.loads(json.dumps(config, default=str))
  return json.loads(run_config.to_json(config))


def flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def differences(saved: dict[str, Any], current: dict[str, Any],
                prefix: str = '') -> dict[str, tuple[Any, Any]]:
  """{dotted field: (saved value, current value)} for every field that differs."""
  old, new = flatten(saved, prefix), flatten(current, prefix)
  return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k)}


def describe(changes: dict[str, tuple[Any, Any]]) -> str:
  return '; '.join(f'{k}: saved {a!r}, now {b!r}' for k, (a, b) in changes.items())


def write_json_atomic(path: str, obj: Any, **dump_options) -> None:
  """Writes ``obj`` as JSON to ``path``, whole or not at all (``files.write_atomically``)."""
  files.write_atomically(path, json.dumps(obj, **dump_options))


def _binds_checkpoints(field: str) -> bool:
  """Whether a resumed run must keep the dotted ``field`` as saved: it shapes the
  parameters, names the optimizer whose state is saved, or says what the data is."""
  section, _, name = field.partition('.')
  return ((section == 'model' and name in run_config.SHAPE_FIELDS) or field == 'optimizer.name'
          or (section == 'task' and field not in OBJECTIVE_FIELDS)
          or (section == 'data' and field not in DATA_LOCATION_FIELDS))


def check_resume(saved: dict[str, Any], config: run_config.RunConfig,
                 workdir: str) -> None:
  """Refuses to resume ``workdir`` when its saved config has other parameter shapes, another
  optimizer, or other data: the checkpoints and the record would no longer agree."""
  fixed = {k: v for k, v in differences(saved, as_dict(config)).items()
           if _binds_checkpoints(k)}
  if fixed:
    raise UsageError(
        f'workdir {workdir} holds a run whose config is incompatible with this one '
        f'({describe(fixed)}). Use a new --workdir, or restore the saved settings '
        f'(see {workdir}/config.json).')


def load(workdir: str) -> dict[str, Any] | None:
  """The saved config.json of ``workdir`` as a dict, or None."""
  path = files.join(workdir, CONFIG)
  if not files.exists(path):
    return None
  try:
    saved = json.loads(files.read_text(path))
  except (OSError, ValueError) as e:
    raise UsageError(f'{path} cannot be read ({e}); restore it from a backup or use a new '
                     '--workdir.') from None
  # Fields added since the run was written take their defaults, which reproduce the
  # behaviour of the code that wrote it; moved and renamed fields go where they are now.
  saved['data'] = renames.data_fields_today(saved.get('data', {}))
  return run_config.complete(saved)


def check_run_dir(workdir: str) -> None:
  """UsageError unless ``workdir`` is a directory (what eval.py, sample.py, analyze.py,
  floor.py and load_model read); a bucket is checked for credentials first."""
  if files.is_url(workdir):
    try:
      files.check_url_readable(workdir)
    except OSError as e:
      raise UsageError(f'--workdir={workdir}: {e}.') from None
  if not files.exists(workdir):
    raise UsageError(f'--workdir={workdir} does not exist: train a run there first '
                     f'(python train.py --config=... --workdir={workdir}).')
  if not files.is_dir(workdir):
    raise UsageError(f'--workdir={workdir} is a file, not the workdir (a directory) of a '
                     'training run.')


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run config saved in ``workdir`` (what eval.py uses without --config)."""
  check_run_dir(workdir)
  saved = load(workdir)
  if saved is None:
    raise UsageError(f'{workdir} holds no {CONFIG}: it is not the workdir of a training run '
                     f'(train.py writes {CONFIG} there before anything else).')
  return ml_collections.ConfigDict(saved)


def record(config: run_config.RunConfig, workdir: str, saved: dict[str, Any] | None,
           step: int) -> dict[str, tuple[Any, Any]]:
  """Writes config.json (the config the run continues with from ``step``) and, when it
  changes ``saved``, a line of config_history.jsonl. Returns the changes. Process 0 only."""
  current = as_dict(config)
  changes = differences(saved, current) if saved is not None else {}
  if saved is not None and not changes:
    return changes
  if changes:
    line = {'step': step, 'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
            'changes': {k: {'saved': a, 'now': b} for k, (a, b) in changes.items()}}
    log = files.LineLog(files.join(workdir, HISTORY))
    log.write(json.dumps(line, default=str))
    log.close()
  write_json_atomic(files.join(workdir, CONFIG), current, indent=2, sort_keys=True)
  return changes


def history(workdir: str) -> list[dict[str, Any]]:
  """The accepted changes, oldest first: [{'step', 'time', 'changes'}]."""
  path = files.join(workdir, HISTORY)
  if not files.exists(path):
    return []
  return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


def eval_target(config: run_config.RunConfig, workdir: str, *,
                other_data: bool) -> str:
  """The result file name for evaluating ``workdir`` with ``config`` (see the module doc).

  Raises UsageError when ``config`` describes another model than the saved run, or other
  data without ``other_data``.
  """
  saved = load(workdir)
  if saved is None:
    return 'step_{step}.json'
  current = as_dict(config)
  model = {k: v for k, v in differences(saved['model'], current['model'], 'model.').items()
           if k.split('.', 1)[1] not in EVAL_FREE_MODEL_FIELDS}
  if model:
    raise UsageError(f'--config describes another model than the run in {workdir} '
                     f'({describe(model)}); drop --config to use the saved config.json.')
  data = differences(saved['data'], current['data'], 'data.')
  if data and not other_data:
    raise UsageError(
        f'--config reads other data than the run in {workdir} ({describe(data)}). Drop '
        '--config (eval.py uses the saved config.json), or pass --other_data to evaluate on '
        'this data: the result then goes to a file of its own, never over the run\'s.')
  evals = differences(saved.get('evals', {}), current['evals'], 'evals.')
  if not data and not evals:
    return 'step_{step}.json'
  what = json.dumps({'data': current['data'], 'evals': current['evals']}, sort_keys=True)
  return 'step_{step}.' + hashlib.sha256(what.encode()).hexdigest()[:8] + '.json'
