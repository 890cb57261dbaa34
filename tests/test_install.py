"""The installed package agrees with this checkout: the tests import what pyproject.toml says.

`pip install -e ".[test]"` (requirements.txt) records the package's metadata and installs the
pinned dependencies. A pin bumped in pyproject.toml without reinstalling, or a dependency
upgraded by hand, would make the tests run against something CI does not; this says which.
"""

import importlib.metadata
import os
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import fixed_head

import repo_configs

REPO = repo_configs.REPO
EXTRAS = ('test', 'prepare', 'tpu', 'tensorboard')


def _pyproject() -> dict:
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']


def _installed() -> importlib.metadata.Distribution:
  """fixed_head's installed distribution: the one in site-packages, not the build's
  fixed_head.egg-info that the repository root holds (on sys.path with `python -m pytest`)."""
  found = [d for d in importlib.metadata.distributions(name='fixed_head')
           if os.path.realpath(d.locate_file('')) != os.path.realpath(REPO)]
  assert found, 'fixed_head is not installed: run `pip install -r requirements.txt`.'
  return found[0]


def _key(requirement: Requirement) -> tuple:
  return (canonicalize_name(requirement.name), str(requirement.specifier),
          tuple(sorted(requirement.extras)))


def _declared(distribution: importlib.metadata.Distribution) -> dict[str | None, set]:
  """The installed metadata's requirements, by extra (None: the runtime ones)."""
  by_extra: dict[str | None, set] = {}
  for line in distribution.requires or []:
    requirement = Requirement(line)
    extras = [None] if requirement.marker is None else [
        e for e in EXTRAS if requirement.marker.evaluate({'extra': e})]
    assert len(extras) == 1, f'{line!r}: not one of the extras {EXTRAS}'
    by_extra.setdefault(extras[0], set()).add(_key(requirement))
  return by_extra


def test_the_package_is_installed_from_this_checkout():
  installed = _installed()
  assert installed.version == importlib.metadata.version('fixed_head') == _pyproject()['version']
  # The code the tests run is this repository's (an editable install or the working tree).
  assert os.path.realpath(fixed_head.__file__) == os.path.realpath(
      os.path.join(REPO, 'fixed_head', '__init__.py'))


def test_installed_metadata_lists_pyprojects_requirements():
  """The requirements recorded at install time are pyproject.toml's: reinstall after an edit."""
  project = _pyproject()
  want = {None: {_key(Requirement(r)) for r in project['dependencies']}}
  for extra, requirements in project['optional-dependencies'].items():
    want[extra] = {_key(Requirement(r)) for r in requirements}
  assert set(want) == {None, *EXTRAS}
  assert _declared(_installed()) == want, 'pyproject.toml changed: pip install -r requirements.txt'


def test_pinned_dependencies_are_the_installed_versions():
  pinned = {}
  for line in _pyproject()['dependencies']:
    requirement = Requirement(line)
    specifiers = list(requirement.specifier)
    if len(specifiers) == 1 and specifiers[0].operator == '==':
      pinned[requirement.name] = specifiers[0].version
  assert {'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'} <= set(pinned)
  installed = {name: importlib.metadata.version(name) for name in pinned}
  assert installed == pinned, 'pip install -r requirements.txt installs the pinned versions'


def _pins(extra: str) -> dict[str, str]:
  """{canonical name: version} of an extra's exact (==) pins."""
  pins = {}
  for line in _pyproject()['optional-dependencies'][extra]:
    requirement = Requirement(line)
    if [s.operator for s in requirement.specifier] == ['==']:
      pins[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
  return pins


def test_the_prepare_extra_is_installed_at_its_pins():
  pins = _pins('prepare')
  assert {'tensorflow-cpu', 'apache-beam'} <= set(pins)
  assert {name: importlib.metadata.version(name) for name in pins} == pins


def test_the_tensorboard_pin_is_one_that_tensorflow_accepts():
  """The tensorboard and prepare extras install together: tensorflow-cpu requires a
  tensorboard range (~=2.20.0 for 2.20), which the tensorboard extra's pin must be in."""
  tensorboard = _pins('tensorboard')['tensorboard']
  wanted = [Requirement(r) for r in importlib.metadata.requires('tensorflow-cpu')
            if canonicalize_name(Requirement(r).name) == 'tensorboard']
  assert wanted and all(r.specifier.contains(tensorboard) for r in wanted), (tensorboard, wanted)


def test_requires_python_is_what_the_pinned_dependencies_require():
  """pyproject's requires-python admits no Python that a pinned dependency refuses (jax
  0.10.2 needs 3.11: a 3.10 host would otherwise fail deep inside the install)."""
  from packaging.specifiers import SpecifierSet  # pylint: disable=g-import-not-at-top
  ours = SpecifierSet(_pyproject()['requires-python'])
  lowest = min(int(s.version.split('.')[1]) for s in ours if s.operator == '>=')
  for line in _pyproject()['dependencies']:
    name = Requirement(line).name
    theirs = importlib.metadata.metadata(name)['Requires-Python']
    if theirs:
      assert SpecifierSet(theirs).contains(f'3.{lowest}'), (name, theirs, str(ours))
