"""The bf16 policy (model.dtype='bfloat16', param_dtype 'float32'): matmuls in bfloat16;
parameters, the softmax of attention, LayerNorm statistics and the loss in float32. A short
run on the synthetic language learns as well as float32: its eval loss curve stays within the
spread that the seed alone makes."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head.config import ModelConfig
from fixed_head.nn import TransformerLM
from fixed_head.train import trainer

import repo_configs

default_config = repo_configs.load('default')
STEPS, EVAL_EVERY = 300, 100


def _run(tmp_path, dtype: str, seed: int) -> list[float]:
  c = default_config.get_config()
  c.num_train_steps, c.eval_every_steps, c.log_every_steps = STEPS, EVAL_EVERY, EVAL_EVERY
  c.checkpoint.every_steps = STEPS
  c.seed = seed
  c.model.dtype = dtype
  c.evals.valid.num_examples = 256
  workdir = str(tmp_path / f'{dtype}_{seed}')
  trainer.train_and_evaluate(c, workdir, devices=jax.devices()[:1])
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [r['valid/loss'] for r in map(json.loads, f) if 'valid/loss' in r]


@pytest.mark.slow
def test_bf16_learns_within_the_seed_noise_of_float32(tmp_path):
  curves = {(dtype, seed): _run(tmp_path, dtype, seed)
            for dtype in ('float32', 'bfloat16') for seed in (0, 1)}
  f32 = np.array([curves['float32', s] for s in (0, 1)])
  bf16 = np.array([curves['bfloat16', s] for s in (0, 1)])
  assert f32.shape == bf16.shape == (2, STEPS // EVAL_EVERY)
  assert np.all(np.diff(bf16, axis=1) < 0)  # it learns
  seed_spread = np.abs(f32[0] - f32[1])  # what the seed alone moves, at each eval
  gap = np.abs(bf16.mean(0) - f32.mean(0))
  assert np.all(gap <= np.maximum(2 * seed_spread, 0.02)), (gap, seed_spread)
  assert not np.array_equal(bf16, f32)  # the bf16 run really computed in bfloat16


@pytest.mark.slow
def test_the_policy_keeps_parameters_softmax_norm_statistics_and_logits_in_float32():
  config = ModelConfig(model_type='lm', vocab_size=40, emb_dim=16, num_heads=2, head_size=8,
                       num_layers=1, mlp_dim=32, max_len=8, dropout_rate=0.0,
                       attention_dropout_rate=0.0, dtype='bfloat16')
  model = TransformerLM(config, rngs=nnx.Rngs(0))
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype('float32')}
  tokens = jnp.arange(16).reshape(2, 8) % 40
  hlo = jax.jit(lambda t: model(t)).lower(tokens).as_text()
  assert 'bf16' in hlo  # matmuls in bfloat16 ...
  assert model(tokens).dtype == jnp.float32  # ... logits (and so the loss) in float32
  # Softmax and LayerNorm statistics: their reductions run on f32 operands.
  reductions = [line for line in hlo.splitlines() if 'stablehlo.reduce' in line
                or 'reduce(' in line]
  assert reductions and all('bf16' not in line for line in reductions), reductions
