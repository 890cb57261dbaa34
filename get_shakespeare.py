r"""Fetches Shakespeare's works as plain text for ``configs/shakespeare.py``:

  python get_shakespeare.py /tmp/shakespeare

Where they come from and how they are checked: ``fixed_head/data/shakespeare.py``.
"""

from absl import app

from fixed_head.data import shakespeare
from fixed_head.errors import UsageError
from fixed_head.train import launch


def main(argv):
  if len(argv) != 2:
    raise UsageError('usage: python get_shakespeare.py OUTPUT_DIR')
  shakespeare.prepare(argv[1])


if __name__ == '__main__':
  app.run(launch.user_errors(main))
