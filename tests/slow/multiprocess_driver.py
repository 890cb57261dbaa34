"""One process of a multi-process training run on the CPU, for test_multiprocess.py.

  python tests/slow/multiprocess_driver.py WORKDIR STEPS PROCESS_ID NUM_PROCESSES PORT

Trains tests/slow/kill_config.py (a 12-step schedule) up to step STEPS. Each process gets 2 CPU devices (4 with one process); the synthetic train source is wrapped
so that every row index a process reads is appended to WORKDIR/rows_<steps>_<process>.json.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [REPO, os.path.join(REPO, 'tests', 'slow')]

import jax  # noqa: E402

from fixed_head import data as data_lib  # noqa: E402
from fixed_head import trainer  # noqa: E402
import kill_config  # noqa: E402  pylint: disable=g-import-not-at-top


def main(workdir: str, steps: int, process_id: int, num_processes: int, port: int) -> None:
  jax.config.update('jax_num_cpu_devices', 4 // num_processes)
  if num_processes > 1:
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                               num_processes=num_processes, process_id=process_id)
  read: list[int] = []
  build_synthetic = data_lib.SOURCES['synthetic']

  def recording(data_config, split, num_examples, workdir_):
    source = build_synthetic(data_config, split, num_examples, workdir_)
    if split == 'train':
      get_batch = source.get_batch
      source.get_batch = lambda indices: (read.extend(int(i) for i in indices),
                                          get_batch(indices))[1]
    return source

  data_lib.SOURCES['synthetic'] = recording
  config = kill_config.get_config()
  config.num_train_steps = 12
  config.checkpoint.every_steps = 4
  config.log_every_steps = 4
  trainer.train_and_evaluate(config, workdir, stop_after=steps)
  with open(os.path.join(workdir, f'rows_{steps}_{process_id}.json'), 'w') as f:
    json.dump(read, f)


if __name__ == '__main__':
  main(sys.argv[1], *map(int, sys.argv[2:]))
