"""Every test process sees 8 CPU devices and shares one compilation cache.

The tests install libtpu (compile.py compiles for TPU slices), and JAX would then try to
open a TPU at start-up, in this process and every one it starts: JAX_PLATFORMS=cpu keeps
them on the CPU. ``tests/test_compile.py`` checks the entry points need no such setting.

Compilation cache: most of a tiny test's time is XLA compiling the same small programs, in
this process and in every entry point a test starts. JAX's persistent cache keeps each
compiled program on disk under a key made of the program's HLO, its compile options, the XLA
flags and the jax, jaxlib and backend versions, so an entry is only ever reused for the same
program: a change to the code changes the program and misses. The directory is
``.cache/jax/<machine>`` in the checkout (ignored by git), keyed again by the CPU's model and
instruction set and the Python version, so a checkout carried to another machine never runs
code compiled for another CPU. The variables are set in the environment, so the processes the
tests start (train.py, sample.py, ...) read and fill the same cache. A clean clone starts
empty. ``FIXED_HEAD_TEST_CACHE=off`` runs without it; a directory in
``JAX_COMPILATION_CACHE_DIR`` is used as given.
"""

import hashlib
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
  # Every program is kept, however small or quick to compile: the tests' programs are tiny.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
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
