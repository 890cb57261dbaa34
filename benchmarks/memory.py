r"""Memory and compile time of the train step: ``model.remat`` and ``model.scan_layers``.

Table 1: for remat 'none', 'attention' and 'full', with the blocks in a Python loop and under
``nnx.scan``, the trainer's compiled train step (``trainer.make_train_step``: forward,
backward and the optimizer update, dropout on) of an LM1B-shaped model on a synthetic
batch: XLA's planned peak memory (``timing.peak_bytes``: temporaries, arguments and
outputs, less the donated state), its temporaries alone (the activations kept for the
backward pass live there) and the median step time, each against remat='none' of the same
layout, measured round-robin in this process.

Table 2: compile time of jit(value_and_grad(loss)) against depth, loop against scan: trace +
lower (JAX) and compile (XLA) on fresh functions. The loop's program holds every block, so
its compile time grows with depth; the scanned one holds one block.

  python benchmarks/memory.py                  # d=256 h=16 d_p=32, 6 layers, n=256, batch 8
  python benchmarks/memory.py --seq_len=1024 --batch_size=2 --nocompile
  python benchmarks/memory.py --depths=2,4,8,16,24 --emb_dim=1024 --mlp_dim=4096
  python benchmarks/memory.py --quick          # a CI smoke test: tiny shapes, seconds
"""

import time

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from flax import nnx

import compiled_step  # benchmarks/compiled_step.py
from fixed_head.config import REMAT_POLICIES, ModelConfig
from fixed_head.experiments import timing
from fixed_head.nn import build_model

compiled_step.define_model_flags('lm1b.py:fixed', num_layers=6, emb_dim=256, num_heads=16,
                                 mlp_dim=1024, vocab_size=32_000)
flags.DEFINE_integer('head_size', 32, 'd_p (0: the baseline d / h).')
flags.DEFINE_integer('seq_len', 256, 'n (also max_len).')
flags.DEFINE_integer('batch_size', 8, 'Rows per step.')
flags.DEFINE_integer('repeats', 3, 'Timed steps (or compilations) per row; the median is shown.')
flags.DEFINE_list('depths', ['2', '4', '8', '16'], 'Depths of the compile-time table.')
flags.DEFINE_bool('compile', True, 'Print the compile-time table (--nocompile: table 1 only).')
flags.DEFINE_bool('quick', False, 'A smoke test: 1 layer, d=32, h=4, d_p=8, mlp 64, n=32, '
                  'vocab 128, batch 2; depths 1 and 2; LLVM unoptimised (XLA compiles the '
                  'same program with the same memory plan, 4x faster; slower code).')

QUICK = dict(head_size=8, seq_len=32, batch_size=2, depths=['1', '2'])  # + QUICK_MODEL


def compiler_options() -> dict | None:
  return compiled_step.FAST_COMPILE if flags.FLAGS.quick else None


def ratio(value, reference) -> str:
  return '-' if value is None or not reference else f'{value / reference:.2f}'


def model_fields(f) -> dict:
  """The model the flags describe, as ModelConfig fields."""
  return dict(compiled_step.model_fields(f), head_size=f.head_size or None)


def memory_table(base, f) -> str:
  model = model_fields(f)
  steps = {}
  for scan in (False, True):
    for remat in REMAT_POLICIES:
      config = compiled_step.run_config(base, f.batch_size, f.seq_len, scan_layers=scan,
                                        remat=remat, **model)
      steps[scan, remat] = compiled_step.TrainStep(config, like=steps.get((scan, 'none')),
                                                   compiler_options=compiler_options())
  times = timing.round_robin(steps, repeats=f.repeats)
  rows = []
  for (scan, remat), step in steps.items():
    ref = steps[scan, 'none']
    seconds, ref_seconds = timing.median(times[scan, remat]), timing.median(times[scan, 'none'])
    rows.append(
        f'| {"scan" if scan else "loop"} | {remat} | {timing.mib(step.peak_bytes())} | '
        f'{ratio(step.peak_bytes(), ref.peak_bytes())} | {timing.mib(step.temp_bytes())} | '
        f'{ratio(step.temp_bytes(), ref.temp_bytes())} | {seconds:.3f} | '
        f'{seconds / ref_seconds:.2f} |')
  return '\n'.join([
      '| layout | remat | peak MiB | peak / none | temporaries MiB | temp / none | step s | '
      'step / none |',
      '|---|---|---|---|---|---|---|---|', *rows])


def compile_seconds(model_config: ModelConfig, batch_size: int) -> dict[str, float]:
  """Seconds to build a fresh jitted grad of the LM loss (dropout on, so the per-layer keys
  are part of the program): 'lower' (trace + lower), 'xla' (compile), 'total', and 'cpu'
  (this process's CPU seconds for the whole, which other processes' load disturbs less)."""
  abstract = nnx.eval_shape(lambda: build_model(model_config, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(abstract)
  tokens = jax.ShapeDtypeStruct((batch_size, model_config.max_len), jnp.int32)
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)

  def loss(params, tokens, key):
    logits = nnx.merge(graphdef, params)(tokens, deterministic=False,
                                         rngs=nnx.Rngs(dropout=key))
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

  cpu, start = time.process_time(), time.perf_counter()
  lowered = jax.jit(jax.value_and_grad(loss)).lower(params, tokens, key)
  traced = time.perf_counter()
  lowered.compile(compiler_options())
  end = time.perf_counter()
  return dict(lower=traced - start, xla=end - traced, total=end - start,
              cpu=time.process_time() - cpu)


def compile_table(model_config: ModelConfig, f) -> str:
  for scan in (False, True) if not f.quick else ():  # warm-up: imports, caches
    compile_seconds(model_config.replace(num_layers=1, scan_layers=scan), f.batch_size)
  rows = []
  for depth in (int(n) for n in f.depths):
    runs = {False: [], True: []}
    for _ in range(f.repeats):  # interleaved, so a burst of load hits both modes alike
      for scan in (False, True):
        config = model_config.replace(num_layers=depth, scan_layers=scan)
        runs[scan].append(compile_seconds(config, f.batch_size))
    med = {scan: {k: timing.median([r[k] for r in runs[scan]]) for k in runs[scan][0]}
           for scan in runs}
    loop, scan = med[False], med[True]
    rows.append(f'| {depth} | {loop["lower"]:.2f} + {loop["xla"]:.2f} = {loop["total"]:.2f} | '
                f'{scan["lower"]:.2f} + {scan["xla"]:.2f} = {scan["total"]:.2f} | '
                f'{loop["total"] / scan["total"]:.1f} | {loop["cpu"]:.2f} | {scan["cpu"]:.2f} |')
  return '\n'.join([
      '| layers | loop: lower + compile = total s | scan: lower + compile = total s | '
      'loop / scan | loop CPU s | scan CPU s |',
      '|---|---|---|---|---|---|', *rows])


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  f = flags.FLAGS
  compiled_step.apply_quick(f, **QUICK)
  print(timing.header(), flush=True)
  base = f.config
  shape = (f'LM d={f.emb_dim} h={f.num_heads} d_p={f.head_size or "d/h"} L={f.num_layers} '
           f'mlp={f.mlp_dim} vocab={f.vocab_size}, batch {f.batch_size} x n={f.seq_len}, '
           f'norm={base.model.norm}, dropout {base.model.dropout_rate}')
  print(f'\n{shape}: the train step (forward, backward, {base.optimizer.name} update); XLA '
        f'planned memory; median of {f.repeats} steps, round-robin\n', flush=True)
  print(memory_table(base, f), flush=True)
  if not f.compile:
    return
  model_config = ModelConfig.from_mapping(  # its depth is set per row of the table
      compiled_step.run_config(base, f.batch_size, f.seq_len, **model_fields(f)).model)
  print(f'\nCompile time of jit(value_and_grad(loss)) with dropout, same width, depth L; wall '
        f'seconds (and CPU seconds of this process), median of {f.repeats}\n', flush=True)
  print(compile_table(model_config, f))


if __name__ == '__main__':
  app.run(main)
