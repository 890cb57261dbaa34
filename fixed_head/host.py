"""The host process's memory: 2 MiB pages for the large buffers XLA allocates on the CPU.

XLA's CPU backend allocates a program's buffers afresh at every execution, and glibc maps
large allocations with new 4 KiB pages, so every train step page-faults its whole working set.
On the 2-core VM of BENCHMARKS.md an LM1B-shaped step took 683k page faults and a third of its
CPU time in the kernel; with glibc's ``glibc.malloc.hugetlb=1`` tunable (transparent huge
pages for malloc's mappings) it took 4k. A tunable is read only when a process starts, so
``use_huge_pages`` re-executes the entry point with it set. Standard library only: it runs
before JAX is imported.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb'
OPT_OUT = 'FIXED_HEAD_HUGE_PAGES'  # '0' keeps 4 KiB pages


def _glibc_has_tunable() -> bool:
  """glibc 2.35 added glibc.malloc.hugetlb; other C libraries have no such tunable."""
  libc, version = platform.libc_ver()
  if libc != 'glibc' or not sys.platform.startswith('linux'):
    return False
  try:
    return tuple(int(part) for part in version.split('.')[:2]) >= (2, 35)
  except ValueError:
    return False


def huge_pages_wanted(environ: dict[str, str] | None = None) -> bool:
  """Whether this process should be re-executed with the tunable: Linux with glibc >= 2.35,
  not opted out with FIXED_HEAD_HUGE_PAGES=0, and the tunable not already set (by us or by
  the user, to any value)."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, '1') == '0' or TUNABLE in environ.get('GLIBC_TUNABLES', ''):
    return False
  return _glibc_has_tunable()


def use_huge_pages() -> None:
  """Re-executes this process (same interpreter, arguments and environment) with
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 added, when ``huge_pages_wanted()``; else returns.
  Call it first thing in an entry point, before anything is printed or written."""
  if not huge_pages_wanted():
    return
  tunables = [t for t in os.environ.get('GLIBC_TUNABLES', '').split(':') if t]
  environ = dict(os.environ, GLIBC_TUNABLES=':'.join([*tunables, f'{TUNABLE}=1']))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
