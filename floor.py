r"""The count n-gram floor of an LM's data: what short-range statistics alone reach.

  python floor.py --config=configs/shakespeare.py [--config.data.seq_len=128 ...]
  python floor.py --workdir=DIR            # the data and evaluator of a trained run

Witten-Bell n-grams of orders 1 to --max_order, counted on the train split with the run's
tokenizer and scored on exactly the rows and targets of evaluator --evaluator (context cut at
the row start), overall and by target position (fixed_head/experiments/ngram.py). Prints the
table; --output=FILE.json also keeps it (never over an existing file). report.py computes
the same floor for every real-text sweep.
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from fixed_head import files
from fixed_head.data import vocab
from fixed_head.errors import UsageError
from fixed_head.experiments import ngram
from fixed_head.train import launch

config_flags.DEFINE_config_file('config', None, 'Run config file (configs/*.py[:arg]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Workdir of a trained LM run (instead of --config).')
flags.DEFINE_string('evaluator', 'valid', 'Which of config.evals gives the eval rows.')
flags.DEFINE_integer('max_order', 7, 'Highest n-gram order.')
flags.DEFINE_string('output', None, 'Also write the result to this JSON file (a new file).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  launch.quiet_start()
  f = flags.FLAGS
  if (f.config is None) == (f.workdir is None):
    raise UsageError('give --config=FILE.py (with overrides) or --workdir=DIR of a run.')
  if f.output and files.exists(f.output):
    raise UsageError(f'--output={f.output} exists: it is never overwritten; give a new path.')
  if f.workdir:
    result = ngram.floor_for_run(f.workdir, evaluator=f.evaluator, max_order=f.max_order)
  else:
    tokenizer = vocab.for_data(f.config.data, train=False)  # the config's, never trained here
    result = ngram.floor_for_config(f.config, tokenizer, evaluator=f.evaluator,
                                    max_order=f.max_order)
  print(ngram.table(result))
  if f.output:
    if os.path.dirname(f.output):
      files.make_dirs(os.path.dirname(f.output))
    files.write_atomically(f.output, json.dumps(result, indent=1) + '\n')
    print(f'wrote {f.output}')


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
