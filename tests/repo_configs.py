"""The repository's config files (configs/*.py) for the tests, loaded by path.

configs/ is not part of the installed package (pip installs fixed_head only), so the tests load
a config file by its path, as train.py's ``--config=`` does, instead of importing a ``configs``
package that only a sys.path edit or the current directory would make importable.
"""

import os

from fixed_head.experiments import sweeps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name: str):
  """configs/<name>.py as a module (a fresh one each call): ``load('default').get_config()``."""
  return sweeps.load_module(os.path.join(REPO, 'configs', f'{name}.py'))
