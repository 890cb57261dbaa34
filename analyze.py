r"""What the heads of a trained LM attend to, on the run's own held-out rows:

  python analyze.py --workdir=DIR [--num_rows=256] [--step=N]

For every layer and head: the mean attention entropy (nats), the mean distance |i - j|
weighted by attention, and the share of attention on the last 8 positions, averaged over the
queries of the first --num_rows eval rows (padding left out, as the model masks it). Prints
the table and writes DIR/attention_stats.csv and DIR/attention_stats.png; an existing file
there is replaced only when it is this command's own earlier output.
fixed_head.experiments.attention_stats does the work (its docstring has the definitions).
"""

from absl import app, flags

from fixed_head.experiments import attention_stats
from fixed_head.train import launch

flags.DEFINE_string('workdir', None, 'Workdir of a trained LM run (task lm).')
flags.DEFINE_integer('num_rows', 256, 'Eval rows to average over (fewer if the split has fewer).')
flags.DEFINE_integer('step', None, 'Checkpoint step; default: the latest.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  launch.quiet_start()
  f = flags.FLAGS
  attention_stats.analyze(f.workdir, num_rows=f.num_rows, step=f.step)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
