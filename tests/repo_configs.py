"""The repository's config files (configs/*.py) for the tests, loaded by path.

configs/ is not part of the installed package (pip installs fixed_head only), so the tests load
a config file by its path, as train.py's ``--config=`` does, instead of importing a ``configs``
package that only a sys.path edit or the current directory would make importable.
"""

import os
import shutil

from fixed_head.experiments import sweeps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name: str):
  """configs/<name>.py as a module (a fresh one each call): ``load('default').get_config()``."""
  return sweeps.load_module(os.path.join(REPO, 'configs', f'{name}.py'))


def tiny_byte_lm(path: str, *, num_layers: int = 1, checkpoint_every: int = 4) -> str:
  """Trains a tiny byte-level LM (configs/shakespeare.py at d = 32, h = 2, d_p = 16, n = 32)
  for 4 steps on README.md, one document a line (packed rows), into ``path``; returns it.
  It evaluates at the end only and keeps a checkpoint every ``checkpoint_every`` steps."""
  import jax  # pylint: disable=g-import-not-at-top
  from fixed_head.train import trainer  # pylint: disable=g-import-not-at-top
  config = load('shakespeare').get_config()
  config.data.update(dict(files=os.path.join(REPO, 'README.md'), doc_per='line', seq_len=32))
  config.model.update(dict(max_len=32, emb_dim=32, num_heads=2, head_size=16,
                           num_layers=num_layers, mlp_dim=64))
  config.update(dict(num_train_steps=4, batch_size=8, log_every_steps=2, eval_every_steps=0))
  config.checkpoint.every_steps = checkpoint_every
  config.evals.valid = dict(type='lm', split='eval', num_examples=8, batch_size=8)
  trainer.train_and_evaluate(config, path, devices=jax.devices()[:1])
  return path


def copy_run(run: str, path: str) -> str:
  """A copy of the trained run ``run`` at ``path`` (for a test that writes into it)."""
  shutil.copytree(run, path)
  return path
