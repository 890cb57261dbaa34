r"""Prepares TFDS datasets once, as ArrayRecord files that training reads by index.

  pip install -r requirements-prepare.txt
  python prepare.py lm1b [glue/mnli squad wikipedia/20230601.en] [--data_dir=DIR]
  python prepare.py lm1b --fake_sources --data_dir=DIR   # offline, small stand-ins

How each dataset is prepared, and why fake and real data never share a directory:
``fixed_head/data/prepare.py``.
"""

import os
import sys

from absl import app, flags

from fixed_head import errors
from fixed_head.data import prepare
from fixed_head.errors import UsageError
from fixed_head.train import launch

_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Where to prepare (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets); '
    'give training the same with --config.data.data_dir.')
_DOWNLOAD_DIR = flags.DEFINE_string(
    'download_dir', None, 'Where the downloads go (default: DATA_DIR/downloads).')
_FAKE = flags.DEFINE_bool(
    'fake_sources', False, 'Prepare from small stand-ins of the source files instead of '
    'downloading (an offline check of the chain; needs its own --data_dir).')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', os.cpu_count() or 1, "Processes for a Beam dataset's pipeline (Wikipedia).")


def main(argv):
  launch.quiet_start()
  names = list(argv[1:])
  if not names:
    raise UsageError('usage: python prepare.py NAME [NAME ...] [--data_dir=DIR] '
                     '[--fake_sources]; NAME as TFDS spells it: lm1b, glue/mnli, squad, '
                     'wikipedia/20230601.en.')
  for name in names:
    try:
      prepare.prepare(name, _DATA_DIR.value, download_dir=_DOWNLOAD_DIR.value,
                      fake=_FAKE.value, num_workers=_NUM_WORKERS.value)
    except KeyboardInterrupt:
      # TFDS writes into an incomplete.* directory and renames it when done.
      print(f'interrupted: {name} is not prepared (nothing of it is marked done); the same '
            'command starts it again.', file=sys.stderr, flush=True)
      sys.exit(errors.Interrupted.exit_code)
  data_dir = _DATA_DIR.value
  print('train on ' + ('them' if len(names) > 1 else 'it') + ' with '
        + (f'--config.data.data_dir={data_dir}' if data_dir else
           'no --config.data.data_dir (the default directory)'), flush=True)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
