"""``python train.py`` that stops early and records the rows it reads, for test_multiprocess.py.

  JAX_NUM_CPU_DEVICES=2 python tests/slow/multiprocess_driver.py --stop_after=STEPS \
      --config=... --workdir=... --coordinator_address=127.0.0.1:PORT --num_processes=2 \
      --process_id=I

Runs train.py's own ``main`` (so the multi-process flags go through ``launch.initialize``)
with two changes: training ends after step STEPS (``train_and_evaluate(stop_after=...)``),
and the synthetic train source records every row index this process reads, written at the
end to WORKDIR/rows_<STEPS>_<process index>.json.
"""

import functools
import importlib.util
import json
import os

import jax
from absl import app, flags

from fixed_head import data as data_lib
from fixed_head import files
from fixed_head.train import launch
from fixed_head.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_train_py():
  """The repository's train.py (its flags and main), by path: it is no installed module."""
  spec = importlib.util.spec_from_file_location('train', os.path.join(REPO, 'train.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


train = _load_train_py()

flags.DEFINE_integer('stop_after', None, 'End after this step, with a checkpoint there.')


def recording_source(entry: data_lib.Source, read: list[int]) -> data_lib.Source:
  """The ``data_lib.SOURCES`` entry ``entry``, with its train split appending to ``read``."""

  class Recording(entry.cls):

    def get_batch(self, indices):
      if self.split == 'train':
        indices = [int(i) for i in indices]
        read.extend(indices)
      return super().get_batch(indices)

  return entry._replace(cls=Recording)


def main(argv):
  read: list[int] = []
  data_lib.SOURCES['synthetic'] = recording_source(data_lib.SOURCES['synthetic'], read)
  trainer.train_and_evaluate = functools.partial(trainer.train_and_evaluate,
                                                 stop_after=flags.FLAGS.stop_after)
  train.main(argv)
  name = f'rows_{flags.FLAGS.stop_after}_{jax.process_index()}.json'
  files.write_atomically(files.join(flags.FLAGS.workdir, name), json.dumps(read))


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
