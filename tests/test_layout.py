"""The wall that keeps the architecture visible: the paper's library (the model config,
nn/, accounting, theory, paper, metrics, sampling) imports nothing of training, data, tasks,
evaluators or the entry points."""

import json
import subprocess
import sys

from test_train import REPO

LIBRARY = ('fixed_head', 'fixed_head.config', 'fixed_head.nn', 'fixed_head.nn.attention',
           'fixed_head.nn.axes', 'fixed_head.nn.layers', 'fixed_head.nn.transformer',
           'fixed_head.nn.bert', 'fixed_head.nn.flash_attention', 'fixed_head.accounting',
           'fixed_head.theory',
           'fixed_head.paper', 'fixed_head.metrics', 'fixed_head.sampling')
OUTSIDE = ('fixed_head.train', 'fixed_head.data', 'fixed_head.tasks', 'fixed_head.evaluators',
           'grain', 'tensorflow_datasets', 'ml_collections')  # (flax itself loads optax, orbax)


def test_the_papers_library_imports_no_training_or_data_code():
  script = ('import importlib, json, sys\n'
            f'for name in {LIBRARY!r}: importlib.import_module(name)\n'
            'print(json.dumps(sorted(sys.modules)))')
  loaded = json.loads(subprocess.run([sys.executable, '-c', script], cwd=REPO, check=True,
                                     capture_output=True, text=True).stdout)
  crossing = [m for m in loaded if m.split('.')[0] in OUTSIDE or m.startswith(OUTSIDE)]
  assert crossing == []


def test_every_logical_axis_has_a_sharding_rule():
  from fixed_head.nn.axes import LOGICAL_AXES  # pylint: disable=g-import-not-at-top
  from fixed_head.train.sharding import LOGICAL_RULES  # pylint: disable=g-import-not-at-top
  assert set(LOGICAL_AXES) <= {name for name, _ in LOGICAL_RULES}
