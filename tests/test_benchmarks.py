"""Smoke tests of the scripts in benchmarks/: each runs with --quick (tiny shapes) and prints
its header and a table of numbers that parse. No timing is asserted."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from fixed_head.experiments import sweeps

pytestmark = pytest.mark.slow  # each test starts benchmark scripts as real processes

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The rows (lists of cells) of the Markdown table whose header row starts with a given text:
# the parser benchmarks/headline.py reads the scripts' outputs with.
table = sweeps.load_module(str(ROOT / 'benchmarks' / 'headline.py')).table


def run_benchmark(script, *args) -> str:
  """stdout of ``python benchmarks/<script> --quick *args``, after checking it exits with 0."""
  result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / script), '--quick', *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def check_header(stdout, script):
  first = stdout.splitlines()[0]
  assert f'jax {jax.__version__}' in first and f'benchmarks/{script}' in first, first


@pytest.fixture(scope='module')
def gpu_outputs(tmp_path_factory):
  """benchmarks/gpu.sh with QUICK=1 (tiny shapes, on this CPU): {script: its output}, and the
  headline table it ends with."""
  out = tmp_path_factory.mktemp('gpu')
  # XLA's CPU backend unoptimised: the scripts' tables, not their speed, are checked here
  # (half the time; the fused-kernel paths are not taken on a CPU either way).
  fast = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
  result = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'gpu.sh'), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'QUICK': '1',
                               'XLA_FLAGS': fast})
  assert result.returncode == 0, result.stderr[-3000:]
  outputs = {p.stem: p.read_text() for p in out.glob('*.md')}
  return outputs, result.stdout, out


def test_memory():
  out = run_benchmark('memory.py', '--repeats=1')
  check_header(out, 'memory.py')
  rows = table(out, '| layout | remat | peak MiB |')
  assert [(r[0], r[1]) for r in rows] == [(layout, remat) for layout in ('loop', 'scan')
                                          for remat in ('none', 'attention', 'full')]
  for row in rows:
    assert float(row[2]) > 0 and float(row[4]) > 0 and float(row[6]) > 0, row
  compile_rows = table(out, '| layers | loop: lower + compile')
  assert [r[0] for r in compile_rows] == ['1', '2']
  assert all(float(r[1].split('=')[1]) > 0 for r in compile_rows)


def test_cost_growth(gpu_outputs):
  outputs, _, out = gpu_outputs
  check_header(outputs['cost_growth'], 'cost_growth.py')
  rows = table(outputs['cost_growth'], '| n | d_p | rows |')
  # n = 32: d_p 8 (d/h), 32 (both '32' and n), 128
  assert [(r[0], r[1]) for r in rows] == [('32', '8 = d/h'), ('32', '32 = n'), ('32', '128')]
  for row in rows:
    assert int(row[2]) * int(row[0]) == 64  # the same tokens in every row
    assert float(row[3]) > 0 and float(row[5]) > 0 and float(row[7]) > 0, row
  assert (out / 'cost_growth.png').read_bytes()[:4] == b'\x89PNG'
  assert '| n | d_p |' in (out / 'cost_growth.md').read_text()


def test_matmul(gpu_outputs):
  out = gpu_outputs[0]['matmul']
  check_header(out, 'matmul.py')
  rows = table(out, '| dtype |')
  assert [r[0] for r in rows] == ['float32', 'bfloat16']
  for row in rows:
    assert all(cell.endswith('FLOP/s') and float(cell.split()[0]) > 0 for cell in row[1:]), row


def test_attention_against_flax(gpu_outputs):
  out = gpu_outputs[0]['attention']
  check_header(out, 'attention.py')
  assert 'bfloat16' in out.splitlines()[1]
  rows = table(out, '| n | d_p | mask |')
  # n = 16, d = 32, h = 4: d_p = 8 (d / h) and 16 (n); causal and padding each.
  assert [(r[1], r[2]) for r in rows] == [
      (dp, mask) for dp in ('8 (baseline)', '16 (n)') for mask in ('causal', 'padding')]
  for row in rows:
    assert all(float(cell) > 0 for cell in row[3:9]), row
    assert float(row[9]) <= 5e-2  # ours and Flax computed the same thing (in bfloat16)
  assert 'ratio ours / flax: median' in out


def test_train_step_mfu_and_profile():
  # the profile of one config (gpu.sh's run below times the LM1B and BERT ones)
  out = run_benchmark('train_step.py', '--config=configs/lm1b.py:fixed')
  check_header(out, 'train_step.py')
  rows = table(out, '| config | model |')
  assert [r[0] for r in rows] == ['configs/lm1b.py:fixed']
  for row in rows:
    assert float(row[5].replace(',', '')) > 0 and 0 < float(row[8].rstrip('%')) < 100, row
  part = out[out.index('where the time goes: configs/lm1b.py:fixed'):]
  parts = table(part, '| scope | ms |')
  assert [r[0] for r in parts] == ['attention', 'feed_forward', 'output', 'loss', 'optimizer',
                                   'other', 'all traced operations',
                                   '(step wall time, untraced)']
  ms = {r[0]: float(r[1].replace(',', '')) for r in parts}
  assert all(ms[s] > 0 for s in ('attention', 'feed_forward', 'output', 'loss', 'optimizer'))
  # the table prints ms to 0.1, so each printed number is off by at most 0.05: six scopes and
  # their total may disagree by 7 * 0.05, a scope's matmul + other and its total by 3 * 0.05
  assert abs(sum(ms[s] for s in list(ms)[:6]) - ms['all traced operations']) <= 0.35 + 1e-9
  for row in parts[:7]:
    assert abs(float(row[3].replace(',', '')) + float(row[4].replace(',', ''))
               - float(row[1].replace(',', ''))) <= 0.15 + 1e-9, row


def test_bert_train_steps(gpu_outputs):
  out = gpu_outputs[0]['train_step']
  rows = table(out, '| config | model |')
  assert [(r[0], r[1]) for r in rows] == [
      ('configs/lm1b.py:baseline', 'lm'), ('configs/lm1b.py:fixed', 'lm'),
      ('configs/bert.py:fixed_d768_h12', 'bert'),
      ('configs/bert.py:fixed_d768_h12,stage=2', 'bert')]
  assert 'compute bfloat16' in out and 'where the time goes' not in out  # --noprofile


def test_input_pipeline_current_and_prepacked(gpu_outputs):
  out = gpu_outputs[0]['input_pipeline']
  check_header(out, 'input_pipeline.py')
  rows = table(out, '| source | docs/s |')
  assert [r[0] for r in rows] == ['array_record, 0 threads', 'prepacked, 0 threads']
  for row in rows:
    assert float(row[2].replace(',', '')) > 0 and float(row[4].replace(',', '')) > 0, row
  assert 'prepacked: made once from 2,000 sentences' in out


def test_gpu_script_ends_with_one_headline_table(gpu_outputs):
  outputs, stdout, out = gpu_outputs
  assert set(outputs) == {'matmul', 'attention', 'train_step', 'cost_growth', 'input_pipeline'}
  head = table(stdout, '| measure | value |')
  measures = [r[0] for r in head]
  assert measures[:3] == ['machine', 'matmul ceiling, float32', 'matmul ceiling, bfloat16']
  assert sum(m.startswith('train step MFU') for m in measures) == 4
  assert any(m.startswith('d_p = n against d_p = d/h at n = 32') for m in measures)
  assert sum(m.startswith('input rows/s / step rows/s') for m in measures) == 2
  result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'headline.py'), str(out)],
                          capture_output=True, text=True, check=True)
  assert table(result.stdout, '| measure | value |') == head
  empty = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'headline.py'), str(ROOT)],
                         capture_output=True, text=True)
  assert empty.returncode == 2 and empty.stderr.count('\n') == 1


def test_tpu_fit_finds_the_smallest_slice_and_keeps_what_it_compiled(tmp_path):
  cache = tmp_path / 'tpu_fit.jsonl'
  out = run_benchmark('tpu_fit.py', f'--cache={cache}')
  check_header(out, 'tpu_fit.py')
  rows = table(out, '| config | v5e |')
  assert [r[0] for r in rows] == ['bert.py:fixed_d512_h8,runlocal']
  assert rows[0][1].startswith('v5e:2x4 (8 chips): '), rows  # its batch is too large for 2x2
  compiled = [json.loads(line) for line in cache.read_text().splitlines()]
  assert [(r['topology'], r['fits']) for r in compiled] == [('v5e:2x2', False),
                                                            ('v5e:2x4', True)]
  # over HBM: the compiler's own verdict, or its memory plan's total
  assert (compiled[0]['error'] or '').startswith('RESOURCE_EXHAUSTED') or (
      compiled[0]['peak'] > compiled[0]['hbm']), compiled[0]
  assert compiled[1]['peak'] <= compiled[1]['hbm']
  again = run_benchmark('tpu_fit.py', f'--cache={cache}')  # the cache answers: no compiling
  assert 'compiling' not in again and table(again, '| config | v5e |') == rows


def test_prng_costs_on_cpu_and_for_a_tpu():
  out = run_benchmark('prng.py', '--topology=v5e:2x2')
  check_header(out, 'prng.py')
  impls = ['threefry2x32', 'rbg', 'unsafe_rbg']
  rows = table(out, '| dropout_rng_impl | train step (ms)')
  assert [r[0] for r in rows] == impls and rows[0][2] == '1.00'
  assert all(float(r[1]) > 0 for r in rows)
  tpu_rows = table(out, '| dropout_rng_impl | FLOPs a device')
  assert [r[0] for r in tpu_rows] == impls and tpu_rows[0][2] == '1.00'
  assert all(r[5].endswith('GiB') for r in tpu_rows)
