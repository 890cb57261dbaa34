"""fixed_head/train/run_config.py: a batch given in rows or in tokens, the one validated and
typed run config (fields an older saved config lacks take their defaults; each section checks
its own fields), where label smoothing is set, and the model fields that change the shapes."""

import dataclasses

import ml_collections
import pytest

from fixed_head import errors
from fixed_head.config import ModelConfig
from fixed_head.train import checkpoints, optim, run_config, sharding

import repo_configs

default, lm1b = repo_configs.load('default'), repo_configs.load('lm1b')


def test_resolve_turns_a_batch_in_tokens_into_rows():
  c = default.get_config()  # n = data.seq_len = 32, batch_size = 64, batch_tokens = None
  assert run_config.resolve(c).batch_size == 64
  c.batch_tokens, c.batch_size = 2048, None
  resolved = run_config.resolve(c)
  assert (resolved.batch_size, resolved.batch_tokens) == (64, 2048)
  assert c.batch_size is None  # a copy: the config itself is left as it was
  c.batch_size = 64  # both given, and they agree
  assert run_config.resolve(c).batch_size == 64


@pytest.mark.parametrize('tokens,size,message', [
    (2048, 32, r'config.batch_tokens=2048 \(= 64 rows of 32 tokens\) and '
               r'config.batch_size=32 disagree'),
    (2050, None, r'config.batch_tokens=2050 is not a whole number of rows of '
                 r'config.data.seq_len=32 tokens'),
    (16, None, r'config.batch_tokens=16 is not a whole number of rows'),
    (1e3, None, r'config.batch_tokens=1000.0: must be a positive integer'),
    (None, None, r'config.batch_size=None and config.batch_tokens=None'),
])
def test_resolve_refuses_a_batch_it_cannot_place(tokens, size, message):
  c = default.get_config()
  c.batch_tokens, c.batch_size = tokens, size
  for check in (run_config.resolve, run_config.validate):
    with pytest.raises(errors.UsageError, match=message):
      check(c)


def test_a_config_saved_before_the_new_fields_still_validates():
  """eval.py --workdir on a run written before batch_tokens, label_smoothing and
  optimizer.weight_decay_mode existed: missing fields mean their defaults."""
  saved = default.get_config().to_dict()
  for section, field in ((saved, 'batch_tokens'), (saved, 'label_smoothing'),
                         (saved['optimizer'], 'weight_decay_mode')):
    section.pop(field, None)
  run_config.validate(ml_collections.ConfigDict(saved), num_devices=1)


def test_validate_returns_the_one_resolved_typed_run_config():
  config = lm1b.get_config('fixed')
  del config.optimizer['weight_decay_mode']  # a field missing: it takes its default
  run = run_config.validate(config, num_devices=8)
  assert isinstance(run, run_config.RunConfig)
  assert (type(run.model), type(run.optimizer), type(run.mesh), type(run.checkpoint)) == (
      ModelConfig, optim.OptimizerConfig, sharding.MeshConfig, checkpoints.CheckpointConfig)
  assert (run.batch_size, run.batch_tokens) == (128, 32_768)  # the batch in rows
  assert run.optimizer.weight_decay_mode == 'decoupled'
  with pytest.raises(AttributeError):
    run.batch_size = 1
  assert run_config.validate(run, num_devices=8) == run  # validating it again changes nothing


def test_label_smoothing_is_an_option_of_the_lm_task():
  config = default.get_config()
  with config.unlocked():
    config.label_smoothing = 0.1
  with pytest.raises(errors.UsageError, match=r'config.label_smoothing is now '
                     r'config.task.label_smoothing: set --config.task.label_smoothing=0.1'):
    run_config.validate(config)
  # A run saved before the move reads its label smoothing where it is now.
  saved = default.get_config().to_dict()
  saved['label_smoothing'] = 0.1
  completed = run_config.complete(saved)
  assert 'label_smoothing' not in completed
  assert completed['task'] == {'name': 'lm', 'label_smoothing': 0.1}
  saved['label_smoothing'] = 0.0
  assert run_config.complete(saved)['task'] == {'name': 'lm'}
  config = default.get_config()
  config.task.label_smoothing = 1.0
  with pytest.raises(errors.UsageError, match=r'config.task.label_smoothing=1.0: must lie in'):
    run_config.validate(config)
  config = default.get_config()
  config.task = ml_collections.ConfigDict(dict(name='classification', label_smoothing=0.1))
  with pytest.raises(errors.UsageError, match=r"unknown option\(s\) \['label_smoothing'\]"):
    run_config.validate(config)


def test_new_model_fields_default_to_the_previous_model():
  c = ModelConfig()
  assert (c.position_embedding, c.scale_embeddings, c.resolved_attention_use_bias,
          c.resolved_mlp_dropout_rate, c.kernel_init, c.embed_init, c.embed_init_std) == (
              'learned', False, True, c.dropout_rate, 'xavier_uniform', 'normal', 0.02)
  for field in ('attention_use_bias', 'position_embedding'):  # they change the shapes
    assert field in run_config.SHAPE_FIELDS


@pytest.mark.parametrize('section, fields, message', [
    (optim.OptimizerConfig, dict(warmup_steps=-1), r'^config.optimizer.warmup_steps=-1: must '),
    (optim.OptimizerConfig, dict(schedule='step'), r"^config.optimizer.schedule='step': not one"),
    (optim.OptimizerConfig, dict(b2=1.0), r'^config.optimizer.b2=1.0: must lie in \[0, 1\)'),
    (checkpoints.CheckpointConfig, dict(every_steps=0),
     r'^config.checkpoint.every_steps=0: must be a positive integer.$'),
    (checkpoints.CheckpointConfig, dict(on_unreadable='skip'),
     r"^config.checkpoint.on_unreadable='skip': must be 'error' or 'fall_back'.$"),
    (sharding.MeshConfig, dict(data=-1, fsdp=-1), r'^config.mesh: only one axis may be -1'),
    (sharding.MeshConfig, dict(tensor=0), r'^config.mesh.tensor=0: mesh sizes must be'),
])
def test_each_section_checks_its_own_fields_when_built(section, fields, message):
  """The one check of each field is where its section is typed: built directly or through
  validate, the message is the same."""
  with pytest.raises(errors.UsageError, match=message):
    section(**fields)
  config = default.get_config()
  config[{optim.OptimizerConfig: 'optimizer', checkpoints.CheckpointConfig: 'checkpoint',
          sharding.MeshConfig: 'mesh'}[section]].update(fields)
  with pytest.raises(errors.UsageError, match=message):
    run_config.validate(config)


def test_the_run_config_checks_its_top_level_fields_when_built():
  run = run_config.validate(default.get_config())
  with pytest.raises(errors.UsageError, match=r'^config.log_every_steps=0: must be a positive'):
    dataclasses.replace(run, log_every_steps=0)
  with pytest.raises(errors.UsageError, match=r'^config.init_step=3 needs config.init_from'):
    dataclasses.replace(run, init_step=3)

