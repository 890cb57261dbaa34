"""The repository's entry points (train.py, eval.py, sample.py, ...) run in the test process.

``run('sample.py', '--workdir=...')`` does what ``python sample.py ...`` does: it loads the
script, parses the flags with ``launch.parse_flags`` and calls its ``main`` under
``launch.user_errors``, as ``app.run`` does, and returns the exit code with what was printed.
Compiled programs and imported modules are shared with the rest of the test session, so an
error path costs milliseconds instead of a new interpreter. What only a new process shows
(start-up warnings, signals, the real exit) is left to each entry point's subprocess test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging as std_logging
import os
import sys
import types
from unittest import mock

from absl import app, flags

from fixed_head.train import launch

from repo_configs import REPO


@dataclasses.dataclass(frozen=True)
class Done:
  """What a finished entry point left: ``subprocess.CompletedProcess``'s fields."""
  returncode: int
  stdout: str
  stderr: str


def _load(path: str, name: str) -> types.ModuleType:
  """The script as a new module named ``name`` (its flags are registered under that name)."""
  module = types.ModuleType(name)
  module.__file__ = path
  with open(path, encoding='utf-8') as f:
    code = compile(f.read(), path, 'exec')
  sys.modules[name] = module  # absl names a flag's module from sys.modules
  exec(code, module.__dict__)  # pylint: disable=exec-used
  return module


def _exit_code(e: SystemExit) -> int:
  if e.code is None:
    return 0
  if isinstance(e.code, int):
    return e.code
  print(e.code, file=sys.stderr)  # sys.exit('message') prints it and exits 1
  return 1


def run(script: str, *args: str, cwd: str = REPO) -> Done:
  """``python script *args`` in this process, in the directory ``cwd`` (``script`` relative to
  the repository root); the flags it defined are removed afterwards, so each call starts from
  its defaults."""
  path = os.path.join(REPO, script)
  name = '__cli_' + script.replace('/', '_').removesuffix('.py')
  argv = [path, *args]
  out, err = io.StringIO(), io.StringIO()
  fv = flags.FLAGS
  # The entry point sets logging up for its process (quiet_start lowers absl's level, a first
  # warning gives the root logger a handler on the captured stderr): undone afterwards.
  loggers = {logger_name: (lg.level, lg.handlers[:]) for logger_name in ('absl', '')
             for lg in [std_logging.getLogger(logger_name)]}
  with mock.patch.object(sys, 'argv', argv), contextlib.chdir(cwd), \
      contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      app.define_help_flags()  # --help, as app.run defines it (once a process)
      module = _load(path, name)
      result = launch.user_errors(module.main)(launch.parse_flags(argv))
      code = 0 if result is None else int(result)
    except SystemExit as e:
      code = _exit_code(e)
    except app.UsageError as e:  # app.run prints the usage and exits with its code
      print(f'FATAL Flags parsing error: {e}', file=sys.stderr)
      code = e.exitcode
    finally:
      for module_name in (name, launch.__name__):
        for flag in list(fv.flags_by_module_dict().get(module_name, [])):
          if flag.name in fv:
            delattr(fv, flag.name)
      fv.unparse_flags()
      sys.modules.pop(name, None)
      for logger_name, (level, handlers) in loggers.items():
        std_logging.getLogger(logger_name).setLevel(level)
        std_logging.getLogger(logger_name).handlers[:] = handlers
  return Done(code, out.getvalue(), err.getvalue())
