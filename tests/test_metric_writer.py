"""fixed_head/train/metric_writer.py: metrics.jsonl holds one row per step after a resume, the
rows of the steps trained again replacing those the interrupted run wrote."""

import json
import os
import shutil

import pytest

from test_train import tiny_config
from test_trainer import train


def steps_logged(workdir) -> list[int]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line)['step'] for line in f]


@pytest.mark.slow
def test_metrics_hold_one_row_per_step_after_a_resume(tmp_path):
  config = tiny_config(steps=8)
  config.eval_every_steps = 4
  train(config, tmp_path)
  shutil.rmtree(tmp_path / 'checkpoints' / '8')  # as if killed after logging steps 5..8
  train(config, tmp_path)
  assert steps_logged(tmp_path) == list(range(1, 9))
  with open(tmp_path / 'metrics.jsonl', encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  assert 'valid/loss' in rows[3] and 'train/loss' in rows[3]  # step 4: train and eval
