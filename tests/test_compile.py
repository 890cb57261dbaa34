"""compile.py: a config's real steps compiled for a TPU slice on this CPU (libtpu, no TPU).

What a TPU VM would compile is compiled here: the mesh over the slice's devices, the train
step exactly as train.py compiles it before its first batch, and the eval step. A change
that breaks TPU compilation of the LM or BERT path fails here.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from fixed_head import data as data_lib
from fixed_head.errors import UsageError
from fixed_head.nn import attention_op
from fixed_head.train import compile_check, tpu

import cli
import repo_configs

REPO = repo_configs.REPO


def _config(name: str, arg: str):
  return repo_configs.load(name).get_config(arg)


def _cli(*args, env=None, timeout=300):
  return subprocess.run([sys.executable, 'compile.py', *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env=env)


@pytest.fixture(scope='module')
def v5e():
  return tpu.topology_devices('v5e:2x2')


def test_topology_devices_are_the_slice(v5e):
  assert len(v5e) == 4 and {d.platform for d in v5e} == {'tpu'}
  assert v5e[0].device_kind == 'TPU v5 lite' and tpu.hbm_bytes(v5e[0]) == 16 * 2**30
  v4 = tpu.topology_devices('v4:2x2x1')
  assert len(v4) == 4 and v4[0].device_kind == 'TPU v4'  # one device a chip (megacore)


@pytest.mark.slow
@pytest.mark.parametrize('name,arg', [('lm1b', 'fixed,runlocal'),
                                      ('bert', 'fixed_d512_h32,runlocal')])
def test_lm_and_bert_steps_compile_for_v5e_with_the_tpu_kernel(v5e, name, arg):
  """Tiny LM1B and BERT configs at n = d_p = 128 without attention dropout: 'auto' picks the
  fused TPU kernel in every call, and Mosaic lowers it (for real, not interpreted)."""
  config = _config(name, arg)
  config.data.seq_len = config.model.max_len = config.model.head_size = 128
  config.model.attention_dropout_rate = 0.0
  report = compile_check.check(config, v5e, 'v5e:2x2')
  assert {impl for impl, *_ in report.attention} == {'tpu_flash'}
  train, evaluation = report.steps
  assert report.fits and report.devices == 4
  # Each config's own mesh: LM1B data-parallel, BERT's parameters split over the chips.
  assert report.mesh == ({'data': 4, 'fsdp': 1, 'tensor': 1} if name == 'lm1b' else
                         {'data': 1, 'fsdp': 4, 'tensor': 1})
  assert report.scanned == (name == 'bert')
  for step in (train, evaluation):
    assert step.memory is not None and step.memory.arguments > 0 and step.memory.total > 0
  # The donated state is updated in place: the outputs alias almost all of the arguments.
  assert train.memory.aliased >= 0.9 * train.memory.outputs
  # XLA's count does not see inside the Pallas kernel, and counts a scanned loop's body once
  # (BERT's 2 blocks); the rest it counts.
  layers = config.model.num_layers if report.scanned else 1
  assert 0.3 < train.flops * layers / report.accounting_flops < 2.0
  # 'auto' chose for the TPU, not for this CPU, and said why.
  assert all('TPU' in reason for _, reason, *_ in report.attention)
  lines = compile_check.describe(report)
  assert lines[-1].startswith('fits: peak') and 'v5e:2x2' in lines[-1]


@pytest.mark.slow
def test_cli_fits_and_does_not_fit():
  fits = _cli('--config=configs/default.py', '--topology=v5e:2x2')
  assert fits.returncode == 0, fits.stderr
  lines = fits.stdout.strip().splitlines()
  # A line as each step starts compiling (train, then eval), then the report.
  assert [l.split(' (')[0] for l in lines[:2]] == ['compiling the train step',
                                                  'compiling the eval step']
  out = lines[2:]
  assert out[0].startswith('v5e:2x2: 4 x TPU v5 lite (16.00 GiB HBM each)')
  assert any(l.startswith('train step (64 rows), compiled in') for l in out)
  assert out[-1].startswith('fits: peak')
  assert 'TPU_' not in fits.stderr and 'libtpu' not in fits.stderr  # libtpu kept quiet
  # d_p = 32: the einsum path, and the reason.
  assert 'attention: xla in 2 traced call(s) at d_p = 32, float32 (d_p = 32 is not a ' \
         'multiple of 128, outside the fused TPU kernel)' in out
  # 2^19 rows: the compiler itself runs out of HBM; one line on stderr, exit 3.
  big = _cli('--config=configs/default.py', '--topology=v5e:2x2', '--config.batch_size=524288')
  assert big.returncode == 3, big.stderr
  last = big.stderr.strip().splitlines()
  assert len(last) == 1 and last[0].startswith('does not fit on v5e:2x2')
  assert '--config.model.remat=attention' in last[0] and '--config.mesh.fsdp=-1' in last[0]
  assert 'Ran out of memory' in big.stdout  # the compiler's own figures


@pytest.mark.parametrize('topology', ['v7x:2x2', 'v5e:2x3', 'tpu'])
def test_cli_unknown_topology_is_one_line(topology):
  done = cli.run('compile.py', '--config=configs/default.py', f'--topology={topology}')
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [done.stderr.strip()]
  assert done.stderr.startswith(f"error: --topology='{topology}'") and 'v5e:2x2' in done.stderr


def test_missing_libtpu_names_the_install(monkeypatch):
  monkeypatch.setattr(tpu, 'libtpu_installed', lambda: False)
  with pytest.raises(UsageError, match=r'pip install -e "\.\[tpu\]"'):
    tpu.topology_devices('v5e:2x2')


@pytest.mark.slow
def test_remedies_name_what_applies(v5e):
  config = _config('lm1b', 'fixed,runlocal')
  config.model.remat = 'full'
  config.mesh.update(data=1, fsdp=-1)
  config.batch_size = 4  # one row a device
  report = compile_check.check(config, v5e, 'v5e:2x2')
  assert report.remedies == ()  # nothing left to try on this slice but a larger one
  assert 'a larger slice' in compile_check.does_not_fit_line(report)


@pytest.mark.slow
@pytest.mark.parametrize('scan_layers', [False, True])
def test_fsdp_compiles_with_each_device_on_its_own_rows(v5e, scan_layers):
  """Parameters split over 'fsdp': the models pin their activations to the rows
  (fixed_head.nn.axes.constrain). Without that, libtpu's compiler stopped on
  configs/default.py with an internal RET_CHECK ("The shape doesn't match when replacing
  'dynamic-slice ...'"), and a scanned BERT-large held every row on every device."""
  config = repo_configs.load('default').get_config()
  config.mesh.update(data=1, fsdp=-1)
  config.model.scan_layers = scan_layers
  data_parallel = repo_configs.load('default').get_config()
  data_parallel.model.scan_layers = scan_layers
  fsdp, data = (compile_check.check(c, v5e, 'v5e:2x2', eval_step=False).steps[0]
                for c in (config, data_parallel))
  assert fsdp.memory.arguments < data.memory.arguments  # the parameters are split 4 ways
  # The same activations, plus the parameters each layer gathers and its gradients' buffers.
  assert fsdp.memory.temporaries < 1.5 * data.memory.temporaries


@pytest.mark.slow
def test_cpu_runs_with_libtpu_installed_stay_quiet(tmp_path):
  """libtpu installed, no TPU, no JAX_PLATFORMS: JAX alone prints libtpu's errors at
  start-up; train.py prints none of them."""
  env = {k: v for k, v in os.environ.items()  # as a new shell has it
         if k != 'JAX_PLATFORMS' and not k.startswith(('TPU_', 'ALLOW_MULTIPLE_LIBTPU'))}
  bare = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'], env=env,
                        capture_output=True, text=True, timeout=120)
  assert 'TPU' in bare.stderr  # what the entry points avoid (this test could fail)
  done = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/default.py', f'--workdir={tmp_path}/run',
       '--config.num_train_steps=2', '--config.log_every_steps=1'], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert 'TPU' not in done.stderr, done.stderr
  lines = done.stdout.splitlines()
  compiled = next(i for i, l in enumerate(lines) if l.startswith('Compiled the train step in'))
  first_step = next(i for i, l in enumerate(lines) if l.startswith('step 1/2'))
  assert compiled < first_step  # compiled before the loop reads a batch


def test_an_op_chooses_for_its_platform_and_records_every_call():
  q = np.zeros((1, 8, 2, 128), np.float32)
  calls = []
  attention_op.AttentionOp(platform='tpu', record=calls)(q, q, q)
  attention_op.AttentionOp('jax', platform='tpu', record=calls)(q, q, q)
  assert [c['implementation'] for c in calls] == ['xla', 'jax']
  assert 'TPU' in calls[0]['reason'] and calls[1]['reason'] == 'chosen by the config'
  assert calls[0]['head_size'] == 128 and calls[0]['dtype'] == 'float32'
  assert attention_op.choose_implementation(128, np.float32, dropout=False,
                                            dense_mask=False)[0] == 'xla'  # this CPU


def test_batch_spec_is_checked_against_the_rows():
  config = _config('default', 'fixed')
  spec = data_lib.batch_spec(config.data, 4)
  rows = data_lib.build_source(config.data, 'train').get_batch(np.arange(4))
  data_lib.check_batch_spec(rows, spec)
  rows['tokens'] = rows['tokens'].astype(np.int64)
  with pytest.raises(ValueError, match='not the layout batch_spec promised'):
    data_lib.check_batch_spec(rows, spec)


def test_each_compilation_is_announced_before_it_starts():
  """compile.py prints a line as each step starts compiling (minutes for a slice on a CPU),
  naming the step, its rows and where it is compiled for; here a tiny config on the CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  config = _config('default', 'fixed')
  lines = []
  report = compile_check.check(config, jax.devices()[:1], log=lines.append)
  assert [s.name for s in report.steps] == ['train', 'eval']
  assert [line.split(' (')[0] for line in lines] == ['compiling the train step',
                                                     'compiling the eval step']
  assert lines[0].startswith(f'compiling the train step ({config.batch_size} rows for cpu, 1 x ')
