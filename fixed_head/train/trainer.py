"""Training and evaluation of a run, callable from Python with a config and a workdir.

  train_and_evaluate(config, workdir)   # what train.py runs
  evaluate(config, workdir, step=None)  # what eval.py runs

One trainer for every task: ``config.task`` names the task object
(``fixed_head.tasks``) that builds the model and says what a batch contributes to the
objective and the metrics; ``config.evals`` names the evaluators, each with its own data.
``config.init_from`` starts a new run from a pre-trained one (big_vision's ``model_init``):
the task says which parameters it loads (fine-tuning: the encoder; its head stays fresh).

The train state is a plain dict ``{'step', 'params', 'opt_state'}`` (params as a pure
dict of arrays), created already sharded by ``jax.jit(init, out_shardings=...)``; the
step ``train_step(state, batch) -> (state, metrics)`` is a pure function compiled with
explicit in/out shardings and the state donated. Dropout keys are derived from
(seed, step), and the data iterator position is checkpointed, so a resumed run
continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from fixed_head.train import checkpoints
from fixed_head import data as data_lib
from fixed_head import files
from fixed_head import evaluators as evaluators_lib
from fixed_head import tasks as tasks_lib
from fixed_head.config import ModelConfig
from fixed_head.errors import (CheckpointError, Interrupted, NonFiniteLoss, Preempted,
                               UsageError)
from fixed_head.data import vocab
from fixed_head.nn import axes
from fixed_head.nn.attention_op import AttentionOp
from fixed_head.train import optim, preemption, profiling, run_config, run_record, sharding
from fixed_head.train.metric_writer import MetricWriter

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything derived from a config and the devices, before any array is made."""

  config: run_config.RunConfig  # the run config run_config.validate returns
  task: tasks_lib.Task
  mesh: Mesh
  graphdef: Any  # nnx.GraphDef of the model
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: State  # ShapeDtypeStructs with their shardings
  state_shardings: State

  @property
  def model_config(self) -> ModelConfig:
    return self.config.model

  def model_of(self, params) -> nnx.Module:
    """The task's model holding ``params`` (a pure dict, matched to the model's variables
    by path); for use inside jit."""
    return nnx.merge(self.graphdef, params)

  def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over ('data', 'fsdp')."""
    return {k: jax.make_array_from_process_local_data(
        sharding.batch_sharding(self.mesh, v.ndim), v) for k, v in local_batch.items()}


def _keys(seed: int, dropout_impl: str) -> tuple[jax.Array, jax.Array]:
  """(init key, dropout base key) from the run seed; the dropout key of ``dropout_impl``
  (config.dropout_rng_impl), the init key always threefry's."""
  init_key, dropout_key = jax.random.split(jax.random.key(seed))
  if dropout_impl != run_config.DROPOUT_RNG_IMPLS[0]:
    dropout_key = jax.random.split(jax.random.key(seed, impl=dropout_impl))[1]
  return init_key, dropout_key


def _init_key(config) -> jax.Array:
  return _keys(config.seed, config.dropout_rng_impl)[0]


def _init_fn(task: tasks_lib.Task, tx: optax.GradientTransformation) -> Callable:
  """key -> fresh train state {'step', 'params', 'opt_state'}."""

  def init(key):
    model = task.build_model(nnx.Rngs(params=key))
    params = nnx.to_pure_dict(nnx.state(model))
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params)}

  return init


def build_setup(config: ml_collections.ConfigDict,
                devices: Sequence[jax.Device] | None = None, *,
                attention_platform: str | None = None,
                attention_record: list[dict] | None = None) -> Setup:
  """Validates ``config`` against the devices and derives the mesh, model and shardings;
  ``Setup.config`` is the validated run config (``RunConfig``: every field, the batch in
  rows, typed).
  The model's attention chooses its implementation for ``attention_platform`` (default:
  this process's backend) and appends each choice to ``attention_record``, if given
  (``AttentionOp``'s ``platform`` and ``record``; compile_check sets both)."""
  devices = jax.devices() if devices is None else list(devices)
  # The processes the devices belong to: this run's, or those of a slice compiled for.
  num_processes = len({d.process_index for d in devices})
  config = run_config.validate(config, num_devices=len(devices), num_processes=num_processes)
  model_config = config.model
  op = AttentionOp(model_config.attention_impl, platform=attention_platform,
                   record=attention_record)
  task = tasks_lib.build_task(config, model_config, op)
  mesh = sharding.make_mesh(config.mesh, devices)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps,
                                      emb_dim=model_config.emb_dim)

  graphdef, abstract_params, param_shardings = _abstract_model(task, mesh)
  replicated = sharding.replicated(mesh)

  abstract = jax.eval_shape(_init_fn(task, tx), _init_key(config))
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, abstract['opt_state'], param_shardings,
      transform_non_params=lambda _: replicated)
  state_shardings = {'step': replicated, 'params': param_shardings,
                     'opt_state': opt_shardings}
  return Setup(config=config, task=task, mesh=mesh, graphdef=graphdef, tx=tx,
               schedule=schedule, abstract_state=_placed(abstract, state_shardings),
               state_shardings=state_shardings)


def _abstract_model(task: tasks_lib.Task, mesh: Mesh) -> tuple[Any, Any, Any]:
  """(graphdef, parameter state of ShapeDtypeStructs, parameter shardings as a pure dict)
  of the task's model, without making any array."""
  abstract_model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
  graphdef, abstract_params = nnx.split(abstract_model)
  return graphdef, abstract_params, sharding.param_shardings(abstract_params, mesh)


def _placed(shapes: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying their shardings: the target a restore places arrays by."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      shapes, shardings)


def init_state(setup: Setup) -> State:
  """Fresh train state, created directly in its shardings."""
  init = _init_fn(setup.task, setup.tx)
  return jax.jit(init, out_shardings=setup.state_shardings)(_init_key(setup.config))


def batch_spec(setup: Setup, data_config=None, rows: int | None = None
               ) -> dict[str, jax.ShapeDtypeStruct]:
  """A global batch of ``rows`` (default: the training batch) of ``data_config`` (default:
  config.data), sharded over ('data', 'fsdp'), from the config alone: what a step is
  compiled for."""
  data_config = setup.config.data if data_config is None else data_config
  rows = setup.config.batch_size if rows is None else rows
  return {k: jax.ShapeDtypeStruct(shape, dtype,
                                  sharding=sharding.batch_sharding(setup.mesh, len(shape)))
          for k, (shape, dtype) in data_lib.batch_spec(data_config, rows).items()}


def compile_train_step(setup: Setup) -> tuple[Any, float]:
  """(the train step compiled ahead of time for ``batch_spec(setup)``, seconds it took).
  ``train.py`` runs it before reading data; ``compile.py`` compiles it for a TPU slice."""
  start = time.perf_counter()
  spec = batch_spec(setup)
  setup.task.check_batch(spec)  # a source made for another task: one line, before compiling
  compiled = make_train_step(setup, spec).lower(setup.abstract_state, spec).compile()
  return compiled, time.perf_counter() - start


def make_train_step(setup: Setup, batch_example: dict[str, Any]) -> Callable:
  """The jitted ``train_step(state, batch) -> (state, metrics)`` for batches shaped like
  ``batch_example`` (arrays or ShapeDtypeStructs)."""
  dropout_base = _keys(setup.config.seed, setup.config.dropout_rng_impl)[1]
  tx, schedule, task = setup.tx, setup.schedule, setup.task

  def train_step(state: State, batch: dict[str, jax.Array]):
    step = state['step']

    def loss_fn(params):
      """The task's objective (weight decay, of either mode, is in ``tx``)."""
      rngs = nnx.Rngs(dropout=jax.random.fold_in(dropout_base, step))
      stats = task.stats(setup.model_of(params), batch, deterministic=False, rngs=rngs)
      return task.objective(stats), stats

    (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    with jax.named_scope('optimizer'):
      updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
      params = optax.apply_updates(state['params'], updates)
    metrics = {**task.metrics(stats), 'grad_norm': optax.tree.norm(grads),
               'learning_rate': schedule(step)}
    return {'step': step + 1, 'params': params, 'opt_state': opt_state}, metrics

  batch_shardings = {k: sharding.batch_sharding(setup.mesh, v.ndim)
                     for k, v in batch_example.items()}
  return jax.jit(axes.traced_on(setup.mesh, train_step),
                 in_shardings=(setup.state_shardings, batch_shardings),
                 out_shardings=(setup.state_shardings, sharding.replicated(setup.mesh)),
                 donate_argnums=(0,))


def _check_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """The workdir's saved config (None for a new run), after refusing a bucket that cannot
  be written (before anything is) or a saved run that this config cannot continue
  truthfully (other shapes, optimizer or data)."""
  if files.is_url(workdir) and jax.process_index() == 0:
    try:
      files.check_url_writable(workdir)
    except OSError as e:
      raise UsageError(f'--workdir={workdir}: {e}.') from None
  saved = run_record.load(workdir)
  if saved is not None:
    run_record.check_resume(saved, config, workdir)
  return saved


def _make_workdir(workdir: str) -> None:
  """Creates ``workdir`` (process 0), or says why it cannot be written."""
  if jax.process_index() != 0 or files.is_url(workdir):  # a bucket: checked already
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    if not os.access(workdir, os.W_OK | os.X_OK):
      raise PermissionError(13, 'Permission denied', workdir)
  except OSError as e:
    raise UsageError(f'workdir {workdir} cannot be written ({e.strerror}: {e.filename}); '
                     'choose another --workdir or fix its permissions.') from e


def _check_source(setup: Setup, source, where: str = 'config.data') -> None:
  """Refuses a source whose vocabulary or rows do not fit the model and task."""
  vocab = getattr(source, 'vocab_size', None)
  if vocab is not None and vocab != setup.model_config.vocab_size:
    raise UsageError(f'config.model.vocab_size={setup.model_config.vocab_size} does not match '
                     f'the data ({vocab} symbols); set them equal.')
  setup.task.check_source(source, where)


def _build_evaluators(setup: Setup, tokenizer) -> dict[str, Any]:
  return evaluators_lib.build_evaluators(
      setup.config, setup.task, setup.model_of, setup.put_batch, tokenizer=tokenizer,
      process_index=jax.process_index(), process_count=jax.process_count(),
      replicated=sharding.replicated(setup.mesh))


def check_init_from(config: run_config.RunConfig, model_config: ModelConfig
                    ) -> run_config.RunConfig:
  """The run config of the run ``config.init_from`` names, after checking that it is a
  training run whose model has this model's shapes; UsageError naming the field otherwise.
  Checked once, before anything is built or written; ``load_pretrained`` takes the result."""
  source_dir = config.init_from
  saved = run_record.load(source_dir) if files.is_dir(source_dir) else None
  if saved is None:
    raise UsageError(f'config.init_from={source_dir!r}: no training run there (no '
                     f'{run_record.CONFIG}); give the workdir of a pre-training run.')
  try:
    source_config = run_config.validate(ml_collections.ConfigDict(saved))
  except UsageError as e:
    raise UsageError(f'config.init_from={source_dir}: the config.json of that run does not '
                     f'validate ({e}); start from another run.') from None
  source_model = source_config.model
  for field in run_config.SHAPE_FIELDS:
    ours, theirs = getattr(model_config, field), getattr(source_model, field)
    if field != 'model_type' and ours != theirs:
      raise UsageError(
          f'config.model.{field}={ours!r} but the run in config.init_from={source_dir} has '
          f'{theirs!r}; its parameters cannot be loaded into this model. Set '
          f'--config.model.{field}={theirs!r}, or start from another run.')
  return source_config


def load_pretrained(setup: Setup, params: Any, source_config: run_config.RunConfig,
                    log: Callable[[str], None] = print) -> Any:
  """``params`` with the parameters the task loads (``Task.PRETRAINED``: the encoder for
  fine-tuning, everything for a second pre-training stage) replaced by those of the run
  ``config.init_from`` (whose config ``check_init_from`` returned: ``source_config``) at
  step ``config.init_step`` (None: its latest checkpoint).

  Raises UsageError, naming the field, when that run has no such step or trained a task
  whose parameters are not those this task loads.
  """
  source_dir = setup.config.init_from
  source_task = tasks_lib.build_task(source_config, source_config.model)
  _, shapes, shardings = _abstract_model(source_task, setup.mesh)
  step, loaded = checkpoints.load_params(source_dir, setup.config.init_step,
                                         _placed(nnx.to_pure_dict(shapes), shardings),
                                         field='config.init_step')
  names = setup.task.PRETRAINED
  if names is None:
    if jax.tree.structure(loaded) != jax.tree.structure(params):
      raise UsageError(f'config.init_from={source_dir}: that run trained task '
                       f'{source_task.NAME!r}, whose parameters are not those of task '
                       f'{setup.task.NAME!r}; start from a run of the same task.')
    params = loaded
  else:
    params = dict(params)
    for name in names:
      if name not in loaded:
        raise UsageError(f'config.init_from={source_dir}: that run (task '
                         f'{source_task.NAME!r}) has no {name!r} parameters to load; '
                         'start from a BERT pre-training run.')
      params[name] = loaded[name]
  log(f'Loaded all parameters from {source_dir} (step {step}).' if names is None else
      f'Loaded {", ".join(names)} from {source_dir} (step {step}); the rest starts fresh.')
  return params


def _eval_line(name: str, step: int, result: dict[str, float]) -> str:
  """The console line of an evaluation: its totals; the details (keys with a '/', e.g. the
  LM's loss by position) go to metrics.jsonl and eval.py's JSON only."""
  counts = ('num_tokens', 'num_rows')
  shown = ', '.join(f'{k} {v:,}' if isinstance(v, int) else f'{k} {v:.4f}'
                    for k, v in result.items() if k not in counts and '/' not in k)
  scored = (f' ({result["num_tokens"]:,} tokens in {result["num_rows"]:,} rows)'
            if all(k in result for k in counts) else
            f' ({result["num_rows"]:,} rows)' if 'num_rows' in result else '')
  return f'eval {name} @ step {step}: {shown}{scored}'


def _run_evals(evaluators, params, step, writer: MetricWriter) -> dict[str, dict[str, float]]:
  results = {name: evaluator(params) for name, evaluator in evaluators.items()}
  for name, result in results.items():
    writer.write(step, {f'{name}/{k}': v for k, v in result.items()})
    writer.log(_eval_line(name, step, result))
  return results


def _restore_latest(config, workdir, manager, setup: Setup, log) -> tuple[int, Any, Any]:
  """(step, {'params', 'opt_state'}, data state) of the newest readable checkpoint, or
  (0, None, None). An unreadable one raises, or with checkpoint.on_unreadable='fall_back'
  is set aside and the one before is tried."""
  while step := manager.latest_step():
    try:
      restored, data_state = checkpoints.restore(manager, step, setup.abstract_state)
      return step, restored, data_state
    except CheckpointError as e:
      if config.checkpoint.on_unreadable != 'fall_back':
        raise
      path = checkpoints.set_aside(workdir, step)
      manager.reload()
      log(f'{e}\n-> on_unreadable=fall_back: moved step {step} to {path}; trying the '
          'checkpoint before it.')
  return 0, None, None


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@jax.jit
def _first_nonfinite(first: dict[str, jax.Array], step: jax.Array,
                     metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """``first`` ({'step', 'loss', 'grad_norm'}; step 0 = none yet) updated with this step's
  metrics if they are the first NaN/Inf. Runs on the device each step: no host sync."""
  bad = ~(jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm']))
  take = (first['step'] == 0) & bad
  return {'step': jnp.where(take, step, first['step']),
          'loss': jnp.where(take, metrics['loss'], first['loss']),
          'grad_norm': jnp.where(take, metrics['grad_norm'], first['grad_norm'])}


def _no_nonfinite() -> dict[str, jax.Array]:
  return {'step': jnp.zeros((), jnp.int32), 'loss': jnp.zeros((), jnp.float32),
          'grad_norm': jnp.zeros((), jnp.float32)}


def _check_finite(first: dict[str, jax.Array], last_saved: int) -> None:
  """Raises NonFiniteLoss if a step's loss or gradient norm was NaN or Inf (``first``, from
  ``_first_nonfinite``). Waits for the steps dispatched so far."""
  first = jax.device_get(first)
  if not first['step']:
    return
  raise NonFiniteLoss(
      f'training stopped: the loss is {float(first["loss"])} (gradient norm '
      f'{float(first["grad_norm"])}) at step {int(first["step"])}. '
      f'Nothing after step {last_saved} was saved; lower config.optimizer.learning_rate or set '
      'config.optimizer.grad_clip_norm, then run again (it resumes from step '
      f'{last_saved}), or use a new --workdir.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices: Sequence[jax.Device] | None = None,
                       stop_after: int | None = None) -> dict[str, Any]:
  """Trains to ``config.num_train_steps`` (resuming from the latest checkpoint in
  ``workdir`` if there is one), evaluating and checkpointing on the way.

  ``stop_after``: end early after this step, with a checkpoint there (a planned
  interruption; running again resumes). Returns {'step', 'train': last logged train
  metrics, 'evals': last eval results}.

  Raises ``errors.Preempted`` after writing a durable checkpoint when SIGTERM (or a
  multi-host preemption notice) arrives, ``errors.NonFiniteLoss`` when the loss becomes
  NaN/Inf (no checkpoint holding a NaN is written), ``errors.CheckpointError`` for a
  checkpoint that cannot be read or written, and ValueError for a bad config or input.
  """
  setup = build_setup(config, devices)
  config = setup.config  # validated: every field, the batch in rows (from batch_tokens)
  process_index, process_count = jax.process_index(), jax.process_count()
  log = print if process_index == 0 else lambda _: None
  saved = _check_workdir(config, workdir)
  # A new run's starting point must fit before anything is built or written.
  pretrained = check_init_from(config, setup.model_config) if (
      saved is None and config.init_from) else None
  tokenizer = vocab.for_run(config, workdir, log=log)  # once: every source reads with it
  source = data_lib.build_source(config.data, 'train', tokenizer=tokenizer)
  _check_source(setup, source)
  _make_workdir(workdir)
  train_iter = data_lib.train_iterator(source, config.batch_size, process_index=process_index,
                                       process_count=process_count)

  manager = checkpoints.make_manager(workdir, max_to_keep=config.checkpoint.max_to_keep,
                                     async_save=config.checkpoint.async_save)
  writer = profiler = None
  finished = False
  try:
    start_step, restored, data_state = _restore_latest(config, workdir, manager, setup, log)
    end_step = config.num_train_steps if stop_after is None else min(
        stop_after, config.num_train_steps)
    if start_step >= end_step:
      # Nothing to train: the workdir, config.json included, is left exactly as it was.
      what = ('already finished' if start_step >= config.num_train_steps else
              f'already past stop_after={stop_after}')
      log(f'{workdir}: {what} at step {start_step} (config.num_train_steps='
          f'{config.num_train_steps}); nothing to train. Raise --config.num_train_steps to '
          'train further, or evaluate it with eval.py.')
      finished = True
      return {'step': start_step, 'train': {}, 'evals': {}}
    if start_step:
      step_array = jax.device_put(jnp.asarray(start_step, jnp.int32),
                                  setup.state_shardings['step'])
      state = {'step': step_array, **restored}
      train_iter.set_state(data_state)
    else:
      state = init_state(setup)
      if config.init_from:
        if pretrained is None:  # a workdir with a config.json but no checkpoint yet
          pretrained = check_init_from(config, setup.model_config)
        state['params'] = load_pretrained(setup, state['params'], pretrained, log)

    if process_index == 0:
      vocab.record(workdir, tokenizer)
      changes = run_record.record(config, workdir, saved, start_step)
      if changes:
        log(f'Settings changed from step {start_step} on (recorded in '
            f'{run_record.HISTORY}): {run_record.describe(changes)}')
    writer = MetricWriter(workdir, num_train_steps=config.num_train_steps,
                          start_step=start_step, enabled=process_index == 0)
    mc = setup.model_config
    writer.log(f'{"Resuming from step " + str(start_step) if start_step else "Starting"}: '
               f'{mc.num_layers} layers, d={mc.emb_dim}, h={mc.num_heads}, '
               f'd_p={mc.resolved_head_size} ({"fixed" if mc.is_fixed_head else "baseline d/h"})'
               f', mesh {dict(setup.mesh.shape)}, workdir {workdir}')
    evaluators = _build_evaluators(setup, tokenizer)
    profiler = profiling.StepProfiler(config.profile_steps, workdir, start_step,
                                      end_step, writer.log)
    with preemption.PreemptionWatcher() as watcher:
      result = _train_loop(config, setup, state, train_iter, evaluators, manager, writer,
                           watcher, start_step, end_step, source.seq_len, profiler)
    finished = True
  finally:
    if profiler is not None:
      profiler.stop()
    # On the way out of an error, a save still in flight may finish (a good checkpoint
    # stays good) or fail too; the first error is the one reported.
    try:
      manager.close()
    except Exception:  # pylint: disable=broad-except
      if finished:
        raise
    if writer is not None:
      writer.close()
  return result


def _train_loop(config, setup: Setup, state: State, train_iter, evaluators, manager,
                writer: MetricWriter, watcher: preemption.PreemptionWatcher, start_step: int,
                end_step: int, seq_len: int,
                profiler: profiling.StepProfiler) -> dict[str, Any]:
  """Steps start_step + 1 .. end_step; see train_and_evaluate."""
  train_step, seconds = compile_train_step(setup)
  writer.log(f'Compiled the train step in {seconds:.1f} s.')
  local_spec = {k: ((v.shape[0] // jax.process_count(), *v.shape[1:]), v.dtype)
                for k, v in batch_spec(setup).items()}
  train_metrics: dict[str, float] = {}
  eval_results: dict[str, dict[str, float]] = {}
  tokens_per_step = config.batch_size * seq_len
  last_saved = start_step
  # The first NaN/Inf step, tracked on the device; the host looks only where it waits for a
  # step's results anyway (logging, evaluation, checkpoints), so steps are dispatched ahead.
  nonfinite = _no_nonfinite()
  for step in range(start_step + 1, end_step + 1):
    local = next(train_iter)
    if step == start_step + 1:
      data_lib.check_batch_spec(local, local_spec)
    profiler.before(step)
    state, metrics = train_step(state, setup.put_batch(local))
    profiler.after(step, (state, metrics))
    nonfinite = _first_nonfinite(nonfinite, step, metrics)

    last = step == config.num_train_steps
    log_now = step % config.log_every_steps == 0 or last
    eval_now = bool(config.eval_every_steps and step % config.eval_every_steps == 0) or last
    preempted = watcher.reached(step)
    save_now = step % config.checkpoint.every_steps == 0 or step == end_step or preempted
    if log_now or eval_now or save_now:  # this step's outputs are used: check them first
      _check_finite(nonfinite, last_saved)

    if log_now:
      train_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      rate = writer.rate(step)
      writer.write(step, {**{f'train/{k}': v for k, v in train_metrics.items()},
                          'train/steps_per_sec': rate,
                          'train/tokens_per_sec': rate * tokens_per_step})
      shown = (*setup.task.PROGRESS, 'learning_rate')
      writer.progress(step, {k: train_metrics[k] for k in shown if k in train_metrics}, rate)
    if eval_now:
      eval_results = _run_evals(evaluators, state['params'], step, writer)
    writer.flush()  # one row per step: its train metrics and evals together
    if save_now:
      if not bool(_all_finite(state)):
        raise NonFiniteLoss(f'training stopped: the parameters or optimizer state after step '
                            f'{step} hold NaN/Inf, so they were not saved; the last checkpoint '
                            f'is step {last_saved}. Lower config.optimizer.learning_rate.')
      checkpoints.save(manager, step, state, train_iter.get_state(), previous_step=last_saved)
      last_saved = step
    if preempted:
      checkpoints.wait_until_finished(manager, step)
      writer.log(f'{watcher.signal_name} received: saved a checkpoint of step {step} in '
                 f'{manager.directory}; run the same command again to continue from there.')
      if watcher.interrupted:
        raise Interrupted(step, f'interrupted (Ctrl-C) at step {step} (checkpoint saved)')
      raise Preempted(step, f'preempted at step {step} (checkpoint saved)')
  checkpoints.wait_until_finished(manager, last_saved)
  return {'step': end_step, 'train': train_metrics, 'evals': eval_results}


def evaluate(config: ml_collections.ConfigDict | None, workdir: str, *,
             step: int | None = None, devices: Sequence[jax.Device] | None = None,
             other_data: bool = False, all_steps: bool = False,
             output_dir: str | None = None) -> dict[str, Any]:
  """Runs the evaluators on checkpoint ``step`` (default: latest) of ``workdir`` and writes
  the results to ``workdir/eval/`` (or ``output_dir``, for a run that cannot be written). Returns {'step', 'evals', 'path'} (of the last step).
  ``all_steps``: every checkpoint kept, oldest first, one file each (a learning curve after
  the fact, with what the evaluators measure today); the model is built once.

  ``config=None`` uses the run's saved config.json. A given config must describe the same
  model; if it reads other data, ``other_data=True`` is needed, and its results (like those
  of other evaluator settings) go to ``eval/step_<N>.<tag>.json``, never over the run's own
  ``eval/step_<N>.json`` (see ``fixed_head.train.run_record``).
  """
  if all_steps and step is not None:
    raise UsageError(f'--step={step} and --all_steps: give one of them.')
  if config is None:
    config = run_record.load_config(workdir)  # which checks the workdir first
  else:
    run_record.check_run_dir(workdir)
  setup = build_setup(config, devices)
  config = setup.config
  target = run_record.eval_target(config, workdir, other_data=other_data)
  out_dir = output_dir or files.join(workdir, 'eval')
  if jax.process_index() == 0:
    try:  # before anything is evaluated: the results must have a place to go
      files.check_writable_dir(out_dir)
    except OSError as e:
      fix = ('give a writable --output directory' if output_dir else
             f'eval.py writes its results to {out_dir}: fix its permissions, or give '
             '--output=DIR (a writable directory) for them')
      raise UsageError(f'{e}; {fix}.') from None
  steps = checkpoints.all_steps(workdir) if all_steps else [step]
  tokenizer = vocab.for_run(config, workdir, train=False)  # the run's, never trained here
  evaluators = None
  for step in steps or [None]:  # none kept: load_params says so
    step, params = checkpoints.load_params(workdir, step, setup.abstract_state['params'])
    evaluators = evaluators or _build_evaluators(setup, tokenizer)
    results = {name: evaluator(params) for name, evaluator in evaluators.items()}
    path = files.join(out_dir, target.format(step=step))
    if jax.process_index() == 0:
      for name, result in results.items():
        print(_eval_line(name, step, result), flush=True)
      files.make_dirs(os.path.dirname(path))
      record = {'step': step, 'evals': results}
      if target != 'step_{step}.json':  # other data or evaluators: say which
        used = run_record.as_dict(config)
        record.update(data=used['data'], evals_config=used['evals'])
      run_record.write_json_atomic(path, record, indent=2)
      print(f'wrote {path}', flush=True)
  return {'step': step, 'evals': results, 'path': path}


def load_model(workdir: str, step: int | None = None) -> nnx.Module:
  """The trained model of ``workdir``: built from the run's saved config.json, with the
  parameters of checkpoint ``step`` (default: the latest) on this process's first device.

  For notebooks and scripts (one process): sample from it with ``fixed_head.sampling``.
  Raises UsageError when ``workdir`` holds no run, no checkpoint, or not ``step``.
  """
  config = run_record.load_config(workdir)
  config.mesh.update(dict(data=-1, fsdp=1, tensor=1))  # any mesh's checkpoint fits one device
  setup = build_setup(config, jax.local_devices()[:1])
  _, params = checkpoints.load_params(workdir, step, setup.abstract_state['params'])
  return setup.model_of(params)
