"""Every test process sees 8 CPU devices and shares one compilation cache; files run longest
first.

The tests install libtpu (compile.py compiles for TPU slices), and JAX would then try to
open a TPU at start-up, in this process and every one it starts: JAX_PLATFORMS=cpu keeps
them on the CPU. ``tests/test_compile.py`` checks the entry points need no such setting.

Compilation cache: most of a tiny test's time is XLA compiling the same small programs, in this
process and in every entry point a test starts. JAX's persistent cache keeps each compiled
program (those that take 0.5 s or more to compile) on disk under a key made of the program's
HLO, its compile options, the XLA flags and the jax, jaxlib and backend versions, so an entry
is only ever reused for the same program: a change to the code changes the program and misses.
The directory is ``.cache/jax/<machine>`` in the checkout (ignored by git), keyed again by the
CPU's model and instruction set and the Python version, so a checkout carried to another
machine never runs code compiled for another CPU. The variables are set in the environment, so
the processes the tests start (train.py, sample.py, ...) read and fill the same cache. A clean
clone starts empty. ``FIXED_HEAD_TEST_CACHE=off`` runs without it; a directory in
``JAX_COMPILATION_CACHE_DIR`` is used as given.
"""

import hashlib
import json
import os
import platform
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _machine_key() -> str:
  """A short digest of what compiled code depends on outside JAX's own key: the CPU's model
  and flags, the Python version and the installed jax, jaxlib and libtpu."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  parts = [platform.machine(), sys.version]
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      parts += sorted({line for line in f if line.startswith(('model name', 'flags'))})
  except OSError:
    parts.append(platform.processor())
  for dist in ('jax', 'jaxlib', 'libtpu'):
    try:
      parts.append(f'{dist}=={metadata.version(dist)}')
    except metadata.PackageNotFoundError:
      pass
  return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]


def _compilation_cache() -> None:
  if os.environ.get('FIXED_HEAD_TEST_CACHE', '').lower() in ('0', 'off', 'false', 'no'):
    return
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                        os.path.join(REPO, '.cache', 'jax', _machine_key()))
  # Only programs that take half a second or more to compile are kept (a train step, an
  # evaluation, a model's forward pass under jit), whatever their size. Writing every small
  # eager operation too (4,138 of a suite's 4,406 entries compile in under a second) costs
  # more than it saves: with a size limit, JAX scans the whole directory under a lock shared by
  # every process before each write (0.3 s at 4,400 entries, on a 2-core Xeon).
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
  # A size limit makes JAX lock each read and write across processes (it needs filelock), so
  # no process reads an entry another is still writing.
  os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(4 << 30))


os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_compilation_cache()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_num_cpu_devices', 8)


@pytest.fixture(scope='session')
def tiny_lm_run(tmp_path_factory) -> str:
  """The session's one tiny trained text LM (``repo_configs.tiny_byte_lm``: 2 layers, h = 2,
  d_p = 16, n = 32, checkpoints at steps 2 and 4, evaluated at 4). Tests read it; a test that
  writes into a run takes ``repo_configs.copy_run(tiny_lm_run, ...)`` instead."""
  import repo_configs  # pylint: disable=g-import-not-at-top
  return repo_configs.tiny_byte_lm(str(tmp_path_factory.mktemp('tiny_lm') / 'run'),
                                   num_layers=2, checkpoint_every=2)


@pytest.fixture(scope='session')
def reference_run(tmp_path_factory):
  """An uninterrupted 8-step run of ``test_train.tiny_config`` (checkpoints at 4 and 8): its
  config and final parameters. A test deep-copies the config before it changes it."""
  from fixed_head.train import trainer  # pylint: disable=g-import-not-at-top
  from test_train import final_params, tiny_config  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('reference')
  config = tiny_config(steps=8)
  trainer.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  return config, final_params(str(workdir), config)


@pytest.fixture(scope='session')
def copy_prob_run(tmp_path_factory):
  """A finished 4-step run of ``test_train.tiny_config`` whose data differs from
  configs/default.py's (copy_prob 0.8), and its config. Tests that evaluate or train in it take
  ``repo_configs.copy_run`` of it."""
  from fixed_head.train import trainer  # pylint: disable=g-import-not-at-top
  from test_train import tiny_config  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('run')
  config = tiny_config(steps=4)
  config.data.copy_prob = 0.8
  trainer.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  return workdir, config



DURATIONS = os.path.join(REPO, 'tests', 'durations.json')


def pytest_addoption(parser):
  parser.addoption('--store-durations', action='store_true',
                   help='write each test file\'s measured seconds to tests/durations.json '
                   '(the order files are run in): run it with the whole suite, as a file run '
                   'in part is stored with the part\'s seconds; files not run keep their entry')


def _file_of(nodeid: str) -> str:
  return nodeid.split('::')[0]


def _read_durations() -> dict[str, float]:
  """{test file: seconds} from tests/durations.json, or {} without one."""
  try:
    with open(DURATIONS, encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def pytest_collection_modifyitems(config, items):
  """The longest files first, so that with ``-n N`` they start at once and the short ones fill
  the gaps at the end (xdist hands out files in this order when run with
  ``--no-loadscope-reorder``, as pytest.ini does). A file's length is its seconds in
  tests/durations.json (``--store-durations`` rewrites it), else 10 s for each ``slow`` test
  in it. Only the order changes; the order within a file is kept."""
  del config
  guess, first = {}, {}
  for i, item in enumerate(items):
    path = _file_of(item.nodeid)
    first.setdefault(path, i)
    guess[path] = guess.get(path, 0) + 10 * (item.get_closest_marker('slow') is not None)
  seconds = {**guess, **{path: t for path, t in _read_durations().items() if path in guess}}
  items.sort(key=lambda item: (-seconds[_file_of(item.nodeid)], first[_file_of(item.nodeid)]))


class _StoreDurations:
  """``--store-durations``: in the process that receives the reports (not an xdist worker),
  each file's total seconds (setup, call and teardown) into tests/durations.json."""

  def __init__(self):
    self.seconds = {}

  def pytest_runtest_logreport(self, report):
    path = _file_of(report.nodeid)
    self.seconds[path] = self.seconds.get(path, 0.0) + report.duration

  def pytest_sessionfinish(self):
    durations = _read_durations()
    durations.update({path: round(t, 1) for path, t in self.seconds.items()})
    with open(DURATIONS, 'w', encoding='utf-8') as f:
      json.dump(dict(sorted(durations.items())), f, indent=1)
      f.write('\n')


def pytest_configure(config):
  if config.getoption('store_durations') and not hasattr(config, 'workerinput'):
    config.pluginmanager.register(_StoreDurations(), 'store_durations')
