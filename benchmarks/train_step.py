r"""Train-step throughput and MFU, and where the step's time goes.

For each ``--config`` (a run config file with its argument, as train.py takes it), compiles
the trainer's own train step (``trainer.make_train_step``: forward, backward, optimizer,
metrics, with dropout) on a synthetic batch of ``--batch_size`` rows and times it (median of
``--repeats``). MFU = the step's matmul FLOPs (``fixed_head.accounting``: 3 x the forward's
matmuls; for BERT the masked-LM output only at the masked positions) / step time / the matmul
ceiling of the same dtype measured in the same process (``timing.matmul_ceiling``).

``--profile`` (default on) then times the parts of an LM step on their own, each forward +
backward in its own jitted program, taking turns in the same rounds: attention and
feed-forward sublayers (one block, times the number of layers), the output layer with the
loss, and the optimizer update. What the parts do not cover (embedding look-up, LayerNorm,
residual dropout, the gradient norm and metrics, and the gaps between XLA's fusions) is the
step's time minus theirs.

  python benchmarks/train_step.py      # default, lm1b:baseline, lm1b:fixed; batch 8, float32
  python benchmarks/train_step.py --config=configs/lm1b.py:fixed --dtype=bfloat16 --batch_size=64
  python benchmarks/train_step.py --config=configs/bert.py:fixed_d768_h12 \
    --config='configs/bert.py:fixed_d768_h12,stage=2' --dtype=bfloat16 --batch_size=32
"""

import os

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from flax import nnx

import compiled_step
from fixed_head import accounting
from fixed_head.config import ModelConfig
from fixed_head.experiments import figures, sweeps, timing
from fixed_head.nn import attention as attn
from fixed_head.nn import build_model
from fixed_head.tasks import losses
from fixed_head.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ['configs/default.py', 'configs/lm1b.py:baseline', 'configs/lm1b.py:fixed']

flags.DEFINE_multi_string('config', DEFAULT_CONFIGS, 'Run config file[:arg]; repeat the flag '
                          'for several (paths relative to the repository or absolute).')
flags.DEFINE_integer('batch_size', 8, 'Rows per step (the configs\' own batches are for TPUs).')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                  'Compute dtype (model.dtype); parameters, softmax, LayerNorm statistics and '
                  'the loss stay float32.')
flags.DEFINE_integer('repeats', 5, 'Timed steps; the median is shown.')
flags.DEFINE_bool('profile', True, 'Time the parts of each LM step.')
flags.DEFINE_bool('quick', False, 'Tiny models, 1 repeat, fast compilation (a smoke test).')


def load_config(spec: str):
  """The run config of ``file.py[:arg]``, ready to build (init_from placeholders cleared)."""
  path, _, arg = spec.partition(':')
  path = path if os.path.isabs(path) else os.path.join(REPO, path)
  module = sweeps.load_module(path)
  config = module.get_config(arg) if arg else module.get_config()
  if 'init_from' in config:
    config.init_from = None  # a BERT stage-2 or fine-tuning config names its parent run
  return config


def shrink(config):
  """--quick: the same kind of model, tiny (2 layers, d = 32, n <= 32, vocab 512)."""
  m = config.model
  h = min(m.num_heads, 4)
  m.update(dict(emb_dim=32, num_heads=h, head_size=None if m.head_size is None else 16,
                num_layers=2, mlp_dim=64, vocab_size=512, max_len=min(m.max_len, 32)))
  config.data.seq_len = min(config.data.seq_len, 32)
  config.data.vocab_size = 512
  if 'max_predictions_per_seq' in config.data:
    config.data.max_predictions_per_seq = min(config.data.max_predictions_per_seq, 5)
  return config


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


def lm_parts(config, rows: int, tx: optax.GradientTransformation) -> dict[str, tuple]:
  """name -> (thunk, FLOPs, times): forward + backward of one block's attention and
  feed-forward (``times`` = layers), the output layer + loss, and the optimizer update."""
  mc = ModelConfig.from_mapping(config.model).replace(scan_layers=False, remat='none')
  n, d, layers = config.data.seq_len, mc.emb_dim, mc.num_layers
  model = build_model(mc, rngs=nnx.Rngs(0))
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (rows, n, d), jnp.float32).astype(mc.dtype)
  cotangent = jax.random.normal(keys[1], (rows, n, d), jnp.float32)
  tokens = jax.random.randint(keys[2], (rows, n), 3, mc.vocab_size)
  mask = attn.SegmentMask(jnp.ones((rows, n), jnp.int32), causal=True)
  flops = accounting.flops_per_token(mc, n)
  tokens_per_step = 3 * rows * n  # forward + backward = 3 x the forward's matmuls

  def program(module, fn):
    graphdef, params = nnx.split(module)
    grad = jax.jit(jax.grad(lambda p, x: fn(nnx.merge(graphdef, p), x), argnums=(0, 1)))
    return lambda: grad(params, x)

  def sublayer(module, call):
    def loss(m, x):
      out = call(m, x, nnx.Rngs(dropout=jax.random.key(1)))
      return jnp.sum(out.astype(jnp.float32) * cotangent)
    return program(module, loss)

  block = model.decoder.blocks[0]
  attention = sublayer(block.attention, lambda m, x, r: m(x, mask=mask, deterministic=False,
                                                            rngs=r))
  mlp = sublayer(block.mlp, lambda m, x, r: m(x, deterministic=False, rngs=r))

  def output_loss(m, x):
    logits = m.token_embed.attend(x) if m.output is None else m.output(x)
    stats = losses.next_token_stats(logits.astype(jnp.float32), {'tokens': tokens})
    return stats['nll_sum'] / stats['weight_sum']

  output = program(model, output_loss)
  params = nnx.state(model, nnx.Param)
  opt_state = tx.init(params)
  update = jax.jit(lambda p, g, s: optax.apply_updates(p, tx.update(g, s, p)[0]))
  return {
      'attention': (attention, (flops.attention_projection + flops.attention_scores)
                    / layers * tokens_per_step, layers),
      'feed-forward': (mlp, flops.feed_forward / layers * tokens_per_step, layers),
      'output layer + loss': (output, flops.embedding_output * tokens_per_step, 1),
      'optimizer update': (lambda: update(params, params, opt_state), 0.0, 1),
  }


def profile(config, rows: int, step: compiled_step.TrainStep, tx, ceiling: float,
            repeats: int) -> str:
  parts = lm_parts(config, rows, tx)
  fns = {name: fn for name, (fn, _, _) in parts.items()}
  times = timing.round_robin({'step': step, **fns}, repeats=repeats)
  step_s = timing.median(times['step'])
  table, covered = [], 0.0
  for name, (_, flops, count) in parts.items():
    seconds = timing.median(times[name]) * count
    covered += seconds
    rate = f'{flops * count / seconds / ceiling:.0%}' if flops else '-'
    table.append([f'{name} (x{count})' if count > 1 else name, f'{seconds * 1e3:,.1f}',
                  f'{seconds / step_s:.0%}', timing.si(flops * count, 'FLOP') if flops else '-',
                  rate])
  table.append(['rest of the step (step - parts)', f'{(step_s - covered) * 1e3:,.1f}',
                f'{(step_s - covered) / step_s:.0%}', '-', '-'])
  table.append(['whole step', f'{step_s * 1e3:,.1f}', '100%',
                timing.si(step_flops(config, rows), 'FLOP'),
                f'{step_flops(config, rows) / step_s / ceiling:.0%}'])
  return figures.markdown(['part', 'ms', 'share of step', 'matmul FLOPs', '% of ceiling'],
                          table)


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
    config = load_config(spec)
    if f.quick:
      config = shrink(config)
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
    if f.profile and m.model_type == 'lm':
      tx = trainer.build_setup(config).tx
      profiles.append((spec, profile(config, f.batch_size, step, tx, ceiling, repeats)))
  print()
  print(figures.markdown(['config', 'model', 'shape', 'n', 'params', 'step ms', 'tokens/s',
                          'achieved', 'MFU'], rows))
  for spec, table in profiles:
    print(f'\nwhere the time goes: {spec}\n')
    print(table)


if __name__ == '__main__':
  app.run(main)
