"""notebooks/quickstart.ipynb: saved without outputs, and run top to bottom on a CPU (about a
minute) it prints what its text promises."""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'notebooks', 'quickstart.ipynb')
CELL_TIMEOUT_S = 240  # the training cell takes about 30 s on an idle 2-core CPU


def test_notebook_is_saved_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [cell for cell in nb.cells if cell.cell_type == 'code']
  assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
  assert nb.metadata.kernelspec.name == 'python3'


@pytest.fixture(scope='module')
def executed(tmp_path_factory):
  """(printed text of all cells, mime types displayed): the notebook run by a python3 kernel
  in a temporary directory, which is also its TMPDIR (the training workdir lands there)."""
  tmp = tmp_path_factory.mktemp('notebook')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp)}})
  client.execute(env=dict(os.environ, TMPDIR=str(tmp)))  # any cell error raises here
  outputs = [out for cell in nb.cells if cell.cell_type == 'code' for out in cell.outputs]
  assert not [out for out in outputs if out.output_type == 'error']
  text = ''.join(out.text for out in outputs if out.output_type == 'stream')
  shown = {mime for out in outputs if out.output_type == 'display_data' for mime in out.data}
  # The training run's folder goes with the kernel: nothing of it is left in TMPDIR.
  assert not list(tmp.glob('*/synthetic_fixed')), sorted(p.name for p in tmp.iterdir())
  return text, shown


def _numbers(pattern, text):
  """Each match of ``pattern`` (one per line) as a tuple of its groups, as floats."""
  found = re.findall(pattern, text, flags=re.MULTILINE)
  return [tuple(float(g.replace(',', '')) for g in ((m,) if isinstance(m, str) else m))
          for m in found]


@pytest.mark.slow
def test_parameter_counts_agree_and_grow_with_h_only_for_fixed_heads(executed):
  text, _ = executed
  assert 'count_params agrees with every built model.' in text
  rows = _numbers(r'^ *(\d+) \| +(\d+) +([\d,]+) +([\d,]+) \| +(\d+) +([\d,]+) +([\d,]+)$', text)
  assert [r[0] for r in rows] == [2, 4, 8, 16]
  for h, base_dp, base_attention, base_total, dp, attention, total in rows:
    assert base_dp * h == 128 and dp == 64  # d_p = d / h, and d_p = n
    layer = 4 * h * dp * 128 + 3 * h * dp + 128  # 4 h d_p d weights, 3 h d_p + d biases
    assert attention == 2 * layer and base_attention == rows[0][2] == rows[0][5]
    assert total - base_total == attention - base_attention


@pytest.mark.slow
def test_theorem_one_is_exact_and_the_probe_fails_below_n_minus_1(executed):
  text, _ = executed
  [(error,)] = _numbers(r'Theorem 1 with d_p = n = 8: max \|P_head - P\| = ([\d.e+-]+)', text)
  assert error < 1e-10
  fits = _numbers(r'^probe, d_p = +(\d+): best max \|P_head - P\| = ([\d.]+)$', text)
  probe, witness = dict(fits[:7]), dict(fits[7:])  # a random 8 x 8 P, the 3 x 3 witness
  assert sorted(probe) == [1, 2, 4, 6, 7, 8, 16]
  assert all(probe[d_p] > 0.01 for d_p in (1, 2, 4, 6))
  assert all(probe[d_p] < 1e-3 for d_p in (7, 8, 16))
  assert probe[1] > probe[2] > probe[4] > probe[6]
  assert witness[1] >= 0.3402 and witness[2] < 1e-3  # (e^2 - 1) / (2 (e^2 + 2)) = 0.3402


@pytest.mark.slow
def test_training_ends_near_the_optimum_and_is_plotted(executed):
  text, shown = executed
  [(steps, gap)] = _numbers(r'gap to the optimal loss after (\d+) steps: ([\d.]+) nats', text)
  assert steps == 1500 and 0 < gap < 0.02  # README: 0.0066 for this run
  assert 'image/png' in shown


@pytest.mark.slow
def test_samples_copy_from_the_memory(executed):
  text, _ = executed
  rates = dict(re.findall(r'copy rate, ([\w ]+?): +([\d.]+)', text))
  assert float(rates['greedy']) > 0.95
  assert 0.85 < float(rates['temperature 1']) < 1.0
  assert float(rates['random tokens']) < 0.35
  assert len(re.findall(r'greedy:(?: +\d+){16} \|(?: +\d+){16}\n', text)) == 2
