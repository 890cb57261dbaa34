r"""Evaluates a workdir's checkpoint: ``python eval.py --workdir=DIR``.

Runs the run's evaluators on the latest checkpoint (or ``--step``, or every checkpoint kept
with ``--all_steps``) with the config saved in
``DIR/config.json``, prints them and writes ``DIR/eval/step_<N>.json``. ``--config`` (with
overrides) may change the evaluators or, with ``--other_data``, the data; such results go
to ``DIR/eval/step_<N>.<tag>.json`` and never replace the run's own. ``--output=DIR2`` puts the
files in DIR2 instead (a run this account cannot write is evaluated, never touched).
"""

from absl import app, flags
from ml_collections import config_flags

from fixed_head.train import launch
from fixed_head.train import trainer

config_flags.DEFINE_config_file('config', None, 'Run config file (configs/*.py[:arg]); '
                                'default: the config.json saved in --workdir.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the latest).')
flags.DEFINE_bool('all_steps', False, 'Evaluate every checkpoint kept, oldest first (a '
                  'learning curve after the fact; report.py reads them).')
flags.DEFINE_string('output', None, 'Directory for the results (default: WORKDIR/eval); '
                    'for a run this account cannot write.')
flags.DEFINE_bool('other_data', False, 'Allow --config to name other data than the run '
                  'was trained on (results go to a file of their own).')
flags.mark_flags_as_required(['workdir'])
launch.define_multiprocess_flags()


def main(argv):
  del argv
  launch.initialize()
  trainer.evaluate(flags.FLAGS.config, flags.FLAGS.workdir, step=flags.FLAGS.step,
                   other_data=flags.FLAGS.other_data, all_steps=flags.FLAGS.all_steps,
                   output_dir=flags.FLAGS.output)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
