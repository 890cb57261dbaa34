r"""Compile time of the train step's forward + backward: Python loop over blocks vs nnx.scan.

Builds the LM (``model_type='lm'``, small width) at each depth, with ``scan_layers`` off
and on, and times ``jax.jit(grad of the loss).lower(...).compile()`` on fresh functions:
trace + lower (JAX) and compile (XLA), medians over ``--repeats``. With the loop, the
program holds every block and its compile time grows with depth; under ``nnx.scan`` it
holds one block. Prints a Markdown table. Runs on the CPU unless ``--platform`` says so.

  python benchmarks/compile_time.py                       # layers 2 4 8 16 24, 3 repeats
  python benchmarks/compile_time.py --num_layers=24 --emb_dim=1024 --mlp_dim=4096
"""

import os
import platform
import statistics
import sys
import time

from absl import app, flags

flags.DEFINE_list('num_layers', ['2', '4', '8', '16', '24'], 'Depths to time.')
flags.DEFINE_integer('repeats', 3, 'Timed compilations per (depth, mode); the median is shown.')
flags.DEFINE_integer('emb_dim', 64, 'd.')
flags.DEFINE_integer('num_heads', 4, 'h.')
flags.DEFINE_integer('mlp_dim', 256, 'Feed-forward width.')
flags.DEFINE_integer('vocab_size', 512, 'Vocabulary.')
flags.DEFINE_integer('seq_len', 64, 'n (also max_len).')
flags.DEFINE_integer('batch_size', 8, 'Rows.')
flags.DEFINE_string('platform', 'cpu', "JAX platform: 'cpu' (default), 'gpu', 'tpu'.")


def compile_seconds(model_config, batch_size: int) -> dict[str, float]:
  """Seconds to build a fresh jitted grad of the LM loss (dropout on, so the per-layer keys
  are part of the program): 'lower' (trace + lower), 'xla' (compile), 'total', and 'cpu'
  (this process's CPU seconds for the whole, which other processes' load disturbs less)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from fixed_head.nn import build_model

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
  lowered.compile()
  end = time.perf_counter()
  return dict(lower=traced - start, xla=end - traced, total=end - start,
              cpu=time.process_time() - cpu)


def main(argv):
  del argv
  f = flags.FLAGS
  # pylint: disable=g-import-not-at-top
  import jax
  jax.config.update('jax_platforms', f.platform)
  from fixed_head.config import ModelConfig

  device = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  print(f'{platform.node()} ({os.cpu_count()} CPUs, {cpu}; {len(jax.devices())} x '
        f'{device.device_kind}), jax {jax.__version__}, {time.strftime("%Y-%m-%d %H:%M %Z")}: '
        f'python benchmarks/compile_time.py {" ".join(sys.argv[1:])}'.rstrip())
  print(f'LM d={f.emb_dim} h={f.num_heads} mlp={f.mlp_dim} vocab={f.vocab_size} '
        f'batch {f.batch_size} x {f.seq_len}, jit(value_and_grad(loss)) with dropout; '
        f'wall seconds, trace+lower + XLA compile = total, and CPU seconds of this '
        f'process; median of {f.repeats}\n', flush=True)

  depths = [int(n) for n in f.num_layers]
  base = ModelConfig(model_type='lm', vocab_size=f.vocab_size, emb_dim=f.emb_dim,
                     num_heads=f.num_heads, mlp_dim=f.mlp_dim, max_len=f.seq_len)
  for scan in (False, True):  # warm-up: imports, caches
    compile_seconds(base.replace(num_layers=1, scan_layers=scan), f.batch_size)
  rows = []
  for depth in depths:
    runs = {False: [], True: []}
    for _ in range(f.repeats):  # interleaved, so a burst of load hits both modes alike
      for scan in (False, True):
        config = base.replace(num_layers=depth, scan_layers=scan)
        runs[scan].append(compile_seconds(config, f.batch_size))
    med = {scan: {k: statistics.median(r[k] for r in runs[scan]) for k in runs[scan][0]}
           for scan in runs}
    loop, scan = med[False], med[True]
    rows.append(f'| {depth} | {loop["lower"]:.2f} + {loop["xla"]:.2f} = {loop["total"]:.2f} | '
                f'{scan["lower"]:.2f} + {scan["xla"]:.2f} = {scan["total"]:.2f} | '
                f'{loop["total"] / scan["total"]:.1f} | {loop["cpu"]:.2f} | {scan["cpu"]:.2f} |')

  print('| layers | loop, s | scan, s | loop / scan | loop, CPU s | scan, CPU s |')
  print('|---|---|---|---|---|---|')
  print('\n'.join(rows))


if __name__ == '__main__':
  app.run(main)
