"""theory_figures.py --quick: the construction is exact, the probe shows the d_p < n gap, the
PNGs are real, reruns give the same numbers, and an earlier run's files are never replaced
without --overwrite."""

import csv
import os
import pathlib
import subprocess
import sys

import pytest
from matplotlib import image

from fixed_head.errors import UsageError
from fixed_head.experiments import figures, theory_figures

import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
  output = str(tmp_path_factory.mktemp('theory') / 'figures')
  lines = []
  result = theory_figures.make_figures(output, quick=True, command='pytest quick',
                                       log=lines.append)
  return output, result, '\n'.join(lines)


def _entry_point(*args):
  return subprocess.run([sys.executable, 'theory_figures.py', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def _contents(directory):
  return {name: (directory / name).read_bytes() for name in theory_figures.OUTPUTS}


@pytest.mark.slow
def test_construction_is_exact_up_to_round_off(quick):
  _, result, _ = quick
  rows = result['construction']
  assert {(r['n'], r['d'] // r['n'], r['d_p'] - r['n']) for r in rows} == {
      (n, k, dp) for n in (4, 8) for k, dp in ((1, 0), (2, -1), (2, 0), (2, n))}
  for r in rows:
    assert r['min_head_size'] == r['n'] - 1  # Dirichlet P: almost surely n - 1
    assert 0 <= r['max_abs_error'] < 1e-8, r


@pytest.mark.slow
def test_witnesses_bounds_and_probe(quick):
  _, result, _ = quick
  rows = {(r['witness'].split()[0], r['d_p']): r for r in result['witnesses']}
  for d_p in (1, 2):  # the zero column of X = [1, 0]: no d_p helps
    row = rows['low_rank_witness', d_p]
    assert row['proven_min_error'] == 0.25
    assert row['probe_error'] == pytest.approx(0.25, abs=1e-6)
    assert row['construction'].startswith('refused: X has rank 1 < n = 2')
  bound = rows['full_rank_witness', 1]['proven_min_error']
  assert bound == pytest.approx(0.3402395, abs=1e-7)
  assert bound - 1e-9 <= rows['full_rank_witness', 1]['probe_error'] < 0.4
  assert rows['full_rank_witness', 1]['construction'] == 'refused: d_p < min_head_size(P) = 2'
  assert rows['full_rank_witness', 2]['probe_error'] < 1e-6
  assert rows['full_rank_witness', 2]['construction'].startswith('exact (')


@pytest.mark.slow
def test_probe_separates_d_p_below_and_above_n(quick):
  _, result, log = quick
  rows = result['probe']
  for n in (4, 8):
    by_d_p = {r['d_p']: r for r in rows if r['n'] == n}
    assert sorted(by_d_p) == theory_figures.head_sizes(n, theory_figures.QUICK.fractions)
    smallest = by_d_p[min(by_d_p)]
    large = [r for d_p, r in by_d_p.items() if d_p >= n]
    assert {r['d_p'] for r in large} == {n, 2 * n}
    # Every target at d_p >= n is fitted 1000 times better than any at the smallest d_p.
    assert max(r['max'] for r in large) < 1e-3 * smallest['min'], (smallest, large)
    assert smallest['min'] > 0.05
    for r in by_d_p.values():
      errors = [float(e) for e in r['errors'].split()]
      assert len(errors) == r['targets'] == 3
      assert r['min'] <= r['mean'] <= r['max'] and r['mean'] == pytest.approx(
          sum(errors) / 3, rel=1e-6)
  assert 'probe 9/9: n=8 d_p=16' in log  # progress lines, then the tables
  assert '| n | d | d_p | d_p / n | mean error | std | min | max |' in log
  assert f'{figures.machine()} | ' in log  # the machine, date and command under each table
  assert log.count('| pytest quick') == 3  # one caption footer per table


@pytest.mark.slow
def test_files_are_written_and_the_pngs_are_real(quick):
  output, result, _ = quick
  assert sorted(os.listdir(output)) == sorted(theory_figures.OUTPUTS)
  assert result['files'] == [os.path.join(output, n) for n in theory_figures.OUTPUTS]
  for name in ('construction.png', 'probe.png'):
    path = os.path.join(output, name)
    with open(path, 'rb') as f:
      assert f.read(8) == PNG_MAGIC
    pixels = image.imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert pixels.std() > 0.05  # not a blank canvas
  with open(os.path.join(output, 'probe.csv'), encoding='utf-8') as f:
    table = list(csv.DictReader(f))
  assert [(int(r['n']), int(r['d_p'])) for r in table] == [
      (r['n'], r['d_p']) for r in result['probe']]
  assert [float(r['mean']) for r in table] == [r['mean'] for r in result['probe']]


@pytest.mark.slow
def test_existing_output_is_refused_in_process(quick):
  output, _, _ = quick
  with pytest.raises(UsageError, match=r'--output=.* already holds construction.csv.*'
                     r'--overwrite'):
    theory_figures.make_figures(output, quick=True)
  with pytest.raises(UsageError, match='is a file'):
    theory_figures.make_figures(os.path.join(output, 'tables.md'), quick=True, overwrite=True)


@pytest.mark.slow
def test_entry_point_reruns_and_refusals(quick, tmp_path):
  in_process, _, _ = quick
  output = tmp_path / 'figures'
  first = _entry_point(f'--output={output}', '--quick')
  assert first.returncode == 0, first.stderr
  assert f'wrote {output}/probe.png' in first.stdout
  assert 'done in' in first.stdout and first.stderr == ''
  # Seeded: another process computes exactly the same numbers.
  for name in ('construction.csv', 'witnesses.csv', 'probe.csv'):
    assert (output / name).read_bytes() == open(os.path.join(in_process, name), 'rb').read()

  before = _contents(output)
  stamps = {n: os.stat(output / n).st_mtime_ns for n in theory_figures.OUTPUTS}
  again = cli.run('theory_figures.py', f'--output={output}', '--quick')  # mistakes in process
  assert again.returncode == 2
  assert again.stdout == ''
  assert len(again.stderr.splitlines()) == 1
  assert again.stderr.startswith(f'error: --output={output} already holds construction.csv')
  assert '--overwrite' in again.stderr
  assert _contents(output) == before
  assert {n: os.stat(output / n).st_mtime_ns for n in theory_figures.OUTPUTS} == stamps

  missing = cli.run('theory_figures.py', '--quick')
  assert missing.returncode == 2
  assert len(missing.stderr.splitlines()) == 1 and '--output' in missing.stderr


@pytest.mark.slow
def test_overwrite_replaces_with_the_same_numbers(quick):
  output, result, _ = quick
  before = _contents(pathlib.Path(output))
  lines = []
  again = theory_figures.make_figures(output, quick=True, overwrite=True,
                                      command='pytest quick', log=lines.append)
  assert again['probe'] == result['probe']
  assert again['construction'] == result['construction']
  for name in ('construction.csv', 'witnesses.csv', 'probe.csv'):
    assert open(os.path.join(output, name), 'rb').read() == before[name]
