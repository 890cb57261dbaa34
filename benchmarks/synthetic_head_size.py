r"""Gap to the optimal loss against head size d_p on the embedded synthetic language.

Trains ``configs/default.py`` (d = 64, h = 8, n = 32) once per head size and seed, and
prints a Markdown table of the final eval gap (model loss - Bayes-optimal loss, nats).

  python benchmarks/synthetic_head_size.py                       # d_p in 2 4 8 16 32 64, seed 0
  python benchmarks/synthetic_head_size.py --head_sizes=8,32 --seeds=0,1,2
"""

import os
import platform
import tempfile
import time

from absl import app, flags, logging

from fixed_head.experiments import sweeps
from fixed_head.train import trainer

# The repository's configs/default.py, by path (configs/ is not part of the installed package).
default = sweeps.load_module(os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'default.py'))

flags.DEFINE_list('head_sizes', ['2', '4', '8', '16', '32', '64'],
                  'd_p values; 8 = d / h is the baseline.')
flags.DEFINE_list('seeds', ['0'], 'Run seeds (initialisation; the language stays seed 0).')
flags.DEFINE_integer('num_train_steps', None, 'Override the config (default 1500).')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  rows = []
  for head_size in map(int, f.head_sizes):
    gaps, seconds = [], []
    for seed in map(int, f.seeds):
      config = default.get_config('fixed')
      config.model.head_size = head_size
      config.seed = seed
      config.eval_every_steps = 0
      config.log_every_steps = 500
      if f.num_train_steps:
        config.num_train_steps = f.num_train_steps
      with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        result = trainer.train_and_evaluate(config, workdir)
        seconds.append(time.perf_counter() - start)
      gaps.append(result['evals']['valid']['gap_to_optimal'])
    baseline = ' (baseline d/h)' if head_size == 64 // 8 else ''
    rows.append(f'| {head_size}{baseline} | ' + ' | '.join(f'{g:.4f}' for g in gaps)
                + f' | {sum(gaps) / len(gaps):.4f} | {sum(seconds) / len(seconds):.0f} |')
  print(f'\n{platform.node()} ({os.cpu_count()} CPUs), {time.strftime("%Y-%m-%d")}: '
        f'python benchmarks/synthetic_head_size.py --head_sizes={",".join(f.head_sizes)} '
        f'--seeds={",".join(f.seeds)}\n')
  print('| d_p | ' + ' | '.join(f'gap, seed {s}' for s in f.seeds) + ' | mean gap | s/run |')
  print('|---|' + '---|' * (len(f.seeds) + 2))
  print('\n'.join(rows))


if __name__ == '__main__':
  app.run(main)
