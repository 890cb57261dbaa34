"""Sweeps: many training runs from one config file, one after another on one host.

A config file that can be swept has ``sweep(arg)`` beside ``get_config(arg)`` (as big_vision
keeps them). ``sweep`` returns a list of :func:`run` entries: which ``get_config`` argument to
start from, which fields to override, and which figures of the report the run belongs to::

  def sweep(arg='all'):
    return [sweeps.run('baseline', {'model.num_heads': h, 'seed': s}, figures=('heads',))
            for h in (1, 2, 4, 8) for s in (0, 1)]

Each run trains in its own workdir ``SWEEP_DIR/<name>``, the name made from the argument and the
overrides (``baseline-num_heads=8-seed=0``). Running the sweep again skips finished runs and
resumes interrupted ones from their last checkpoint, so it can be killed and rerun at any time.
Several sweep.py processes on one host share a sweep: each run is claimed with a lock on
``WORKDIR/<name>/sweep.lock`` (released when its process ends, however it ends), and a run
another process holds is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from fixed_head import files
from fixed_head.errors import UsageError
from fixed_head.train.metric_writer import format_duration

PLAN = 'sweep.json'  # in the sweep directory: the config file, its argument and the runs
DONE = 'sweep_run.json'  # in a run's workdir once it has trained to the end
ATTEMPTS = 'sweep_attempts.jsonl'  # in a run's workdir: one line per attempt (wall time)
LOCK = 'sweep.lock'  # in a run's workdir: held (flock) by the process training it
_NAME_OK = re.compile(r'[A-Za-z0-9_.=+-]+')


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep: ``get_config(arg)`` with ``overrides`` (dotted field -> value)."""

  arg: str
  overrides: tuple[tuple[str, Any], ...]
  figures: tuple[str, ...] = ()

  @property
  def name(self) -> str:
    parts = [self.arg] + [f'{key.rsplit(".", 1)[-1]}={value}' for key, value in self.overrides]
    return '-'.join(parts)

  def to_dict(self) -> dict[str, Any]:
    return {'name': self.name, 'arg': self.arg, 'overrides': dict(self.overrides),
            'figures': list(self.figures)}


def run(arg: str, overrides: Mapping[str, Any] | None = None, *,
        figures: Sequence[str] = ()) -> Run:
  """A sweep entry; ``overrides`` keys are dotted config fields such as 'model.num_heads'."""
  items = tuple(sorted((overrides or {}).items()))
  return Run(arg=arg, overrides=items, figures=tuple(figures))


def model_run(arg: str, figure: str, *, seed: int, **model: Any) -> Run:
  """A run of ``figure`` that sets ``config.model.<field>`` for each keyword, and the seed."""
  overrides = {f'model.{field}': value for field, value in model.items()}
  return run(arg, {**overrides, 'seed': seed}, figures=(figure,))


def select(runs: Sequence[Run], arg: str, figures: Sequence[str], where: str) -> list[Run]:
  """The runs of figure ``arg``, or every run for 'all'; ``where`` names the config file in
  the error for an unknown figure."""
  if arg != 'all' and arg not in figures:
    raise ValueError(f"{where}:{arg}: use ':all' or one of {', '.join(figures)}.")
  return [r for r in runs if arg == 'all' or arg in r.figures]


def load_module(path: str):
  """Imports a config file by its path (configs/*.py), as config_flags does."""
  if not os.path.isfile(path):
    raise UsageError(f'--config={path}: no such config file.')
  name = '_sweep_config_' + re.sub(r'\W', '_', os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def split_arg(config_arg: str) -> tuple[str, str | None]:
  """'configs/default.py:heads' -> ('configs/default.py', 'heads')."""
  path, sep, arg = config_arg.partition(':')
  return path, (arg if sep else None)


def plan(config_arg: str) -> tuple[Any, list[Run]]:
  """(config module, its sweep's runs). Runs of the same config are merged into the first
  (its name, the figures of all)."""
  path, arg = split_arg(config_arg)
  module = load_module(path)
  if not callable(getattr(module, 'sweep', None)):
    raise UsageError(f'--config={path} has no sweep(arg) function; add one beside '
                     'get_config (see fixed_head/experiments/sweeps.py).')
  runs = _call(module.sweep) if arg is None else _call(module.sweep, arg)
  merged: dict[tuple[str, tuple], Run] = {}
  for r in runs:
    if not isinstance(r, Run):
      raise UsageError(f'--config={config_arg}: sweep() must return sweeps.run(...) entries, '
                       f'got {type(r).__name__}.')
    key = (r.arg, _without_no_ops(module, r.overrides, r.arg))  # one run per distinct config
    if key in merged:
      old = merged[key]
      r = dataclasses.replace(old, figures=old.figures + tuple(
          f for f in r.figures if f not in old.figures))
    merged[key] = r
  runs = list(merged.values())
  if not runs:
    raise UsageError(f'--config={config_arg}: the sweep has no runs.')
  named: dict[str, Run] = {}
  for r in runs:
    if not _NAME_OK.fullmatch(r.name):
      raise UsageError(f'--config={config_arg}: run name {r.name!r} has characters that do '
                       'not belong in a directory name; use plain numbers and words.')
    if r.name in named:  # the name keeps only a field's last part: 'seed' and 'data.seed'
      raise UsageError(f'--config={config_arg}: two different runs are named {r.name} '
                       f'({named[r.name].to_dict()["overrides"]} and {r.to_dict()["overrides"]}'
                       '); they would share one workdir: make their overrides differ by name.')
    named[r.name] = r
  return module, runs


def _call(function: Callable[..., Any], *args: Any) -> Any:
  """A config file's ``sweep(arg)`` or ``get_config(arg)``. A ValueError it raises (a bad
  argument, in the file's own words) is a UsageError, as train.py's --config treats it."""
  try:
    return function(*args)
  except UsageError:
    raise
  except ValueError as e:
    raise UsageError(str(e).strip().splitlines()[0]) from e


def _field(config: ml_collections.ConfigDict, key: str) -> tuple[Any, str] | None:
  """(the node holding dotted ``key``'s last part, that part), or None if no such field."""
  parent, _, field = key.rpartition('.')
  node = config
  for part in parent.split('.') if parent else ():
    if not hasattr(node, 'keys') or part not in node:
      return None
    node = node[part]
  if not hasattr(node, 'keys') or field not in node:
    return None
  return node, field


def _without_no_ops(module, overrides: tuple[tuple[str, Any], ...], arg: str) -> tuple:
  """``overrides`` less those that set a field to the value get_config(arg) gives it."""
  config = _call(module.get_config, arg)
  kept = []
  for key, value in overrides:
    found = _field(config, key)
    current = found[0][found[1]] if found else None
    if not (found and type(current) is type(value) and current == value):
      kept.append((key, value))
  return tuple(kept)


def override(config: ml_collections.ConfigDict, overrides: Iterable[tuple[str, Any]],
             where: str) -> ml_collections.ConfigDict:
  """``config`` with each dotted field of ``overrides`` set (in place); an unknown field is
  a UsageError that names ``where`` the override comes from."""
  for key, value in overrides:
    found = _field(config, key)
    if found is None:
      raise UsageError(f'{where}: config.{key} is not a field of the config.')
    node, field = found
    with node.ignore_type():
      node[field] = value
  return config


def config_of(module, r: Run) -> ml_collections.ConfigDict:
  """``get_config(r.arg)`` with the run's overrides; an unknown field is named."""
  return override(_call(module.get_config, r.arg), r.overrides, f'sweep run {r.name}')


def check_local(sweep_dir: str) -> None:
  """Refuses a URL (gs://...) as the sweep directory of sweep.py and report.py."""
  if files.is_url(sweep_dir):
    raise UsageError(f'--workdir={sweep_dir}: a sweep directory must be local (its markers, '
                     'attempt log and report are written with the local file API); give a '
                     'local path, or train into a bucket run by run with train.py.')


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, DONE))


def wall_time(workdir: str) -> float:
  """Seconds spent training the run over all its attempts."""
  path = os.path.join(workdir, ATTEMPTS)
  if not os.path.exists(path):
    return 0.0
  with open(path, encoding='utf-8') as f:
    return sum(json.loads(line)['seconds'] for line in f if line.strip())


@contextlib.contextmanager
def claimed(workdir: str):
  """Yields True while this process holds ``workdir``'s lock (an exclusive ``flock``,
  which the kernel drops when the process ends), False when another process holds it."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, LOCK), 'a', encoding='utf-8') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      yield False
      return
    try:
      yield True
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _check_plan(sweep_dir: str, config_arg: str, runs: Sequence[Run]) -> None:
  """A sweep directory belongs to one config file and argument."""
  path = os.path.join(sweep_dir, PLAN)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
    if saved.get('config') != config_arg:
      raise UsageError(f'--workdir={sweep_dir} holds the sweep --config={saved.get("config")}, '
                       f'not {config_arg}; give another --workdir.')
  os.makedirs(sweep_dir, exist_ok=True)
  files.write_atomically(path, json.dumps(
      {'config': config_arg, 'runs': [r.to_dict() for r in runs]}, indent=2) + '\n')


def run_sweep(config_arg: str, sweep_dir: str, *,
              train: Callable[[ml_collections.ConfigDict, str], Any],
              validate: Callable[[ml_collections.ConfigDict], Any] | None = None,
              log: Callable[[str], None] = print) -> list[str]:
  """Trains every run of the sweep that has not finished; returns the runs' workdirs.

  ``train(config, workdir)`` trains one run to the end (resuming if it can);
  ``validate(config)`` checks every run's config before the first one starts.
  """
  module, runs = plan(config_arg)
  configs = {r.name: config_of(module, r) for r in runs}
  if validate is not None:
    for r in runs:
      try:
        validate(configs[r.name])
      except UsageError as e:
        raise UsageError(f'sweep run {r.name}: {e}') from None
  _check_plan(sweep_dir, config_arg, runs)
  todo = [r for r in runs if not is_done(os.path.join(sweep_dir, r.name))]
  log(f'sweep {config_arg}: {len(runs)} runs in {sweep_dir}; {len(runs) - len(todo)} finished '
      f'already, {len(todo)} to train.')
  trained_seconds, busy = [], []
  for i, r in enumerate(todo, 1):
    workdir = os.path.join(sweep_dir, r.name)
    with claimed(workdir) as mine:
      if not mine or is_done(workdir):  # another process trains it, or has just finished it
        busy.append(r.name)
        log(f'=== sweep run {i}/{len(todo)}: {r.name}: '
            f'{"another sweep.py is training it" if not mine else "finished meanwhile"}; '
            'skipped ===')
        continue
      log(f'=== sweep run {i}/{len(todo)}: {r.name} ===')
      seconds = _train_run(r, configs[r.name], workdir, config_arg, train)
    trained_seconds.append(seconds)
    left = len(todo) - i
    eta = left * sum(trained_seconds) / len(trained_seconds)
    log(f'sweep: {len(runs) - left}/{len(runs)} runs done ({r.name} took '
        f'{format_duration(seconds)}); {left} to go, ETA {format_duration(eta)}')
  if busy:
    log(f'sweep {config_arg}: {len(busy)} runs were trained by another process; run again '
        'once it ends to see that all finished.')
    return [os.path.join(sweep_dir, r.name) for r in runs]
  log(f'sweep {config_arg}: all {len(runs)} runs finished in {sweep_dir}.')
  return [os.path.join(sweep_dir, r.name) for r in runs]


def _train_run(r: Run, config, workdir: str, config_arg: str, train: Callable) -> float:
  """Trains one run to the end, appends the attempt's wall time to ``ATTEMPTS`` (an
  interrupted attempt too) and marks it ``DONE``; returns this attempt's seconds."""
  start = time.time()
  outcome = 'error'
  try:
    train(config, workdir)
    outcome = 'finished'
  except BaseException as e:  # an interruption too: its time is recorded, then re-raised
    outcome = type(e).__name__
    raise
  finally:
    seconds = time.time() - start
    if os.path.isdir(workdir):
      with open(os.path.join(workdir, ATTEMPTS), 'a', encoding='utf-8') as f:
        f.write(json.dumps({'start': start, 'seconds': seconds, 'outcome': outcome}) + '\n')
  files.write_atomically(os.path.join(workdir, DONE), json.dumps(
      {**r.to_dict(), 'config_file': config_arg, 'wall_seconds': wall_time(workdir)},
      indent=2) + '\n')
  return seconds
