"""The step's fast paths keep results exact: accuracy without argmax, and the huge-page
re-execution of the entry points."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fixed_head import host
from fixed_head.tasks import losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_is_argmax_equals_argmax_including_ties():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 50)).astype(np.float32)
  logits[:8] = 0.0  # all tied: only label 0 is the argmax
  logits[8:16, 3] = logits[8:16, 7] = 9.0  # a tie for the max between 3 and 7: 3 wins
  labels = rng.integers(0, 50, 64)
  labels[:4] = 0
  labels[8:12], labels[12:16] = 3, 7
  labels[16:32] = np.argmax(logits[16:32], -1)  # right by construction
  got = np.asarray(losses.is_argmax(jnp.asarray(logits), jnp.asarray(labels)))
  np.testing.assert_array_equal(got, np.argmax(logits, -1) == labels)
  assert got[:4].all() and not got[4:8].any() and got[8:12].all() and not got[12:16].any()
  assert got[16:32].all()


def test_is_argmax_keeps_leading_axes():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 11))
  labels = jnp.argmax(logits, -1).at[0, 0].set(0)
  np.testing.assert_array_equal(losses.is_argmax(logits, labels),
                                jnp.argmax(logits, -1) == labels)


def test_huge_pages_wanted_respects_the_user():
  if not host._glibc_has_tunable():  # pylint: disable=protected-access
    assert not host.huge_pages_wanted({})
    return
  assert host.huge_pages_wanted({})
  assert host.huge_pages_wanted({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})
  assert not host.huge_pages_wanted({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'})
  assert not host.huge_pages_wanted({'FIXED_HEAD_HUGE_PAGES': '0'})


def test_use_huge_pages_reexecutes_once_before_jax_with_the_same_arguments():
  script = ('import os, sys\n'
            'print("run", sys.argv[1:], os.environ.get("GLIBC_TUNABLES"), flush=True)\n'
            'from fixed_head import host\n'
            'host.use_huge_pages()\n'
            'print("jax loaded:", "jax" in sys.modules)\n')
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', host.OPT_OUT)}
  env['GLIBC_TUNABLES'] = 'glibc.malloc.arena_max=4'
  out = subprocess.run([sys.executable, '-c', script, 'a b', '--x=1'], env=env, cwd=REPO,
                       check=True, capture_output=True, text=True).stdout.splitlines()
  if not host._glibc_has_tunable():  # pylint: disable=protected-access
    assert out == ["run ['a b', '--x=1'] glibc.malloc.arena_max=4", 'jax loaded: False']
    return
  assert out == ["run ['a b', '--x=1'] glibc.malloc.arena_max=4",
                 "run ['a b', '--x=1'] glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1",
                 'jax loaded: False']
  out = subprocess.run([sys.executable, '-c', script], env=dict(env, FIXED_HEAD_HUGE_PAGES='0'),
                       cwd=REPO, check=True, capture_output=True, text=True).stdout
  assert out.count('run') == 1
