"""The run configuration (an ``ml_collections.ConfigDict``): defaults, validation, and the
batch given in tokens (``resolve``). Whether a saved run may resume with a config is
``fixed_head.train.run_record.check_resume``.

Every config in ``configs/`` starts from ``defaults()`` and changes fields. ``validate`` runs
before anything is built, names the field at fault, and returns the one config the rest of
the run reads: every field present (``complete``), the batch in rows, frozen.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import ml_collections

from fixed_head.train import optim
from fixed_head.config import ModelConfig
from fixed_head.data import SOURCES
from fixed_head import renames
from fixed_head.errors import UsageError
from fixed_head.evaluators import EVALUATORS
from fixed_head.tasks import check_task
from fixed_head.train.sharding import resolve_mesh_shape

# Model fields that change parameter shapes or structure: a checkpoint written with other
# values cannot be restored.
SHAPE_FIELDS = ('model_type', 'vocab_size', 'emb_dim', 'num_heads', 'head_size', 'num_layers',
                'mlp_dim', 'max_len', 'type_vocab_size', 'norm', 'tie_embeddings', 'use_bias',
                'attention_use_bias', 'position_embedding', 'param_dtype', 'scan_layers')


# jax.random.key's implementations that config.dropout_rng_impl may name; the first is JAX's
# default.
DROPOUT_RNG_IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')


def defaults() -> ml_collections.ConfigDict:
  """Every field a run config has, with its default value."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # parameter init and dropout; the run is a function of (config, seed)
  # The PRNG that draws dropout's masks (the only random numbers a step draws):
  # 'threefry2x32' (JAX's default), or 'rbg' / 'unsafe_rbg', which draw them with fewer
  # operations (MaxText trains with 'unsafe_rbg'). benchmarks/prng.py measures them: about
  # a fifth off an LM1B-shaped step on a CPU, but XLA does not split their generator over
  # a mesh: compiled for a TPU slice every chip draws the whole batch's mask (BERT at n = 512
  # on v5e:8x8: 33 GB of temporaries a chip against threefry's 2.5 GiB). Check with
  # compile.py before using them on more than one device. The initialisation keeps
  # threefry2x32 whatever this says. The masks of 'rbg' and 'unsafe_rbg' may differ across
  # backends and meshes: resume on the same mesh.
  c.dropout_rng_impl = 'threefry2x32'
  c.num_train_steps = 1000
  # Rows of data.seq_len tokens, global over all processes and devices. Typed `object` so
  # that --config.batch_size=None parses: None = derived from batch_tokens by resolve().
  c.batch_size = ml_collections.config_dict.FieldReference(64, field_type=object)
  # The batch in tokens (tensor2tensor counts batches in tokens), for configs that follow a
  # recipe given in tokens; None = given in rows. resolve() turns it into batch_size.
  c.batch_tokens = ml_collections.config_dict.placeholder(object)

  # What is trained (fixed_head/tasks): 'lm', 'bert_pretraining', 'classification' (with
  # num_classes) or 'span_qa'; the task's options sit beside its name.
  c.task = ml_collections.ConfigDict(dict(name='lm'))
  # Start a new run from the latest (or init_step) checkpoint of another run's workdir: a
  # fine-tuning task loads its encoder, a second pre-training stage everything.
  c.init_from = ml_collections.config_dict.placeholder(str)
  c.init_step = ml_collections.config_dict.placeholder(int)

  c.model = ml_collections.ConfigDict(ModelConfig().to_dict())
  # head_size: None (baseline d / h) or an int; typed `object` so that both
  # --config.model.head_size=64 and --config.model.head_size=None parse.
  c.model.head_size = ml_collections.config_dict.placeholder(object)
  # None means "follow use_bias" / "follow dropout_rate"; typed so overrides parse.
  c.model.attention_use_bias = ml_collections.config_dict.placeholder(bool)
  c.model.mlp_dropout_rate = ml_collections.config_dict.placeholder(float)

  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'

  # weight_decay_mode: 'decoupled' (AdamW's) or 'l2' (tensor2tensor's: in the gradient);
  # the fields and schedules are described in fixed_head/train/optim.py.
  c.optimizer = ml_collections.ConfigDict(optim.DEFAULTS)

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  c.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=500, max_to_keep=3, async_save=True))
  # A latest checkpoint that cannot be read: 'error' stops with a message; 'fall_back'
  # moves it to WORKDIR/checkpoints_set_aside (nothing is deleted) and resumes from the
  # newest readable one.
  c.checkpoint.on_unreadable = 'error'

  c.log_every_steps = 50
  c.eval_every_steps = 500  # 0: evaluate only at the end
  # Trace this many steps with jax.profiler into WORKDIR/profile (fixed_head/train/profiling.py).
  c.profile_steps = 0
  # Named evaluators, run during training and by eval.py: {name: {type: ..., options}}.
  c.evals = ml_collections.ConfigDict()
  c.evals.valid = dict(type='lm', split='eval', num_examples=1024, batch_size=64)
  return c


# Sections whose fields depend on a choice inside them (the source, the evaluators, the
# task): their defaults live with what they configure, not in defaults().
_OPEN_SECTIONS = ('data', 'evals', 'task')


def complete(tree: dict[str, Any]) -> dict[str, Any]:
  """``tree`` (a config as a dict, e.g. a workdir's config.json) with every field
  ``defaults()`` has: a field added since it was written takes its default, which
  reproduces the code that wrote it; a moved field (``renames.MOVED``) goes where it is now."""

  def merge(default: dict[str, Any], given: dict[str, Any], top: bool) -> dict[str, Any]:
    merged = dict(default)
    for key, value in given.items():
      nested = isinstance(value, dict) and isinstance(default.get(key), dict)
      merged[key] = (merge(default[key], value, False)
                     if nested and not (top and key in _OPEN_SECTIONS) else value)
    return merged

  return merge(defaults().to_dict(), renames.moved_to_today(tree), True)


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the batch in rows: when ``batch_tokens`` is set,
  ``batch_size`` = ``batch_tokens`` // ``data.seq_len``. The trainer runs on the result.

  Raises UsageError, naming both fields, when ``batch_tokens`` is not a whole number of
  rows, or when ``batch_size`` is set too (not None) and disagrees with it.
  """
  resolved = (config.as_configdict() if isinstance(config, ml_collections.FrozenConfigDict)
              else copy.deepcopy(config))
  tokens = config.get('batch_tokens')
  if tokens is None:
    if config.get('batch_size') is None:
      raise UsageError('config.batch_size=None and config.batch_tokens=None: give the batch '
                       'in rows (--config.batch_size) or in tokens (--config.batch_tokens).')
    return resolved
  if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
    raise UsageError(f'config.batch_tokens={tokens!r}: must be a positive integer (tokens a '
                     'step), or None to give the batch in rows with config.batch_size.')
  seq_len = config.data.get('seq_len')
  if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
    raise UsageError(f'config.batch_tokens={tokens} needs config.data.seq_len (tokens a row), '
                     f'which is {seq_len!r}; give the batch in rows with config.batch_size.')
  rows, rest = divmod(tokens, seq_len)
  if rest or not rows:
    raise UsageError(f'config.batch_tokens={tokens} is not a whole number of rows of '
                     f'config.data.seq_len={seq_len} tokens; make it a multiple of {seq_len}.')
  size = config.get('batch_size')
  if size is not None and size != rows:
    raise UsageError(f'config.batch_tokens={tokens} (= {rows} rows of {seq_len} tokens) and '
                     f'config.batch_size={size!r} disagree: give the batch one way, in tokens '
                     '(--config.batch_size=None) or in rows (--config.batch_tokens=None).')
  resolved.batch_size = rows
  return resolved


def _known_keys(tree: Any, prefix: str = '') -> set[str]:
  keys = set()
  for key, value in tree.items():
    path = f'{prefix}{key}'
    keys.add(path)
    if isinstance(value, ml_collections.ConfigDict) and key not in ('data', 'evals', 'task'):
      keys |= _known_keys(value, path + '.')
  return keys


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None,
             num_processes: int = 1) -> ml_collections.FrozenConfigDict:
  """Checks ``config``; raises UsageError naming the field. Returns the run config the run
  reads: ``config`` completed with the defaults of fields it lacks, the batch in rows
  (``resolve``), frozen. ``model_config(returned)`` is its model.

  ``num_devices``: when given, the mesh and batch are checked against it.
  """
  unknown = sorted(_known_keys(config) - _known_keys(defaults()))
  renames.check_moved(unknown, config)
  if unknown:
    raise UsageError(f'config: unknown field(s) {unknown}; see fixed_head/train/run_config.py '
                     'defaults() for the known ones.')
  # The batch in rows (batch_tokens and batch_size must agree), every field present.
  config = ml_collections.ConfigDict(complete(resolve(config).to_dict()))
  for field in ('num_train_steps', 'batch_size', 'log_every_steps'):
    if not isinstance(config[field], int) or config[field] <= 0:
      raise UsageError(f'config.{field}={config[field]!r}: must be a positive integer.')
  profile = config.profile_steps
  if isinstance(profile, bool) or not isinstance(profile, int) or profile < 0:
    raise UsageError(f'config.profile_steps={profile!r}: must be an integer >= 0 (the steps '
                     'to trace; 0: none).')
  if not isinstance(config.eval_every_steps, int) or config.eval_every_steps < 0:
    raise UsageError(f'config.eval_every_steps={config.eval_every_steps!r}: must be an '
                     'integer >= 0.')
  ck = config.checkpoint
  for field in ('every_steps', 'max_to_keep'):
    if not isinstance(ck[field], int) or ck[field] <= 0:
      raise UsageError(f'config.checkpoint.{field}={ck[field]!r}: must be a positive integer.')
  if ck.on_unreadable not in ('error', 'fall_back'):
    raise UsageError(f"config.checkpoint.on_unreadable={ck.on_unreadable!r}: must be 'error' "
                     "or 'fall_back'.")

  model = model_config(config)

  task = check_task(config)
  init_step = config.init_step
  if init_step is not None and (isinstance(init_step, bool) or not isinstance(init_step, int)
                                or init_step <= 0):
    raise UsageError(f'config.init_step={init_step!r}: must be a positive checkpoint step, or '
                     'None for the latest.')
  if init_step is not None and not config.init_from:
    raise UsageError(f'config.init_step={init_step} needs config.init_from (the run to start '
                     'from).')

  if config.data.name not in SOURCES:
    raise UsageError(f'config.data.name={config.data.name!r}: not one of {sorted(SOURCES)}.')
  seq_len = config.data.get('seq_len')
  if seq_len is not None and seq_len > model.max_len:
    raise UsageError(f'config.data.seq_len={seq_len} exceeds config.model.max_len='
                     f'{model.max_len}; raise max_len or shorten the sequences.')

  opt = config.optimizer
  if opt.name not in optim.OPTIMIZERS:
    raise UsageError(f'config.optimizer.name={opt.name!r}: not one of {optim.OPTIMIZERS}.')
  if opt.schedule not in optim.SCHEDULES:
    raise UsageError(f'config.optimizer.schedule={opt.schedule!r}: not one of '
                     f'{optim.SCHEDULES}.')
  if not opt.learning_rate > 0:
    raise UsageError(f'config.optimizer.learning_rate={opt.learning_rate!r}: must be positive.')
  if opt.warmup_steps < 0:
    raise UsageError(f'config.optimizer.warmup_steps={opt.warmup_steps}: must be >= 0.')
  mode = opt.weight_decay_mode
  if mode not in optim.WEIGHT_DECAY_MODES:
    raise UsageError(f'config.optimizer.weight_decay_mode={mode!r}: not one of '
                     f'{optim.WEIGHT_DECAY_MODES}.')
  if opt.name == 'bert_adamw' and mode != 'decoupled':
    raise UsageError(f"config.optimizer.weight_decay_mode={mode!r}: 'bert_adamw' decays the "
                     "weights decoupled, as Google BERT; set "
                     "--config.optimizer.weight_decay_mode=decoupled.")
  if config.dropout_rng_impl not in DROPOUT_RNG_IMPLS:
    raise UsageError(f'config.dropout_rng_impl={config.dropout_rng_impl!r}: not one of '
                     f'{DROPOUT_RNG_IMPLS}.')

  for name, spec in config.evals.items():
    if spec.get('type') not in EVALUATORS:
      raise UsageError(f'config.evals.{name}.type={spec.get("type")!r}: not one of '
                       f'{sorted(EVALUATORS)}.')
    EVALUATORS[spec['type']].check_options(f'config.evals.{name}', spec, task.NAME)

  if num_devices is not None:
    try:
      data, fsdp, tensor = resolve_mesh_shape(config.mesh, num_devices)
    except ValueError as e:
      raise UsageError(f'config.{e}') from None
    if config.batch_size % (data * fsdp):
      raise UsageError(f'config.batch_size={config.batch_size} is not divisible by the '
                       f'data-parallel size data x fsdp = {data * fsdp}.')
    if model.num_heads % tensor:
      raise UsageError(f'config.model.num_heads={model.num_heads} is not divisible by the '
                       f'tensor-parallel size mesh.tensor={tensor}.')
    if config.batch_size % num_processes:
      raise UsageError(f'config.batch_size={config.batch_size} is not divisible by the '
                       f'number of processes ({num_processes}).')
    for name, spec in config.evals.items():
      size = spec.get('batch_size', EVALUATORS[spec['type']].OPTIONS['batch_size'])
      if size % (data * fsdp):
        raise UsageError(f'config.evals.{name}.batch_size={size} is not divisible by the '
                         f'data-parallel size {data * fsdp}.')
  return ml_collections.FrozenConfigDict(config)


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """The ModelConfig of ``config.model``; UsageError naming the field it refuses."""
  try:
    return ModelConfig.from_mapping(config.model)
  except ValueError as e:  # the model's own validation: a field of config.model
    raise UsageError(str(e)) from None


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)

