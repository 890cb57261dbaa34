r"""The matmul ceiling: FLOP/s of square matrix products, the denominator of every MFU figure.

For each size and dtype, ``timing.matmul_flops`` times a chain of dependent [s, s] @ [s, s]
products in one jitted program (median over ``--repeats``); the best over sizes is the
ceiling that benchmarks/train_step.py and the others divide by. Prints a Markdown table.

  python benchmarks/matmul.py                       # float32 and bfloat16, sizes for the backend
  python benchmarks/matmul.py --dtypes=float32 --sizes=1024,2048
"""

from absl import app, flags  
from fixed_head.experiments import figures, timing

flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Dtypes of the products.')
flags.DEFINE_list('sizes', None, 'Matrix sizes s (default: timing.ceiling_sizes()).')
flags.DEFINE_integer('repeats', 5, 'Timed calls per cell; the median is shown.')
flags.DEFINE_bool('quick', False, 'Tiny sizes (a smoke test).')


def main(argv):
  del argv
  f = flags.FLAGS
  sizes = [int(s) for s in f.sizes] if f.sizes else list(timing.ceiling_sizes())
  if f.quick:
    sizes = [64, 128]
  print(timing.header())
  print(f'[s, s] @ [s, s], 4 dependent products per program; FLOP/s, median of '
        f'{f.repeats}\n', flush=True)
  rows = []
  for dtype in f.dtypes:
    rates = [timing.matmul_flops(s, dtype, repeats=f.repeats) for s in sizes]
    rows.append([dtype, *(timing.si(r, 'FLOP/s') for r in rates),
                 timing.si(max(rates), 'FLOP/s')])
  print(figures.markdown(['dtype', *(f's = {s}' for s in sizes), 'ceiling (best)'], rows))


if __name__ == '__main__':
  app.run(main)
