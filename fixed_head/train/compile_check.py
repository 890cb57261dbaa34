"""Does a config fit a TPU slice? Its real train and eval steps, compiled for the slice.

``check(config, devices)`` builds the run's setup (mesh, shardings, task, optimizer) over
the devices of a slice (``fixed_head.train.tpu.topology_devices``: compile-only devices, no
TPU needed), compiles the train step exactly as ``train.py`` does before its first batch
(``trainer.compile_train_step``) and the task's evaluation step, and reads XLA's memory and
cost analyses of both. ``compile.py`` prints the result.

Memory is per device: arguments (parameters, optimizer state and the batch), temporaries
(activations kept for the backward pass, and scratch), outputs, less what the outputs alias
(the donated state is updated in place), plus the compiled code. A step whose temporaries
exceed HBM fails in XLA's TPU compiler itself; that is reported as not fitting, with the
compiler's own figures.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from fixed_head import accounting
from fixed_head.evaluators.common import TaskEvaluator, evaluator_data, stats_step
from fixed_head.train import run_config, tpu, trainer

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """Bytes a device holds while one compiled step runs (XLA's memory analysis)."""
  arguments: int
  temporaries: int
  outputs: int
  aliased: int  # outputs written over donated arguments
  code: int

  @property
  def total(self) -> int:
    return self.arguments + self.temporaries + self.outputs - self.aliased + self.code

  @classmethod
  def of(cls, compiled) -> StepMemory:
    m = compiled.memory_analysis()
    return cls(arguments=m.argument_size_in_bytes, temporaries=m.temp_size_in_bytes,
               outputs=m.output_size_in_bytes, aliased=m.alias_size_in_bytes,
               code=m.generated_code_size_in_bytes)


@dataclasses.dataclass(frozen=True)
class StepResult:
  name: str  # 'train' or 'eval'
  rows: int  # global batch
  seconds: float  # to lower and compile
  memory: StepMemory | None  # None: the compiler ran out of HBM
  flops: float | None  # XLA's cost analysis, per device
  error: str | None = None  # the compiler's out-of-memory message
  bytes_accessed: float | None = None  # XLA's cost analysis, per device


@dataclasses.dataclass(frozen=True)
class Report:
  topology: str
  devices: int
  device_kind: str
  hbm: int | None  # bytes a device
  mesh: dict[str, int]
  steps: tuple[StepResult, ...]
  accounting_flops: float  # fixed_head.accounting's training FLOPs a step, per device
  attention: tuple[tuple[str, str, int, str, int], ...]  # (impl, reason, d_p, dtype, calls)
  remedies: tuple[str, ...]
  scanned: bool = False  # blocks under nnx.scan: XLA's cost analysis counts one of them

  @property
  def peak(self) -> int | None:
    """The largest per-device total of the steps (None if one did not compile)."""
    if any(s.memory is None for s in self.steps):
      return None
    return max(s.memory.total for s in self.steps)

  @property
  def fits(self) -> bool:
    return self.peak is not None and (self.hbm is None or self.peak <= self.hbm)


def _out_of_memory(error: Exception) -> str | None:
  """The compiler's out-of-HBM message, or None for any other error (which is re-raised)."""
  text = str(error)
  if 'RESOURCE_EXHAUSTED' not in text and 'Ran out of memory' not in text:
    return None
  line = next((l for l in text.splitlines() if 'exceeds' in l or 'Ran out of memory' in l),
              text.splitlines()[0])
  return re.sub(r'\s+', ' ', line).strip()


def _compile(name: str, rows: int, make, log: Callable[[str], None] = lambda _: None,
             where: str = '') -> StepResult:
  log(f'compiling the {name} step ({rows} rows{where}); on a CPU host this takes minutes ...')
  start = time.perf_counter()
  try:
    compiled = make()
  except jax.errors.JaxRuntimeError as e:
    message = _out_of_memory(e)
    if message is None:
      raise
    return StepResult(name, rows, time.perf_counter() - start, None, None, message)
  seconds = time.perf_counter() - start
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, list) else cost
  return StepResult(name, rows, seconds, StepMemory.of(compiled), cost.get('flops'),
                    bytes_accessed=cost.get('bytes accessed'))


def _eval_rows(config: run_config.RunConfig) -> tuple[int, dict[str, Any]]:
  """(global batch, data config) of the largest evaluation batch in ``config.evals``."""
  specs = [dict(s) for s in config.evals.values()]
  if not specs:
    return config.batch_size, config.data.to_dict()
  default = TaskEvaluator.OPTIONS['batch_size']
  spec = max(specs, key=lambda s: s.get('batch_size', default))
  return spec.get('batch_size', default), evaluator_data(config.data, spec)


def _eval_step(setup: trainer.Setup, rows: int, data_config) -> Any:
  """The evaluators' step (``TaskEvaluator``: the task's stats of a batch), compiled."""
  spec = trainer.batch_spec(setup, data_config, rows)
  step = stats_step(setup.task, setup.model_of, setup.mesh)
  return step.lower(setup.abstract_state['params'], spec).compile()


def remedies(config: run_config.RunConfig, setup: trainer.Setup) -> tuple[str, ...]:
  """The changes that lower a step's memory and apply to this config."""
  out = []
  remat = config.model.remat
  if remat != 'full':
    out.append('--config.model.remat=' + ('attention (or full)' if remat == 'none' else 'full'))
  mesh = dict(setup.mesh.shape)
  devices = math.prod(mesh.values())
  if mesh['fsdp'] < devices // mesh['tensor']:
    out.append('--config.mesh.fsdp=-1 --config.mesh.data=1 (parameters and optimizer state '
               'sharded over the devices)')
  per_device = config.batch_size // (mesh['data'] * mesh['fsdp'])
  if per_device > 1:
    out.append(f'a smaller per-device batch (now {per_device} rows): a larger slice, or a '
               'smaller --config.batch_size')
  return tuple(out)


def check(config: ml_collections.ConfigDict, devices: list[jax.Device],
          topology: str = '', *, eval_step: bool = True,
          log: Callable[[str], None] = lambda _: None) -> Report:
  """Compiles ``config``'s train and eval steps (``eval_step=False``: the train step only)
  for ``devices`` (a slice's compile-only devices) and reports their memory against the
  chip's HBM, FLOPs and attention choices; ``log`` hears of each compilation as it starts."""
  platform = devices[0].platform
  calls: list[dict] = []  # one per attention call traced: what ran there, and why
  setup = trainer.build_setup(config, devices, attention_platform=platform,
                              attention_record=calls)
  config = setup.config  # validated: the batch in rows
  where = (f' for {topology or devices[0].platform}, {len(devices)} x '
           f'{devices[0].device_kind}, mesh {dict(setup.mesh.shape)}')
  train = _compile('train', config.batch_size,
                   lambda: trainer.compile_train_step(setup)[0], log, where)
  steps = (train,)
  if eval_step:
    eval_rows, eval_data = _eval_rows(config)
    steps += (_compile('eval', eval_rows, lambda: _eval_step(setup, eval_rows, eval_data),
                       log, where),)
  counted: dict[tuple[str, str, int, str], int] = {}
  for c in calls:
    key = (c['implementation'], c['reason'], c['head_size'], c['dtype'])
    counted[key] = counted.get(key, 0) + 1
  n = config.data.seq_len
  flops = (accounting.flops_per_token(setup.model_config, n).training * config.batch_size * n
           / len(devices))
  return Report(topology=topology, devices=len(devices), device_kind=devices[0].device_kind,
                hbm=tpu.hbm_bytes(devices[0]), mesh=dict(setup.mesh.shape),
                steps=steps, accounting_flops=flops,
                attention=tuple((*k, v) for k, v in counted.items()),
                remedies=remedies(config, setup), scanned=setup.model_config.scan_layers)


def _size(n: int | None) -> str:
  if n is None:
    return '?'
  if n >= GiB / 4:
    return f'{n / GiB:.2f} GiB'
  return f'{n / 2**20:.1f} MiB' if n >= 2**20 else f'{n / 2**10:.0f} KiB'


def describe(report: Report) -> list[str]:
  """The lines compile.py prints; the last says whether the config fits."""
  hbm = f'{_size(report.hbm)} HBM each' if report.hbm else 'HBM unknown for this kind'
  mesh = ' x '.join(f'{k}={v}' for k, v in report.mesh.items())
  lines = [f'{report.topology or "slice"}: {report.devices} x {report.device_kind} ({hbm}); '
           f'mesh {mesh}']
  for impl, reason, head_size, dtype, count in report.attention:
    lines.append(f'attention: {impl} in {count} traced call(s) at d_p = {head_size}, {dtype} '
                 f'({reason})')
  contents = {'train': 'parameters, optimizer state, batch', 'eval': 'parameters, batch'}
  for s in report.steps:
    if s.memory is None:
      lines.append(f'{s.name} step ({s.rows} rows): does not compile in HBM after '
                   f'{s.seconds:.1f} s: {s.error}')
      continue
    m = s.memory
    lines.append(
        f'{s.name} step ({s.rows} rows), compiled in {s.seconds:.1f} s, per device: '
        f'arguments {_size(m.arguments)} ({contents[s.name]}), temporaries '
        f'{_size(m.temporaries)}, outputs {_size(m.outputs)} ({_size(m.aliased)} of them '
        f'in place of donated arguments), code {_size(m.code)}: total {_size(m.total)}'
        + (f' = {m.total / report.hbm:.1%} of HBM' if report.hbm else ''))
    if s.name == 'train':
      xla = f'{s.flops:.3g}' if s.flops is not None else '?'
      loop = (' (it counts the scanned blocks\' loop body once)' if report.scanned else '')
      lines.append(f'{s.name} step FLOPs per device: {xla} by XLA\'s cost analysis{loop}, '
                   f'{report.accounting_flops:.3g} by fixed_head.accounting (matmuls only)')
  if report.fits:
    lines.append(f'fits: peak {_size(report.peak)} a device of {_size(report.hbm)} on '
                 f'{report.topology or "the slice"}.')
  else:
    lines.append(does_not_fit_line(report))
  return lines


def does_not_fit_line(report: Report) -> str:
  peak = (f'peak {_size(report.peak)} a device of {_size(report.hbm)}' if report.peak else
          'the compiler ran out of HBM')
  return (f'does not fit on {report.topology or "the slice"} ({peak}); try: '
          + '; '.join(report.remedies or ('a larger slice',)))
