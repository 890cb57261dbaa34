r"""Mean ± spread of the final evaluations of runs that differ in their seed:

  python summarize.py /tmp/mnli_seed0 /tmp/mnli_seed1 /tmp/mnli_seed2 [--output=FILE.json]

Each run's result is its newest eval/step_<N>.json (eval.py), else its last evaluation in
metrics.jsonl; the spread is the sample standard deviation. See
fixed_head/experiments/over_seeds.py.
"""

import json
import os

from absl import app, flags

from fixed_head.errors import UsageError
from fixed_head.experiments import over_seeds
from fixed_head.train import launch

flags.DEFINE_string('output', None, 'Also write the summary to this JSON file (not overwritten '
                    'if it exists).')


def main(argv):
  output = flags.FLAGS.output
  if output and os.path.exists(output):
    raise UsageError(f'--output={output} exists; give a new file name (it is never '
                     'overwritten).')
  summary = over_seeds.summarize(argv[1:])
  print(over_seeds.table(summary), flush=True)
  if output:
    with open(output, 'x', encoding='utf-8') as f:
      json.dump(summary, f, indent=2)
    print(f'wrote {output}', flush=True)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
