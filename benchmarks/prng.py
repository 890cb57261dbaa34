r"""What the dropout PRNG (``config.dropout_rng_impl``) costs: threefry2x32, rbg, unsafe_rbg.

Dropout draws a random mask in every layer, over [b, h, n, n] for the attention weights, in
every step. Table 1, on this machine: the median time of the trainer's train step
(``trainer.make_train_step``, dropout on) of a run config at each PRNG, measured round-robin
in one process, against threefry2x32. Table 2, with ``--topology`` (libtpu installed): the
same step compiled for a TPU slice (``compile_check``), with XLA's cost analysis (FLOPs,
bytes accessed) and the per-device peak at each PRNG.

  python benchmarks/prng.py                     # lm1b:fixed's model, batch 8, n = 256
  python benchmarks/prng.py --config=configs/bert.py:fixed_d512_h32,stage=2 --batch_size=2
  python benchmarks/prng.py --nocpu --topology=v5e:4x4 \
    --tpu_config=configs/bert.py:fixed_d512_h32,stage=2
  python benchmarks/prng.py --quick             # a smoke test
"""

import jax
from absl import app, flags

import compiled_step  # benchmarks/compiled_step.py
from fixed_head.experiments import figures, timing
from fixed_head.train import compile_check, launch, run_config, tpu

flags.DEFINE_string('config', 'configs/lm1b.py:fixed', 'Run config whose train step is timed '
                    'on this machine.')
flags.DEFINE_integer('batch_size', 8, 'Rows a step on this machine.')
flags.DEFINE_integer('num_layers', 0, 'Layers (0: the config\'s).')
flags.DEFINE_integer('repeats', 5, 'Timed steps per PRNG; the median is shown.')
flags.DEFINE_string('topology', None, 'Also compile for this TPU slice (e.g. v5e:2x2).')
flags.DEFINE_string('tpu_config', 'configs/bert.py:fixed_d512_h8,stage=2',
                    'Run config compiled for --topology, at its own batch.')
flags.DEFINE_bool('cpu', True, 'Table 1 (--nocpu: only the TPU compile, table 2).')
flags.DEFINE_bool('quick', False, 'A smoke test: tiny model, 1 repeat, fast compilation.')


def with_rng(config, impl: str):
  c = config.copy_and_resolve_references()
  c.dropout_rng_impl = impl
  return c


def cpu_table(base, repeats: int, compiler_options: dict | None) -> str:
  steps = {}
  for impl in run_config.DROPOUT_RNG_IMPLS:
    steps[impl] = compiled_step.TrainStep(
        with_rng(base, impl), like=steps.get(run_config.DROPOUT_RNG_IMPLS[0]),
        compiler_options=compiler_options)
  seconds = {k: timing.median(v) for k, v in timing.round_robin(steps, repeats=repeats).items()}
  reference = seconds[run_config.DROPOUT_RNG_IMPLS[0]]
  rows = [[impl, f'{seconds[impl] * 1e3:.1f}', f'{seconds[impl] / reference:.2f}']
          for impl in run_config.DROPOUT_RNG_IMPLS]
  return figures.markdown(['dropout_rng_impl', 'train step (ms)', 'vs threefry2x32'], rows)


def tpu_table(base, topology: str) -> str:
  """XLA's cost analysis and memory of the train step compiled for ``topology`` (compile.py's
  check), at each PRNG."""
  devices = tpu.topology_devices(topology)
  rows, reference = [], None
  for impl in run_config.DROPOUT_RNG_IMPLS:
    train = compile_check.check(with_rng(base, impl), devices, topology,
                                eval_step=False).steps[0]
    if train.memory is None:  # over HBM: the compiler's own figures
      rows.append([impl, '-', '-', '-', '-', f'over HBM ({train.error})', f'{train.seconds:.0f}'])
      continue
    reference = reference or train
    rows.append([impl, timing.si(train.flops, 'FLOP'), f'{train.flops / reference.flops:.2f}',
                 timing.si(train.bytes_accessed, 'B'),
                 f'{train.bytes_accessed / reference.bytes_accessed:.2f}',
                 f'{train.memory.total / 2**30:.2f} GiB', f'{train.seconds:.0f}'])
  return figures.markdown(['dropout_rng_impl', 'FLOPs a device', 'vs threefry', 'bytes accessed',
                           'vs threefry', 'peak a device', 'compile (s)'], rows)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  launch.quiet_start()
  f = flags.FLAGS
  base = compiled_step.load_config(f.config)
  if f.quick:
    base = compiled_step.shrink(base)
  n = base.data.seq_len
  model = {} if not f.num_layers else {'num_layers': f.num_layers}
  base = compiled_step.run_config(base, 2 if f.quick else f.batch_size, n, **model)
  repeats = 1 if f.quick else f.repeats
  print(timing.header())
  m = base.model
  if f.cpu:
    print(f'\nTable 1: train step of {f.config} (d = {m.emb_dim}, h = {m.num_heads}, '
          f'{m.num_layers} layers, n = {n}, batch {base.batch_size}, attention dropout '
          f'{m.attention_dropout_rate}) on {jax.devices()[0].platform}, median of {repeats}, '
          'round-robin\n')
    print(cpu_table(base, repeats, compiled_step.FAST_COMPILE if f.quick else None) + '\n',
          flush=True)
  if f.topology:
    tpu_base = compiled_step.load_config(f.tpu_config)
    if f.quick:
      tpu_base = compiled_step.shrink(tpu_base)
      tpu_base.model.num_layers, tpu_base.batch_size = 1, 64
    print(f'Table 2: {f.tpu_config} at batch {tpu_base.batch_size}, train step compiled for '
          f'{f.topology} (XLA\'s cost analysis, per device)\n')
    print(tpu_table(tpu_base, f.topology), flush=True)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
