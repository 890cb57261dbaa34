r"""Tabulates and plots a sweep's finished runs (see sweep.py):

  python report.py --workdir=/tmp/sweeps/synthetic [--output=DIR]

Writes results.csv (one row per run: config fields, parameters, training FLOPs per token, the
final eval, steps, wall time, seed), summary.csv / summary.md (mean ± std over seeds, with
the parameter-matched configurations marked) and the figures (fig*.png) to DIR, by default
WORKDIR/report. They are derived from the runs and rewritten each time; run it again as more
runs finish.
"""

from absl import app, flags

from fixed_head.experiments import report, sweeps
from fixed_head.train import launch

flags.DEFINE_string('workdir', None, 'Sweep directory (the --workdir given to sweep.py).')
flags.DEFINE_string('output', None, 'Directory for the report; default WORKDIR/report.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  sweeps.check_local(flags.FLAGS.workdir)
  report.write_report(flags.FLAGS.workdir, flags.FLAGS.output)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
