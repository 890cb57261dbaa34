"""fixed_head/quiet_logs.py: known-harmless library warnings (Orbax's read-only manager on every
evaluation, TFDS's scans of data_dir) are dropped, and every other warning is kept."""

import logging

import jax
import pytest

from fixed_head import quiet_logs
from fixed_head.train import trainer

import repo_configs

ONE_DEVICE = jax.devices()[:1]


@pytest.fixture(name='run', scope='module')
def _run(tmp_path_factory, copy_prob_run):
  """A copy of ``copy_prob_run``, and its config: the tests write evaluations into it."""
  workdir, config = copy_prob_run
  return repo_configs.copy_run(workdir, str(tmp_path_factory.mktemp('run') / 'run')), config


def test_evaluation_logs_no_read_only_warnings(run, caplog):
  workdir, _ = run
  with caplog.at_level(logging.WARNING):
    trainer.evaluate(None, str(workdir), devices=ONE_DEVICE)
  assert not [r for r in caplog.records if 'read only' in r.getMessage().lower()
              or 'read_only' in r.getMessage()]


def test_known_harmless_library_lines_are_dropped_and_others_kept(caplog):
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  quiet_logs.install()
  with caplog.at_level(logging.WARNING):
    absl_logging.warning('Variant folder %s has no %s', '/data/downloads/x', 'dataset_info.json')
    absl_logging.warning('Given directory is read only=%s', '/w/checkpoints')
    absl_logging.warning('Variant folder %s has invalid version %s', '/data/lm1b/x', 'x')
  assert [r.getMessage() for r in caplog.records] == [
      'Variant folder /data/lm1b/x has invalid version x']
