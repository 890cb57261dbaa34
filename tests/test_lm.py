"""fixed_head/tasks/lm.py: with label smoothing the LM task minimises the smoothed cross
entropy, in training and evaluation alike, and reports the plain nll as its loss."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from fixed_head import tasks as tasks_lib
from fixed_head.train import run_config

import repo_configs

default = repo_configs.load('default')


@pytest.mark.slow
def test_the_smoothed_objective_does_not_depend_on_dropout():
  """The LM task minimises the smoothed cross entropy whatever `deterministic` says; the
  reported loss is the plain nll."""
  config = default.get_config()
  config.task.label_smoothing = 0.1
  run = run_config.validate(config)
  task = tasks_lib.build_task(run, run_config.model_config(run))
  model = task.build_model(nnx.Rngs(0))
  batch = {'tokens': jnp.arange(64, dtype=jnp.int32).reshape(2, 32) % 32}
  for deterministic in (True, False):
    stats = task.stats(model, batch, deterministic=deterministic,
                       rngs=nnx.Rngs(dropout=jax.random.key(0)))
    metrics = task.metrics(stats)
    assert float(task.objective(stats)) == pytest.approx(float(metrics['objective']))
    assert float(metrics['objective']) > float(metrics['loss'])
