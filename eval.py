r"""Evaluates a workdir's checkpoint: ``python eval.py --config=configs/default.py --workdir=DIR``.

Runs the config's ``evals`` on the latest checkpoint (or ``--step``), prints them and
writes ``DIR/eval/step_<N>.json``.
"""

from absl import app, flags
from ml_collections import config_flags

from fixed_head import launch, trainer

config_flags.DEFINE_config_file('config', None, 'Run config file (configs/*.py[:arg]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the latest).')
flags.mark_flags_as_required(['config', 'workdir'])
launch.define_multiprocess_flags()


def main(argv):
  del argv
  launch.initialize()
  trainer.evaluate(flags.FLAGS.config, flags.FLAGS.workdir, step=flags.FLAGS.step)


if __name__ == '__main__':
  app.run(launch.user_errors(main))
