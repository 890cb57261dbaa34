"""Process start-up shared by train.py and eval.py: multi-process JAX and user errors."""

from __future__ import annotations

import functools
import sys

import jax
from absl import flags, logging

from fixed_head import errors

USAGE_ERROR = errors.UsageError.exit_code  # a bad config, workdir, input or checkpoint


def define_multiprocess_flags() -> None:
  flags.DEFINE_bool('multiprocess', False,
                    'Call jax.distributed.initialize() (auto-detects TPU pod slices and '
                    'SLURM; give the three flags below elsewhere).')
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
  flags.DEFINE_integer('num_processes', None, 'Total number of processes.')
  flags.DEFINE_integer('process_id', None, 'This process index, 0..num_processes-1.')


def initialize() -> None:
  """Quiets library INFO logs (Orbax logs every file it writes) unless --verbosity is
  given, and joins the processes of a multi-process run."""
  f = flags.FLAGS
  if not any(a.startswith(('--verbosity', '-v')) for a in sys.argv[1:]):
    logging.set_verbosity(logging.WARNING)  # app.run itself sets INFO
  if f.multiprocess or f.coordinator_address:
    jax.distributed.initialize(coordinator_address=f.coordinator_address,
                               num_processes=f.num_processes, process_id=f.process_id)


def user_errors(main):
  """Turns the errors a run ends with on purpose into one line on stderr and the exit
  code of ``fixed_head.errors`` (2 bad config, workdir, input or checkpoint; 3 NaN/Inf;
  75 preempted after a checkpoint), instead of a stack trace."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except errors.Preempted as e:
      print(f'stopped: {e}; run the same command again to continue.', file=sys.stderr,
            flush=True)
      sys.exit(e.exit_code)
    except errors.NonFiniteLoss as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(e.exit_code)
    except (ValueError, FileNotFoundError) as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(USAGE_ERROR)

  return wrapped
