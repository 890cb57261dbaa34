r"""Trains a model from a config: ``python train.py --config=configs/default.py --workdir=DIR``.

Overrides: ``--config.model.num_heads=16``; variants: ``--config=configs/lm1b.py:fixed``.
Several processes (TPU pod slice, several GPU hosts): add ``--multiprocess`` on every host.
"""

from absl import app, flags
from ml_collections import config_flags

from fixed_head.train import launch
from fixed_head.train import trainer

config_flags.DEFINE_config_file('config', None, 'Run config file (configs/*.py[:arg]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the config.')
flags.mark_flags_as_required(['config', 'workdir'])
launch.define_multiprocess_flags()


def main(argv):
  del argv
  launch.initialize()
  trainer.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
