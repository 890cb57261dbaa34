r"""Train-step throughput and MFU, and where the step's time goes.

For each ``--config`` (a run config file with its argument, as train.py takes it), compiles
the trainer's own train step (``trainer.make_train_step``: forward, backward, optimizer,
metrics, with dropout) on a synthetic batch of ``--batch_size`` rows and times it (median of
``--repeats``). MFU = the step's matmul FLOPs (``fixed_head.accounting``: 3 x the forward's
matmuls; for BERT the masked-LM output only at the masked positions) / step time / the matmul
ceiling of the same dtype measured in the same process (``timing.matmul_ceiling``).

``--profile`` (default on) then says where the step's time goes: it traces a few steps with
``jax.profiler`` and sums the time of XLA's operations by the ``jax.named_scope`` they come
from (the models name 'attention', 'feed_forward' and 'output', the loss 'loss', the trainer
'optimizer'; forward and backward together), matmuls apart from the rest, next to each
part's matmul FLOPs. 'other' is what no scope names: embedding look-up, LayerNorm, residual
dropout, the gradient norm and metrics. On a CPU the trace names XLA's own operations; on a
GPU it names kernels, so use --noprofile there.

  python benchmarks/train_step.py      # default, lm1b:baseline, lm1b:fixed; batch 8, float32
  python benchmarks/train_step.py --config=configs/lm1b.py:fixed --dtype=bfloat16 --batch_size=64
  python benchmarks/train_step.py --config=configs/bert.py:fixed_d768_h12 \
    --config='configs/bert.py:fixed_d768_h12,stage=2' --dtype=bfloat16 --batch_size=32
"""

import glob
import gzip
import json
import os
import re
import tempfile

import jax
from absl import app, flags

import compiled_step
from fixed_head import accounting
from fixed_head.experiments import figures, timing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ['configs/default.py', 'configs/lm1b.py:baseline', 'configs/lm1b.py:fixed']

flags.DEFINE_multi_string('config', DEFAULT_CONFIGS, 'Run config file[:arg]; repeat the flag '
                          'for several (paths relative to the repository or absolute).')
flags.DEFINE_integer('batch_size', 8, 'Rows per step (the configs\' own batches are for TPUs).')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                  'Compute dtype (model.dtype); parameters, softmax, LayerNorm statistics and '
                  'the loss stay float32.')
flags.DEFINE_integer('repeats', 5, 'Timed steps; the median is shown.')
flags.DEFINE_bool('profile', True, 'Trace each step and say where its time goes (CPU).')
flags.DEFINE_bool('quick', False, 'Tiny models, 1 repeat, fast compilation (a smoke test).')


def step_flops(config, rows: int) -> float:
  """Matmul FLOPs of one train step: accounting's training FLOPs per token x tokens; for
  BERT the masked-LM output (counted per token there) only at the masked positions."""
  n = config.data.seq_len
  per_token = accounting.flops_per_token(config.model, n)
  total = per_token.training * rows * n
  if config.model.model_type == 'bert':
    masked = config.data.max_predictions_per_seq
    total -= 3 * per_token.embedding_output * rows * (n - masked)
  return total


SCOPES = ('attention', 'feed_forward', 'output', 'loss', 'optimizer')  # jax.named_scope names


def op_names(compiled) -> dict[str, str]:
  """HLO instruction name -> its op_name (the jax.named_scope path) in a compiled program."""
  names = {}
  for line in compiled.as_text().splitlines():
    found = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"', line)
    if found:
      names.setdefault(found.group(1), found.group(2))
  return names


def scope_of(op_name: str) -> str:
  """The model part an operation belongs to, from the scopes the code names."""
  parts = set(re.split(r'[/()]', op_name))
  return next((scope for scope in SCOPES if scope in parts), 'other')


def traced_op_seconds(step, steps: int) -> dict[str, float]:
  """Seconds per step of each HLO operation, from a profiler trace of ``steps`` steps."""
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      for _ in range(steps):
        jax.block_until_ready(step())
    (path,) = glob.glob(os.path.join(directory, '**', 'perfetto_trace.json.gz'), recursive=True)
    with gzip.open(path, 'rt', encoding='utf-8') as f:
      trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  seconds: dict[str, float] = {}
  for event in events:
    if event.get('ph') == 'X':
      seconds[event['name']] = seconds.get(event['name'], 0.0) + event.get('dur', 0) / 1e6
  return {name: total / steps for name, total in seconds.items()}


def profile(config, rows: int, step: compiled_step.TrainStep, step_seconds: float,
            ceiling: float, steps: int = 3) -> str:
  """Where the compiled step's time goes: XLA's operations in a profiler trace, summed by
  the named scope they come from (forward and backward together), matmuls apart."""
  names = op_names(step.compiled)
  op_seconds = {name: t for name, t in traced_op_seconds(step, steps).items() if name in names}
  n = config.data.seq_len
  per_token = accounting.flops_per_token(config.model, n)
  train_tokens = 3 * rows * n  # forward + backward: 3 x the forward's matmuls
  flops = {'attention': (per_token.attention_projection + per_token.attention_scores)
                        * train_tokens,
           'feed_forward': per_token.feed_forward * train_tokens,
           'output': per_token.embedding_output * train_tokens}
  by_scope = {scope: [0.0, 0.0] for scope in (*SCOPES, 'other')}  # [matmul, other] seconds
  for name, seconds in op_seconds.items():
    matmul = names[name].endswith('dot_general')
    by_scope[scope_of(names[name])][0 if matmul else 1] += seconds
  traced = sum(sum(v) for v in by_scope.values())
  table = []
  for scope, (matmul, other) in by_scope.items():
    total = matmul + other
    rate = f'{flops[scope] / total / ceiling:.0%}' if scope in flops and total else '-'
    table.append([scope, f'{total * 1e3:,.1f}', f'{total / traced:.0%}',
                  f'{matmul * 1e3:,.1f}', f'{other * 1e3:,.1f}',
                  timing.si(flops[scope], 'FLOP') if scope in flops else '-', rate])
  table.append(['all traced operations', f'{traced * 1e3:,.1f}', '100%',
                f'{sum(v[0] for v in by_scope.values()) * 1e3:,.1f}',
                f'{sum(v[1] for v in by_scope.values()) * 1e3:,.1f}',
                timing.si(step_flops(config, rows), 'FLOP'),
                f'{step_flops(config, rows) / traced / ceiling:.0%}'])
  table.append(['(step wall time, untraced)', f'{step_seconds * 1e3:,.1f}', '-', '-', '-', '-',
                '-'])
  return figures.markdown(['scope', 'ms', 'share', 'matmul ms', 'other ms', 'matmul FLOPs',
                           '% of ceiling'], table)


def main(argv):
  del argv
  f = flags.FLAGS
  repeats = 1 if f.quick else f.repeats
  print(timing.header())
  ceiling = timing.matmul_ceiling(f.dtype, repeats=3)
  print(f'batch {f.batch_size} rows, compute {f.dtype}; matmul ceiling {f.dtype} '
        f'{timing.si(ceiling, "FLOP/s")} (same process); step time median of {repeats}\n',
        flush=True)
  rows, profiles = [], []
  for spec in f.config:
    config = compiled_step.load_config(spec)
    if f.quick:
      config = compiled_step.shrink(config)
    config.model.dtype = f.dtype
    config = compiled_step.run_config(config, f.batch_size, config.data.seq_len)
    step = compiled_step.TrainStep(
        config, compiler_options=compiled_step.FAST_COMPILE if f.quick else None)
    seconds = timing.median(timing.round_robin({'step': step}, repeats=repeats)['step'])
    m, n = config.model, config.data.seq_len
    flops = step_flops(config, f.batch_size)
    dp = m.head_size or m.emb_dim // m.num_heads
    rows.append([spec, m.model_type, f'{m.num_layers} x d {m.emb_dim}, h {m.num_heads}, '
                 f'd_p {dp}', n, f'{accounting.count_params(m):,}', f'{seconds * 1e3:,.1f}',
                 f'{f.batch_size * n / seconds:,.0f}', timing.si(flops / seconds, 'FLOP/s'),
                 f'{flops / seconds / ceiling:.1%}'])
    print(f'  {spec}: {rows[-1][-1]} MFU', flush=True)
    if f.profile:
      profiles.append((spec, profile(config, f.batch_size, step, seconds, ceiling)))
  print()
  print(figures.markdown(['config', 'model', 'shape', 'n', 'params', 'step ms', 'tokens/s',
                          'achieved', 'MFU'], rows))
  for spec, table in profiles:
    print(f'\nwhere the time goes: {spec}\n')
    print(table)


if __name__ == '__main__':
  app.run(main)
