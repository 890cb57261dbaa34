"""sample.py: a text run's own tokenizer around fixed_head.sampling.sample, one-line errors.

The first test starts sample.py as a real process; the others run it in this one (tests/cli.py).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import cli
import repo_configs
from fixed_head.data.tokenizers import ByteTokenizer
from fixed_head.sampling import sample
from fixed_head.train import trainer

SCRIPT = os.path.join(repo_configs.REPO, 'sample.py')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, tiny_lm_run):
  """A tiny byte-level LM trained for a few steps on the README (configs/shakespeare.py)."""
  return repo_configs.copy_run(tiny_lm_run,
                                 str(tmp_path_factory.mktemp('sample') / 'run'))


def run(*args):
  return cli.run('sample.py', *args)


@pytest.mark.slow
def test_greedy_output_is_the_library_sample_decoded(workdir):
  done = subprocess.run([sys.executable, SCRIPT, f'--workdir={workdir}', r'--prompt=The\nhead'],
                        capture_output=True, check=False)  # bytes: a sampled '\r' stays one
  assert done.returncode == 0, done.stderr
  text = done.stdout.decode('utf-8').split('---\n')[0].rstrip('\n')
  tok = ByteTokenizer()
  ids = np.asarray([[tok.bos_id] + tok.encode('The\nhead')], np.int32)
  expected = sample(trainer.load_model(workdir), ids, 32 - ids.shape[1])
  assert text == tok.decode(np.asarray(expected)[0].tolist())
  assert text.startswith('The\nhead')


def test_samples_follow_their_seeds(workdir):
  args = (f'--workdir={workdir}', '--prompt=A', '--temperature=1.0', '--num_samples=2',
          '--num_tokens=12')
  first, again = run(*args), run(*args)
  assert first.returncode == 0, first.stderr
  assert first.stdout == again.stdout
  samples = first.stdout.split('---\n')[:2]
  assert len(samples) == 2 and samples[0] != samples[1]  # seeds 0 and 1
  shifted = run(*args[:-1], '--num_tokens=12', '--seed=1')
  assert shifted.stdout.split('---\n')[0] == samples[1]


@pytest.mark.parametrize('args, message', [
    (('--prompt=' + 'x' * 40,), 'the model takes max_len=32'),
    (('--prompt=A', '--num_samples=2'), '--temperature=0'),
])
def test_bad_requests_are_one_line_and_exit_2(workdir, args, message):
  done = run(f'--workdir={workdir}', *args)
  assert done.returncode == 2
  assert message in done.stderr and done.stderr.strip().count('\n') == 0


def test_not_a_run_is_one_line_and_exit_2(tmp_path):
  done = run(f'--workdir={tmp_path}', '--prompt=A')
  assert done.returncode == 2 and 'not the workdir of a training run' in done.stderr
  assert done.stderr.strip().count('\n') == 0
