"""Process start-up shared by train.py and eval.py: flags, multi-process JAX, exit codes.

A mistake on the command line or in the config ends the process with one line on stderr and
exit code 2 (``fixed_head.errors``); only the project's own error types are treated so, and
any other exception (a bug) keeps its traceback and exit code 1.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence

import jax
from absl import flags, logging

from fixed_head import errors, platforms

USAGE_ERROR = errors.UsageError.exit_code  # a bad config, workdir, input or checkpoint


def define_multiprocess_flags() -> None:
  flags.DEFINE_bool('multiprocess', False,
                    'Call jax.distributed.initialize() (auto-detects TPU pod slices and '
                    'SLURM; give the three flags below elsewhere).')
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
  flags.DEFINE_integer('num_processes', None, 'Total number of processes.')
  flags.DEFINE_integer('process_id', None, 'This process index, 0..num_processes-1.')


def quiet_start() -> None:
  """Library INFO logs (Orbax logs every file it writes, jax its backends) off, unless
  --verbosity is given (app.run itself sets INFO); and on a machine without a TPU, JAX kept
  from opening one (and libtpu, if installed, from printing why it cannot)."""
  if not any(a.startswith(('--verbosity', '-v')) for a in sys.argv[1:]):
    logging.set_verbosity(logging.WARNING)
  platforms.skip_absent_tpu()


def initialize() -> None:
  """Quiets library INFO logs, keeps JAX off a TPU this machine does not have (libtpu
  installed for compile.py), and joins the processes of a multi-process run."""
  f = flags.FLAGS
  quiet_start()
  if f.multiprocess or f.coordinator_address:
    jax.distributed.initialize(coordinator_address=f.coordinator_address,
                               num_processes=f.num_processes, process_id=f.process_id)


def _exit(message: str, code: int) -> None:
  print(message, file=sys.stderr, flush=True)
  sys.exit(code)


def _root(error: BaseException) -> BaseException:
  """The innermost exception of a chain (what a config file itself raised)."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  return error


def _override_error(error: BaseException, argv: Sequence[str]) -> str | None:
  """One line for ``--config.a.b=...`` naming no field (ml_collections raises a KeyError
  or AttributeError with its 'Did you mean' suggestion), or None for anything else."""
  text = str(error).strip('\'"').replace('\\n', '\n').replace("\\'", "'")
  key = text.split('\n')[0].strip('\'"')
  # The override naming the missing field, as its last part or a parent (--config.modle.x).
  override = next((a.split('=')[0] for a in argv[1:] if a.startswith('--config.')
                   and key in a.split('=')[0].split('.')[1:]), None)
  if override is None:
    return None
  parts = override.split('.')
  at = len(parts) - 1 - parts[::-1].index(key)
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  hint = (f'; did you mean {".".join([*parts[:at], suggestion.group(1), *parts[at + 1:]])}?'
          if suggestion else '; see fixed_head/train/run_config.py defaults() for the fields')
  return f'error: {override}: the config has no field {key!r}{hint}'


HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl flag parsing (``app.run(main, flags_parser=parse_flags)``) where a bad flag, an
  unknown ``--config.`` field or a config file that cannot be loaded is one line and exit 2.
  A config file that raises something other than ValueError / OSError is a bug: traceback."""
  try:
    rest = flags.FLAGS(argv)
  except SystemExit as e:  # absl's --help / --helpfull print the flags, then exit 1
    if e.code == 1 and any(a.split('=')[0] in HELP_FLAGS for a in argv[1:]):
      sys.exit(0)  # asked for, and given: not an error
    raise
  except flags.Error as e:
    root = _root(e)
    if root is not e and not isinstance(root, (ValueError, OSError)):
      raise
    message = str(root) if 'Traceback' in str(e) else str(e)
    _exit(f'error: {message.strip().splitlines()[0]}', USAGE_ERROR)
  except (AttributeError, KeyError) as e:
    line = _override_error(e, argv)
    if line is None:
      raise
    _exit(line, USAGE_ERROR)
  # config_flags defers a config file that could not be read until the config is used.
  config = flags.FLAGS['config'] if 'config' in flags.FLAGS else None
  if config is not None and config.value is not None and hasattr(config, 'config_filename'):
    try:
      config.value.keys()
    except OSError as e:
      last = str(e).strip().splitlines()[-1].strip()
      _exit(f'error: --config={config.config_filename}: {last}', USAGE_ERROR)
  return rest


def user_errors(main):
  """Turns the errors a run ends with on purpose into one line on stderr and the exit
  code of ``fixed_head.errors`` (2 bad config, workdir, input or checkpoint; 3 NaN/Inf;
  75 preempted and 130 interrupted, after a checkpoint), instead of a stack trace.
  Any other exception, ValueError included, is a bug and keeps its traceback."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except errors.Preempted as e:
      _exit(f'stopped: {e}; run the same command again to continue.', e.exit_code)
    except errors.NonFiniteLoss as e:
      _exit(f'error: {e}', e.exit_code)
    except errors.DoesNotFit as e:
      _exit(str(e), e.exit_code)
    except errors.UsageError as e:
      _exit(f'error: {e}', e.exit_code)
    except KeyboardInterrupt:
      _exit('aborted by Ctrl-C: nothing more was saved; the checkpoints already written '
            'stand, and the same command resumes from the newest.', errors.Interrupted.exit_code)

  return wrapped
