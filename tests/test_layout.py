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


def _imports() -> dict[str, set[str]]:
  """{module of fixed_head: the modules of fixed_head it imports}, read from the source
  (imports inside functions included, so a lazy import cannot hide an arrow); ``from P
  import m`` counts as an import of module P.m where that is a module, else of P."""
  import ast  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(REPO)
  modules = {'.'.join(p.relative_to(root).with_suffix('').parts).removesuffix('.__init__')
             for p in (root / 'fixed_head').rglob('*.py')}
  arrows = {}
  for module in modules:
    path = root / module.replace('.', '/')
    path = path / '__init__.py' if path.is_dir() else path.with_suffix('.py')
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
        names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules
                 else node.module for a in node.names]
      else:
        continue
      arrows.setdefault(module, set()).update(n for n in names if n in modules and n != module)
  return arrows


def _package_imports(files: dict[str, set[str]]) -> dict[str, set[str]]:
  """``_imports`` between packages (fixed_head.<package or top-level module>): every package
  with the others its files import."""
  package = lambda name: '.'.join(name.split('.')[:2])
  packages = {}
  for module, targets in files.items():
    packages.setdefault(package(module), set()).update(
        package(t) for t in targets if package(t) != package(module))
  return packages


def _cycles(arrows: dict[str, set[str]]) -> list[str]:
  """The nodes that reach themselves along ``arrows``."""

  def reaches(start):
    seen, todo = set(), [start]
    while todo:
      for nxt in arrows.get(todo.pop(), ()):
        if nxt not in seen:
          seen.add(nxt)
          todo.append(nxt)
    return seen

  return [node for node in sorted(arrows) if node in reaches(node)]


def test_no_file_or_package_imports_one_that_imports_it_back():
  files = _imports()
  assert _cycles(files) == []
  packages = _package_imports(files)
  assert _cycles(packages) == []
  # the input side, the tasks and the evaluators sit below training: none imports it
  below = {p for p in packages if p.startswith(('fixed_head.data', 'fixed_head.evaluators',
                                                 'fixed_head.tasks'))}
  assert {(p, t) for p in below for t in packages[p] if t in ('fixed_head.train',
          'fixed_head.experiments')} == set()


def test_the_layers_of_docs_architecture_are_the_import_graphs():
  """docs/architecture.md draws the packages top to bottom: none imports one drawn above
  it, and its first layer lists every entry point in the repository's root."""
  import pathlib  # pylint: disable=g-import-not-at-top
  doc = (pathlib.Path(REPO) / 'docs' / 'architecture.md').read_text()
  block = doc.split('## The layers\n\n```\n', 1)[1].split('```', 1)[0].splitlines()
  drawn = [f'fixed_head.{line.split("/", 1)[0]}' for line in block
           if line[:1].isalpha() and line.split()[0].endswith('/')]
  assert sorted(drawn) == ['fixed_head.data', 'fixed_head.evaluators', 'fixed_head.experiments',
                           'fixed_head.tasks', 'fixed_head.train']  # the order is checked below
  packages = _package_imports(_imports())
  assert [(p, q) for i, p in enumerate(drawn) for q in drawn[:i] if q in packages[p]] == []
  scripts = {w for line in block[:2] for w in line.split() if w.endswith('.py')}
  assert scripts == {p.name for p in pathlib.Path(REPO).glob('*.py')}  # every entry point
