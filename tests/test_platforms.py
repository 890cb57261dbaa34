"""fixed_head/platforms.py: with libtpu installed (the tests install it) and no TPU here, a
plain ``import fixed_head`` keeps JAX on the CPU, silently, and never overrides a platform
the user chose."""

import os
import subprocess
import sys

import pytest

from fixed_head import platforms

pytestmark = pytest.mark.skipif(not platforms.libtpu_installed() or platforms.has_tpu_chip(),
                                reason='needs libtpu installed and no TPU attached')


def python(code, **env):
  """``code`` in a new interpreter with the environment a new shell has, plus ``env``."""
  base = {k: v for k, v in os.environ.items()
          if k != 'JAX_PLATFORMS' and not k.startswith(('TPU_', 'ALLOW_MULTIPLE_LIBTPU'))}
  return subprocess.run([sys.executable, '-c', code], env={**base, **env}, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.slow
def test_jax_alone_prints_libtpus_errors():  # what the package avoids (this test could fail)
  got = python('import jax; print(jax.devices()[0].platform)')
  assert 'TPU' in got.stderr and got.stdout.strip() == 'cpu'


@pytest.mark.slow
def test_importing_the_package_first_keeps_jax_quiet_on_the_cpu():
  got = python('import jax, fixed_head; print(jax.devices()[0].platform)')
  assert got.returncode == 0 and got.stdout.strip() == 'cpu'
  assert got.stderr == '', got.stderr


@pytest.mark.slow
def test_a_platform_the_user_chose_is_kept():
  got = python('import jax, fixed_head; print(jax.config.jax_platforms)', JAX_PLATFORMS='cpu,tpu')
  assert got.stdout.strip() == 'cpu,tpu'  # as the user set it, not the package's 'cpu'
  got = python('import jax; jax.config.update("jax_platforms", "tpu,cpu"); import fixed_head; '
               'print(jax.config.jax_platforms)')
  assert got.stdout.strip() == 'tpu,cpu'
