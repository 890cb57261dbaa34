r"""Makes a run's pre-tokenised, pre-packed copy of its TFDS train split (``data.prepacked_dir``).

  python prepack.py --config=configs/lm1b.py:fixed --workdir=DIR \
    --config.data.prepacked_dir=PACKED

The tokenizer is the run's (``WORKDIR/tokenizer/`` or ``data.tokenizer_path``; trained there
first if missing). What the copy holds and why: ``fixed_head/data/prepacked.py``.
"""

from absl import app, flags
from ml_collections import config_flags

from fixed_head.data import build_source, prepacked, vocab
from fixed_head.errors import UsageError
from fixed_head.train import launch

config_flags.DEFINE_config_file('config', None, 'Run config file (configs/lm1b.py[:arg]).')
flags.DEFINE_string('workdir', None, 'The run\'s workdir: where its tokenizer is (or is '
                    'trained into, WORKDIR/tokenizer/) unless data.tokenizer_path says.')
flags.DEFINE_integer('rows_per_file', prepacked.ROWS_PER_FILE, 'Rows in each ArrayRecord file.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  launch.quiet_start()
  f = flags.FLAGS
  data = f.config.data.to_dict()
  if data.get('name') != 'tfds':
    raise UsageError(f"data.name={data.get('name')!r}: pre-packed copies are made of "
                     "data.name='tfds' sources (configs/lm1b.py).")
  directory = data.get('prepacked_dir') or ''
  if not directory:
    raise UsageError("data.prepacked_dir='': set --config.data.prepacked_dir=DIR, the "
                     'directory the pre-packed copy is written to.')
  tokenizer = vocab.for_data(data, workdir=f.workdir)  # the run's: read or trained there
  source = build_source(dict(data, prepacked_dir=''), 'train', tokenizer=tokenizer)
  prepacked.prepare(source, directory, workdir=f.workdir, rows_per_file=f.rows_per_file)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
