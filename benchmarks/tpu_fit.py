r"""What fits: the paper's configs compiled for named TPU slices, on this CPU (compile.py's
check, in bulk; ``pip install -e ".[tpu]"``, no TPU needed).

Table 1, the smallest slice: for each config the paper ran (LM1B baseline and fixed at
T2T's batch; the 15 BERT columns, stage 1 at n = 128 and stage 2 at n = 512, batch 1024), at
the settings the config chooses, and each TPU generation (v4, v5e, v5p), the smallest slice
of ``LADDERS`` on which its train step compiles within HBM
(``fixed_head.train.compile_check``; compile.py also compiles the eval step, which needs a
tenth of the train step's memory or less), with the per-device peak, its share of HBM and
the compile time there. The search steps one slice at a time from a first guess (the
smallest slice, then the memory seen on the generation before, scaled by HBM): a slice too
small fails in seconds, so each cell costs one full compilation and a few short ones.

Table 2, the settings behind that choice: the largest columns at stage 2 on one slice, each
setting changed alone from the config's (remat, attention kernel, scanned or unrolled
blocks, fsdp or data-parallel sharding), with the peak and compile time of each.

Every compilation is kept as one JSON line in --cache, so a stopped run resumes where it
was and a second run only prints; --fresh compiles again.

  python benchmarks/tpu_fit.py                        # both tables
  python benchmarks/tpu_fit.py --tables=slices --configs=bert --generations=v5e
  python benchmarks/tpu_fit.py --quick                # a smoke test: a runlocal BERT, v5e
"""

import json
import math
import os
import re
import time

from absl import app, flags

import compiled_step  # benchmarks/compiled_step.py
from fixed_head.experiments import figures, sweeps, timing
from fixed_head.train import compile_check, launch, tpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bert_configs = sweeps.load_module(os.path.join(REPO, 'configs', 'bert.py'))

# Slices of each generation, smallest first: 4 to 256 chips.
LADDERS = {
    'v4': ('v4:2x2x1', 'v4:2x2x2', 'v4:2x2x4', 'v4:2x4x4', 'v4:4x4x4', 'v4:4x4x8', 'v4:4x8x8'),
    'v5e': ('v5e:2x2', 'v5e:2x4', 'v5e:4x4', 'v5e:4x8', 'v5e:8x8', 'v5e:8x16', 'v5e:16x16'),
    'v5p': ('v5p:2x2x1', 'v5p:2x2x2', 'v5p:2x2x4', 'v5p:2x4x4', 'v5p:4x4x4', 'v5p:4x4x8',
            'v5p:4x8x8'),
}
LM1B = ('configs/lm1b.py:baseline', 'configs/lm1b.py:fixed')
BERT = tuple(f'configs/bert.py:{column}{stage}' for stage in ('', ',stage=2')
             for column in bert_configs.COLUMNS)
# Table 2: the largest columns at stage 2, and each setting changed alone.
VARIANT_CONFIGS = tuple(f'configs/bert.py:{c},stage=2'
                        for c in ('large_h32', 'fixed_d512_h32', 'fixed_d768_h20'))
VARIANTS = {
    'remat none': (('model.remat', 'none'),),
    'remat attention': (('model.remat', 'attention'),),
    'remat full': (('model.remat', 'full'),),
    'fused TPU attention (attention dropout 0)': (('model.attention_impl', 'tpu_flash'),
                                                  ('model.attention_dropout_rate', 0.0)),
    'fused TPU attention (attention dropout 0), remat none': (
        ('model.attention_impl', 'tpu_flash'), ('model.attention_dropout_rate', 0.0),
        ('model.remat', 'none')),
    'unrolled blocks': (('model.scan_layers', False),),
    'data parallel (parameters replicated)': (('mesh.data', -1), ('mesh.fsdp', 1)),
}
VARIANT_SLICE = 'v5e:8x8'
# Unrolled blocks take minutes to compile (24 of them): the first config only.
UNROLLED_ONLY = VARIANT_CONFIGS[:1]

QUICK_CONFIGS = ('configs/bert.py:fixed_d512_h8,runlocal',)
QUICK_LADDERS = {'v5e': ('v5e:2x2', 'v5e:2x4')}
# --quick: a vocabulary that makes the runlocal model need v5e:2x4, over v5e:2x2's HBM (its
# 22M x 64 embedding and Adam moments; a large batch would do the same but compile 3x slower)
QUICK_OVERRIDES = (('data.vocab_size', 22_000_000),)

flags.DEFINE_list('tables', ['slices', 'variants'], 'Which tables: slices, variants.')
flags.DEFINE_multi_string('configs', ['lm1b', 'bert'], 'Table 1\'s configs: lm1b, bert, or '
                          'a spec such as configs/bert.py:large_h32,stage=2; repeat the flag '
                          'for several.')
flags.DEFINE_list('generations', list(LADDERS), 'TPU generations of table 1.')
flags.DEFINE_string('cache', os.path.join(REPO, 'results', 'benchmarks', 'tpu_fit.jsonl'),
                    'One JSON line per compilation; read first, appended to.')
flags.DEFINE_bool('fresh', False, 'Compile again what --cache already holds.')
flags.DEFINE_bool('cached_only', False, 'Compile nothing: the tables of what --cache holds, '
                  '"not compiled yet" elsewhere.')
flags.DEFINE_bool('quick', False, 'A smoke test: a runlocal BERT config at a large batch on '
                  'v5e:2x2 and v5e:2x4, and no table 2.')


def _key(spec: str, topology: str, overrides) -> str:
  return json.dumps([spec, topology, sorted(map(list, overrides))])


class Compiler:
  """compile_check.check of (config spec, topology, overrides), remembered in a file."""

  def __init__(self, path: str, fresh: bool, extra: tuple = (), cached_only: bool = False):
    self.path, self.extra, self.results = path, tuple(extra), {}
    self.cached_only = cached_only
    if os.path.exists(path) and not fresh:
      with open(path) as f:
        for line in f:
          if line.strip():
            row = json.loads(line)
            self.results[row['key']] = row

  def cached(self, spec: str, topology: str, overrides=()) -> dict | None:
    """The kept compilation, or None."""
    return self.results.get(_key(spec, topology, self.extra + tuple(overrides)))

  def __call__(self, spec: str, topology: str, overrides=()) -> dict | None:
    overrides = self.extra + tuple(overrides)
    key = _key(spec, topology, overrides)
    if key in self.results or self.cached_only:
      return self.results.get(key)  # None: not compiled yet
    start = time.perf_counter()
    print(f'  compiling {spec} for {topology} {dict(overrides) or ""}', flush=True)
    config = sweeps.override(compiled_step.load_config(spec), overrides, spec)
    row = dict(key=key, spec=spec, topology=topology, overrides=overrides)
    try:
      report = compile_check.check(config, tpu.topology_devices(topology), topology,
                                   eval_step=False)
    except Exception as e:  # pylint: disable=broad-except  (recorded: the table says why)
      row.update(fits=False, peak=None, hbm=None, compiler_error=str(e).splitlines()[0][:300])
    else:
      train = report.steps[0]
      row.update(fits=report.fits, peak=report.peak, hbm=report.hbm, chips=report.devices,
                 train_seconds=round(train.seconds, 1), error=train.error, mesh=report.mesh)
    row['seconds'] = round(time.perf_counter() - start, 1)
    print(f'    {_cell(row)} ({row["seconds"]:.0f} s)', flush=True)
    self.results[key] = row
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    return row


def _gib(n) -> str:
  return '?' if n is None else f'{n / 2**30:.1f} GiB'


def _fit(row: dict) -> str:
  """A fitting compilation: its peak a device, the share of HBM, the compile time."""
  return (f'{_gib(row["peak"])}, {row["peak"] / row["hbm"]:.0%} of HBM, '
          f'{row["train_seconds"]:.0f} s')


def _cell(row: dict | None) -> str:
  if row is None:
    return '-'
  if row.get('compiler_error'):
    return f'compiler error: {row["compiler_error"]}'
  if row['fits']:
    return f'{row["topology"]} ({row["chips"]} chips): {_fit(row)}'
  if row['peak']:
    return f'{row["topology"]}: over HBM ({_gib(row["peak"])})'
  needed = re.search(r'temporaries \(([\d.]+[KMGT])\)', row.get('error') or '')
  return (f'{row["topology"]}: over HBM (the compiler: temporaries '
          f'{needed.group(1) if needed else "?"})')


def smallest_slice(compile_one, spec: str, ladder, guess: int) -> tuple[dict | None, dict]:
  """(the row of the smallest slice of ``ladder`` that fits, or None; the row of the largest
  that does not, or of a compiler error), stepping one slice at a time from ``guess``; no
  compiling where the kept compilations already settle it, whatever path found them."""
  kept = [compile_one.cached(spec, topology) for topology in ladder]
  for i, row in enumerate(kept):
    if row and row['fits'] and (i == 0 or (kept[i - 1] and not kept[i - 1]['fits'])):
      return row, kept[i - 1] if i else None
  i = min(max(guess, 0), len(ladder) - 1)
  fitting, short = None, None
  while 0 <= i < len(ladder):
    row = compile_one(spec, ladder[i])
    if row is None:  # --cached_only, and not compiled yet
      return None, None
    if row.get('compiler_error'):
      return None, row
    if row['fits']:
      fitting = row
      if short is not None:
        break
      i -= 1
    else:
      short = row
      if fitting is not None:
        break
      i += 1
  return fitting, short


def _guess(ladder, previous: dict | None, hbm_gib: float) -> int:
  """The slice of ``ladder`` whose chips hold ``previous``'s peak at its chip count, scaled to
  ``hbm_gib`` a chip; without one, the smallest (a slice that is too small fails to compile
  in seconds, one that fits takes a minute or more)."""
  if not previous or not previous.get('fits'):
    return 0
  chips = previous['chips'] * previous['peak'] / (hbm_gib * 2**30)
  counts = [math.prod(int(x) for x in name.split(':')[1].split('x')) for name in ladder]
  return next((i for i, c in enumerate(counts) if c >= chips), len(ladder) - 1)


def _hbm_gib(generation: str) -> float:
  return tpu.HBM_GIB[tpu.DEVICE_KINDS[generation]]


def slices_table(compile_one, specs, ladders) -> str:
  """Generation by generation (a run stopped part way has whole columns), each spec's
  smallest slice; a generation's first guess is the fit seen on the one before."""
  cells, fits = {}, {}
  for generation, ladder in ladders.items():
    for spec in specs:
      fitting, short = smallest_slice(compile_one, spec, ladder,
                                      _guess(ladder, fits.get(spec), _hbm_gib(generation)))
      if fitting is not None:
        fits[spec] = fitting
        cells[spec, generation] = _cell(fitting)
      elif short is None:
        cells[spec, generation] = 'not compiled yet'
      elif short.get('compiler_error'):
        cells[spec, generation] = _cell(short)
      else:
        cells[spec, generation] = f'not on {ladder[-1]} (over HBM)'
  rows = [[spec.replace('configs/', ''), *(cells[spec, g] for g in ladders)] for spec in specs]
  return figures.markdown(['config', *ladders], rows)


def _is_default(spec: str, overrides) -> bool:
  """Whether the config of ``spec`` already has every value of ``overrides``."""
  config = compiled_step.load_config(spec)
  return all(sweeps.override(config.copy_and_resolve_references(), [(k, v)], spec)
             .to_dict() == config.to_dict() for k, v in overrides)


def variants_table(compile_one, specs, topology) -> str:
  rows = []
  for spec in specs:
    for name, overrides in {'the config\'s settings': (), **VARIANTS}.items():
      if (name == 'unrolled blocks' and spec not in UNROLLED_ONLY) or (
          overrides and _is_default(spec, overrides)):
        continue  # slow to compile, or the config's own setting (the first row)
      row = compile_one(spec, topology, overrides)
      if row is None:
        rows.append([spec.replace('configs/', ''), name, 'not compiled yet'])
        continue
      rows.append([spec.replace('configs/', ''), name,
                   f'fits: {_fit(row)}' if row.get('fits') else _cell(row)])
  return figures.markdown(['config', f'setting (on {topology})', 'peak a device, compile time'],
                          rows)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  launch.quiet_start()
  f = flags.FLAGS
  unknown = sorted(set(f.generations) - set(LADDERS))
  if unknown:
    raise app.UsageError(f'--generations: {unknown} not among {sorted(LADDERS)}')
  specs = [s for name in f.configs for s in {'lm1b': LM1B, 'bert': BERT}.get(name, (name,))]
  ladders = {g: LADDERS[g] for g in f.generations}
  extra = ()
  if f.quick:
    specs, ladders, extra = QUICK_CONFIGS, QUICK_LADDERS, QUICK_OVERRIDES
  compile_one = Compiler(f.cache, f.fresh, extra, f.cached_only)
  print(timing.header())
  print(f'libtpu {tpu.libtpu_version()}; compile times on this machine '
        f'({figures.machine()})\n', flush=True)
  if 'slices' in f.tables:
    table = slices_table(compile_one, specs, ladders)
    print('Table 1: the smallest slice each config fits on, at its own settings: the slice, '
          'the train step\'s peak HBM a device, its share of the chip\'s HBM, and its '
          'compile time on this machine\n')
    print(table + '\n', flush=True)
  if 'variants' in f.tables and not f.quick:
    print(f'Table 2: the largest columns at stage 2 on {VARIANT_SLICE}, one setting changed '
          'at a time\n')
    print(variants_table(compile_one, VARIANT_CONFIGS, VARIANT_SLICE), flush=True)


if __name__ == '__main__':
  app.run(launch.user_errors(main), flags_parser=launch.parse_flags)
