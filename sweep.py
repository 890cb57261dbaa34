r"""Trains every run of a config file's sweep, one after another, each in its own workdir:

  python sweep.py --config=configs/default.py:all --workdir=/tmp/sweeps/synthetic
  python sweep.py --config=configs/default.py:all --workdir=/tmp/sweeps/synthetic --list

The config file's ``sweep(arg)`` names the runs (fixed_head/experiments/sweeps.py). Finished
runs are skipped and interrupted ones resume, so the command can be stopped (Ctrl-C) and run
again at any time. Two processes may share one sweep (each run is locked while one of them
trains it), for instance one on each core::

  taskset -c 0 python sweep.py --config=... --workdir=DIR & taskset -c 1 python sweep.py --config=... --workdir=DIR

Then ``python report.py --workdir=/tmp/sweeps/synthetic`` tabulates and
plots the results.
"""

import os
import sys

from absl import app, flags

from fixed_head.experiments import sweeps
from fixed_head.train import launch, run_config, trainer

flags.DEFINE_string('config', None, 'Config file with a sweep(arg) function: FILE.py[:arg].')
flags.DEFINE_string('workdir', None, 'Sweep directory; each run trains in WORKDIR/<run name>.')
flags.DEFINE_bool('list', False, 'Only list the runs and whether each has finished.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  config_arg, sweep_dir = flags.FLAGS.config, flags.FLAGS.workdir
  sweeps.check_local(sweep_dir)
  launch.quiet_start()
  if flags.FLAGS.list:
    _, runs = sweeps.plan(config_arg)
    try:
      for r in runs:
        done = sweeps.is_done(os.path.join(sweep_dir, r.name))
        print(f'{"finished" if done else "to train":9} {r.name}  figures={",".join(r.figures)}',
              flush=True)
    except BrokenPipeError:  # `--list | head`: the reader has all it wanted
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return
  sweeps.run_sweep(config_arg, sweep_dir, train=trainer.train_and_evaluate,
                   validate=run_config.validate)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
