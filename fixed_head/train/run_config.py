"""The run configuration: defaults, validation, and the batch given in tokens (``resolve``).
Whether a saved run may resume with a config is ``fixed_head.train.run_record.check_resume``.

Every config in ``configs/`` starts from ``defaults()`` (an ``ml_collections.ConfigDict``, the
user's interface) and changes fields. ``validate`` runs before anything is built and converts
it, once, into the ``RunConfig`` the rest of the run reads: every field present
(``complete``), the batch in rows, typed and frozen. Each field is checked in one place,
where its section is typed (``RunConfig`` for the top-level fields, ``ModelConfig``,
``optim.OptimizerConfig``, ``sharding.MeshConfig``, ``checkpoints.CheckpointConfig``; the
task, source and evaluators for their open sections); ``validate`` adds only the checks that
span sections.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import ml_collections

from fixed_head import renames
from fixed_head.config import ModelConfig, section_from_mapping
from fixed_head.data import SOURCES
from fixed_head.errors import UsageError
from fixed_head.evaluators import EVALUATORS
from fixed_head.tasks import check_task
from fixed_head.train import optim
from fixed_head.train.checkpoints import CheckpointConfig
from fixed_head.train.sharding import MeshConfig, resolve_mesh_shape

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

  c.mesh = ml_collections.ConfigDict(MeshConfig().to_dict())

  # every_steps, max_to_keep, async_save; on_unreadable: a latest checkpoint that cannot be
  # read stops the run ('error') or is moved to WORKDIR/checkpoints_set_aside (nothing is
  # deleted) and the run resumes from the newest readable one ('fall_back').
  c.checkpoint = ml_collections.ConfigDict(CheckpointConfig().to_dict())

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


def _integer(value: Any, minimum: int | None = None) -> bool:
  """An int (not a bool), at least ``minimum`` when given."""
  return (isinstance(value, int) and not isinstance(value, bool)
          and (minimum is None or value >= minimum))


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
  if not _integer(tokens, 1):
    raise UsageError(f'config.batch_tokens={tokens!r}: must be a positive integer (tokens a '
                     'step), or None to give the batch in rows with config.batch_size.')
  seq_len = config.data.get('seq_len')
  if not _integer(seq_len, 1):
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


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The validated run config, the one the run reads (``validate`` builds it once from the
  ConfigDict). Each field is checked where it is typed: the top-level fields here, the
  model in ``ModelConfig``, the optimizer in ``optim.OptimizerConfig``, the mesh and the
  checkpoints in theirs; the open sections (``task``, ``data``, ``evals``: their fields
  depend on the task, source or evaluator they name) by what they configure. ``validate``
  keeps the checks that span sections."""
  seed: int
  dropout_rng_impl: str
  num_train_steps: int
  batch_size: int  # rows, global (batch_tokens resolved into it)
  batch_tokens: int | None
  log_every_steps: int
  eval_every_steps: int
  profile_steps: int
  init_from: str | None
  init_step: int | None
  task: ml_collections.FrozenConfigDict
  model: ModelConfig
  data: ml_collections.FrozenConfigDict
  optimizer: optim.OptimizerConfig
  mesh: MeshConfig
  checkpoint: CheckpointConfig
  evals: ml_collections.FrozenConfigDict

  def __post_init__(self):
    for field in ('num_train_steps', 'batch_size', 'log_every_steps'):
      if not _integer(getattr(self, field), 1):
        raise UsageError(f'config.{field}={getattr(self, field)!r}: must be a positive '
                         'integer.')
    if not _integer(self.seed):
      raise UsageError(f'config.seed={self.seed!r}: must be an integer.')
    if not _integer(self.profile_steps, 0):
      raise UsageError(f'config.profile_steps={self.profile_steps!r}: must be an integer >= 0 '
                       '(the steps to trace; 0: none).')
    if not _integer(self.eval_every_steps, 0):
      raise UsageError(f'config.eval_every_steps={self.eval_every_steps!r}: must be an '
                       'integer >= 0.')
    if self.init_step is not None and not _integer(self.init_step, 1):
      raise UsageError(f'config.init_step={self.init_step!r}: must be a positive checkpoint '
                       'step, or None for the latest.')
    if self.init_step is not None and not self.init_from:
      raise UsageError(f'config.init_step={self.init_step} needs config.init_from (the run '
                       'to start from).')
    if self.dropout_rng_impl not in DROPOUT_RNG_IMPLS:
      raise UsageError(f'config.dropout_rng_impl={self.dropout_rng_impl!r}: not one of '
                       f'{DROPOUT_RNG_IMPLS}.')

  @classmethod
  def of(cls, tree: dict[str, Any]) -> RunConfig:
    """The typed config of a complete config tree (every field present, batch in rows)."""
    sections = dict(model=model_config(tree['model']),
                    optimizer=optim.OptimizerConfig.of(tree['optimizer']),
                    mesh=MeshConfig.of(tree['mesh']),
                    checkpoint=section_from_mapping(CheckpointConfig, tree['checkpoint'],
                                                    'config.checkpoint', UsageError),
                    **{name: ml_collections.FrozenConfigDict(tree[name])
                       for name in _OPEN_SECTIONS})
    return cls(**{**tree, **sections})

  def get(self, field: str, default: Any = None) -> Any:
    return getattr(self, field, default)

  def to_dict(self) -> dict[str, Any]:
    """The config as a tree of plain values (what config.json holds)."""
    return {f.name: (value.to_dict() if hasattr(value, 'to_dict') else value)
            for f in dataclasses.fields(self) for value in [getattr(self, f.name)]}


def validate(config: ml_collections.ConfigDict | RunConfig, num_devices: int | None = None,
             num_processes: int = 1) -> RunConfig:
  """Checks ``config``; raises UsageError naming the field. Returns the run config the run
  reads: ``config`` completed with the defaults of fields it lacks, the batch in rows
  (``resolve``), typed (``RunConfig``, each section checked where it is typed); here only
  the unknown fields and the checks that span sections.

  ``num_devices``: when given, the mesh and batch are checked against it.
  """
  if isinstance(config, RunConfig):
    config = ml_collections.ConfigDict(config.to_dict())
  unknown = sorted(_known_keys(config) - _known_keys(defaults()))
  renames.check_moved(unknown, config)
  if unknown:
    raise UsageError(f'config: unknown field(s) {unknown}; see fixed_head/train/run_config.py '
                     'defaults() for the known ones.')
  # The batch in rows (batch_tokens and batch_size must agree), every field present.
  run = RunConfig.of(complete(resolve(config).to_dict()))

  task = check_task(run)
  if run.data.name not in SOURCES:
    raise UsageError(f'config.data.name={run.data.name!r}: not one of {sorted(SOURCES)}.')
  seq_len = run.data.get('seq_len')
  if seq_len is not None and seq_len > run.model.max_len:
    raise UsageError(f'config.data.seq_len={seq_len} exceeds config.model.max_len='
                     f'{run.model.max_len}; raise max_len or shorten the sequences.')
  for name, spec in run.evals.items():
    if spec.get('type') not in EVALUATORS:
      raise UsageError(f'config.evals.{name}.type={spec.get("type")!r}: not one of '
                       f'{sorted(EVALUATORS)}.')
    EVALUATORS[spec['type']].check_options(f'config.evals.{name}', spec, task.NAME)

  if num_devices is not None:
    data, fsdp, tensor = resolve_mesh_shape(run.mesh, num_devices)
    if run.batch_size % (data * fsdp):
      raise UsageError(f'config.batch_size={run.batch_size} is not divisible by the '
                       f'data-parallel size data x fsdp = {data * fsdp}.')
    if run.model.num_heads % tensor:
      raise UsageError(f'config.model.num_heads={run.model.num_heads} is not divisible by the '
                       f'tensor-parallel size mesh.tensor={tensor}.')
    if run.batch_size % num_processes:
      raise UsageError(f'config.batch_size={run.batch_size} is not divisible by the '
                       f'number of processes ({num_processes}).')
    for name, spec in run.evals.items():
      size = spec.get('batch_size', EVALUATORS[spec['type']].OPTIONS['batch_size'])
      if size % (data * fsdp):
        raise UsageError(f'config.evals.{name}.batch_size={size} is not divisible by the '
                         f'data-parallel size {data * fsdp}.')
  return run


def model_config(model: Any) -> ModelConfig:
  """The ModelConfig of a run config's ``model`` section (or of a run config); UsageError
  naming the field it refuses."""
  if isinstance(model, RunConfig):
    return model.model
  try:
    return ModelConfig.from_mapping(model)
  except ValueError as e:  # the model's own validation: a field of config.model
    raise UsageError(str(e)) from None


def to_json(config: ml_collections.ConfigDict | RunConfig) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)

