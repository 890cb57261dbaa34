r"""What does d_p = n cost? Step time, FLOPs and memory of the LM as n and d_p grow.

For each sequence length n and head size d_p (``--head_sizes``: 'base' = d / h, integers,
'n'), the trainer's compiled train step (``trainer.make_train_step``: forward, backward,
optimizer update, dropout on) on a synthetic batch of ``--tokens`` tokens (tokens / n rows,
so every row of the table trains the same tokens): its median step time, the training FLOPs
``accounting.flops_per_token(config, n).training`` x tokens, the FLOP/s that makes, XLA's
planned peak memory, and the step time against d_p = d / h at the same n (measured
round-robin in this process) beside the FLOPs ratio that the accounting predicts.

  python benchmarks/cost_growth.py                      # d=256 h=8 L=2, n 64 ... 1024
  python benchmarks/cost_growth.py --output=/tmp/cost   # also cost_growth.png and .md there
  python benchmarks/cost_growth.py --seq_lens=128,512 --head_sizes=base,64,n --tokens=4096
  python benchmarks/cost_growth.py --quick              # a CI smoke test: tiny shapes, seconds
"""

import os

from absl import app, flags, logging

import compiled_step  # benchmarks/compiled_step.py
from fixed_head import accounting
from fixed_head.config import ModelConfig
from fixed_head.experiments import figures, timing
from fixed_head.files import write_atomically

compiled_step.define_model_flags('lm1b.py:baseline', num_layers=2, emb_dim=256, num_heads=8,
                                 mlp_dim=1024, vocab_size=8000)
flags.DEFINE_list('seq_lens', ['64', '128', '256', '512', '1024'], 'Sequence lengths n.')
flags.DEFINE_list('head_sizes', ['base', '32', '128', 'n'],
                  "Head sizes d_p: 'base' (d / h, the reference of the ratios), integers, 'n'.")
flags.DEFINE_integer('tokens', 2048, 'Tokens per step; each n trains tokens / n rows.')
flags.DEFINE_integer('repeats', 3, 'Timed steps per row; the median is shown.')
flags.DEFINE_string('output', None, 'Directory for cost_growth.png (step time and peak '
                    'memory against n, log-log) and cost_growth.md (the table).')
flags.DEFINE_bool('quick', False, 'A smoke test: d=32, h=4, L=1, mlp 64, vocab 128, n 32, '
                  '64 tokens; LLVM unoptimised (see memory.py --quick).')

QUICK = dict(seq_lens=['32'], tokens=64)  # with compiled_step.QUICK_MODEL


def head_size(spec: str, n: int, f) -> int:
  """d_p of a --head_sizes entry at length n."""
  return f.emb_dim // f.num_heads if spec == 'base' else n if spec == 'n' else int(spec)


def head_sizes(n: int, f) -> dict[int, str]:
  """{d_p: label} at length n, each d_p once, labelled '32 = d/h', '128', '512 = n', ..."""
  base = f.emb_dim // f.num_heads
  sizes = {head_size(spec, n, f) for spec in f.head_sizes} | {base}
  return {dp: ' = '.join([str(dp)] + ['d/h'] * (dp == base) + ['n'] * (dp == n))
          for dp in sorted(sizes)}


def measure(base_config, n: int, f) -> list[dict]:
  """The rows of length n: one per head size, timed round-robin."""
  if f.tokens % n:
    raise app.UsageError(f'--tokens={f.tokens} is not a multiple of n={n}: every n must '
                         'train the same tokens per step.')
  rows_per_step, d_over_h = f.tokens // n, f.emb_dim // f.num_heads
  steps, configs = {}, {}
  for dp in head_sizes(n, f):
    config = compiled_step.run_config(
        base_config, rows_per_step, n, **compiled_step.model_fields(f),
        head_size=None if dp == d_over_h else dp)
    configs[dp] = ModelConfig.from_mapping(config.model)
    steps[dp] = compiled_step.TrainStep(config, compiler_options=(
        compiled_step.FAST_COMPILE if f.quick else None))
  times = timing.round_robin(steps, repeats=f.repeats)
  flops = {dp: accounting.flops_per_token(c, n).training * f.tokens for dp, c in configs.items()}
  seconds = {dp: timing.median(t) for dp, t in times.items()}
  return [dict(n=n, dp=dp, label=label, rows=rows_per_step, seconds=seconds[dp],
               flops=flops[dp], peak=steps[dp].peak_bytes(),
               time_ratio=seconds[dp] / seconds[d_over_h], flops_ratio=flops[dp] / flops[d_over_h])
          for dp, label in head_sizes(n, f).items()]


def table(results: list[dict]) -> str:
  return figures.markdown(
      ['n', 'd_p', 'rows', 'peak MiB', 'train FLOP/step', 'step s', 'FLOP/s',
       'step / (d_p = d/h)', 'FLOPs / (d_p = d/h)'],
      [[r['n'], r['label'], r['rows'], timing.mib(r['peak']), timing.si(r['flops']),
        f'{r["seconds"]:.3f}', timing.si(r['flops'] / r['seconds']), f'{r["time_ratio"]:.2f}',
        f'{r["flops_ratio"]:.2f}'] for r in results])


def figure(results: list[dict], shape: str) -> bytes:
  """Step time and peak memory against n, one line per head-size choice, log-log."""
  fig, time_ax = figures.new_figure(
      'step time', 'n', 'seconds', f'{shape} | {figures.provenance()}', size=(10, 4.4),
      footer_y=0.01, wrap=170)
  grid = fig.add_gridspec(1, 2)
  time_ax.set_subplotspec(grid[0])
  memory_ax = fig.add_subplot(grid[1])
  memory_ax.set_title('XLA planned peak memory', fontsize=11)
  memory_ax.set_xlabel('n')
  memory_ax.set_ylabel('MiB')
  memory_ax.grid(True, alpha=0.3)
  f = flags.FLAGS
  # {d_p at each n: (names, points)}: a line that another repeats is drawn once, with both
  # names ('d_p = d/h = 32').
  lines = {}
  for spec in f.head_sizes:
    points = [r for r in results if r['dp'] == head_size(spec, r['n'], f)]
    names, _ = lines.setdefault(tuple(r['dp'] for r in points), ([], points))
    names.append('d/h' if spec == 'base' else spec)
  for names, points in lines.values():
    name = 'd_p = ' + ' = '.join(names)
    ns = [r['n'] for r in points]
    time_ax.plot(ns, [r['seconds'] for r in points], marker='o', label=name)
    if all(r['peak'] is not None for r in points):
      memory_ax.plot(ns, [r['peak'] / 2 ** 20 for r in points], marker='o', label=name)
  for ax in (time_ax, memory_ax):
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.legend(fontsize=8)
  return figures.png(fig, bottom=0.08)


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  f = flags.FLAGS
  compiled_step.apply_quick(f, **QUICK)
  print(timing.header(), flush=True)
  base = f.config
  shape = (f'LM d={f.emb_dim} h={f.num_heads} L={f.num_layers} mlp={f.mlp_dim} '
           f'vocab={f.vocab_size}, {f.tokens} tokens a step, norm={base.model.norm}, dropout '
           f'{base.model.dropout_rate}, {base.optimizer.name}')
  print(f'\n{shape}: the train step; train FLOP/step from fixed_head.accounting (matmuls, '
        f'3 x forward); median of {f.repeats} steps, round-robin within each n\n', flush=True)
  results = []
  for n in (int(s) for s in f.seq_lens):
    results += measure(base, n, f)
  text = table(results)
  print(text, flush=True)
  if f.output:
    os.makedirs(f.output, exist_ok=True)
    write_atomically(os.path.join(f.output, 'cost_growth.png'), figure(results, shape))
    write_atomically(os.path.join(f.output, 'cost_growth.md'),
                     f'{timing.header()}\n\n{shape}\n\n{text}\n')
    print(f'\nwrote {f.output}/cost_growth.png and cost_growth.md')


if __name__ == '__main__':
  app.run(main)
