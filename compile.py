r"""Compiles a config's train and eval steps for a TPU slice, on this machine, without a TPU:

  python compile.py --config=configs/lm1b.py:fixed --topology=v5e:2x2
  python compile.py --config=configs/bert.py:fixed_d512_h32,stage=2 --topology=v5e:4x4

Prints per device the parameters + optimizer state, temporaries and outputs against the
chip's HBM, the step's FLOPs (XLA's and fixed_head.accounting's) and which attention each
call chose; the last line says whether it fits. Exit 0: it fits; 3: it does not (the line
names the remedies); 2: a bad flag or config, a topology libtpu does not know, or no libtpu
(``pip install -e ".[tpu]"``). Needs no TPU, no data and no workdir.
"""

from absl import app, flags
from ml_collections import config_flags

from fixed_head import errors
from fixed_head.train import compile_check, launch, tpu

config_flags.DEFINE_config_file('config', None, 'Run config file (configs/*.py[:arg]).',
                                lock_config=True)
flags.DEFINE_string('topology', None, 'TPU slice: generation and chip grid, e.g. '
                    + ', '.join(tpu.EXAMPLES) + '.')
flags.mark_flags_as_required(['config', 'topology'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  launch.quiet_start()
  f = flags.FLAGS
  devices = tpu.topology_devices(f.topology)
  report = compile_check.check(f.config, devices, f.topology,
                               log=lambda line: print(line, flush=True))
  *lines, verdict = compile_check.describe(report)
  print('\n'.join(lines), flush=True)
  if not report.fits:  # the verdict goes to stderr, as every error's one line does
    raise errors.DoesNotFit(verdict)
  print(verdict, flush=True)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
