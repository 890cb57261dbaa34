r"""The theory figures: Theorem 1's construction, the d_p < n witnesses and the expressivity
probe's error against d_p / n, as printed tables, CSV files and PNG plots:

  python theory_figures.py --output=DIR [--quick] [--overwrite]

The default run takes about a minute or two on a 2-core CPU, --quick a few seconds. Files this
script wrote before in DIR are replaced only with --overwrite. See
fixed_head/experiments/theory_figures.py.
"""

import shlex
import sys

from absl import app, flags

from fixed_head.errors import UsageError
from fixed_head.experiments import theory_figures
from fixed_head.train import launch

flags.DEFINE_string('output', None, 'Directory for the tables and figures (made if missing).')
flags.DEFINE_bool('quick', False, 'A much smaller run (seconds), for tests.')
flags.DEFINE_bool('overwrite', False, 'Replace the files of an earlier run in --output.')
flags.mark_flags_as_required(['output'])


def main(argv):
  if len(argv) > 1:
    raise UsageError(f'unexpected arguments {argv[1:]}; the only input is --output=DIR.')
  launch.quiet_start()
  f = flags.FLAGS
  theory_figures.make_figures(f.output, quick=f.quick, overwrite=f.overwrite,
                              command=shlex.join(['python', *sys.argv]),
                              log=lambda line: print(line, flush=True))


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
