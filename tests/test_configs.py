"""The shipped configs: they validate, and their variants select what they say."""

import os

import jax
import ml_collections
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from fixed_head import accounting, errors, nn
from fixed_head.train import run_config
from fixed_head.config import ModelConfig
from fixed_head.experiments import sweeps

import repo_configs

default, lm1b, text = (repo_configs.load(name) for name in ('default', 'lm1b', 'text'))


@pytest.mark.parametrize('variant,head_size', [('fixed', 32), ('baseline', 8)])
def test_default_config_validates(variant, head_size):
  config = default.get_config(variant)
  model = run_config.model_config(run_config.validate(config, num_devices=1))
  assert model.resolved_head_size == head_size
  assert model.emb_dim == 64 and model.num_heads == 8 and model.num_layers == 1


@pytest.mark.parametrize('arg,d,h,dp', [
    ('fixed', 256, 16, 32), ('baseline', 256, 8, 32), ('fixed,h=64', 256, 64, 32),
    ('baseline,d=512,h=16', 512, 16, 32), ('fixed,dp=64,h=4', 256, 4, 64)])
def test_lm1b_variants(arg, d, h, dp):
  config = lm1b.get_config(arg)
  model = ModelConfig.from_mapping(config.model)
  assert (model.emb_dim, model.num_heads, model.resolved_head_size) == (d, h, dp)
  assert model.num_layers == 6 and model.mlp_dim == 1024 and model.max_len == 256
  batch = run_config.resolve(config).batch_size  # 32,768 tokens = 128 rows of 256
  assert batch == 128 and config.num_train_steps == 250_000
  assert config.optimizer.schedule == 'rsqrt' and config.optimizer.warmup_steps == 10_000


def test_lm1b_fixed_heads_can_match_a_wider_baseline():
  """The paper's Fig. 1 pairs d = 256 fixed-head models with d = 512 baselines."""
  baseline = ModelConfig.from_mapping(lm1b.get_config('baseline,d=512,h=8').model)
  h = accounting.match_num_heads(baseline, head_size=32, emb_dim=256)
  fixed = ModelConfig.from_mapping(lm1b.get_config(f'fixed,h={h}').model)
  assert abs(accounting.count_params(fixed) / accounting.count_params(baseline) - 1) < 0.01


@pytest.mark.parametrize('arg', ['wide', 'fixed,h=x', 'baseline,dp=16', 'fixed,k=3'])
def test_lm1b_bad_arguments(arg):
  with pytest.raises(ValueError, match='configs/lm1b.py:'):
    lm1b.get_config(arg)


@pytest.mark.parametrize('variant,head_size', [('fixed', 128), ('baseline', 16)])
def test_text_config_validates(variant, head_size):
  config = text.get_config(variant)
  model = run_config.model_config(run_config.validate(config, num_devices=1))
  assert model.resolved_head_size == head_size
  assert config.model.vocab_size == config.data.vocab_size == 259


def test_lm1b_config_reads_lm1b_through_tfds():
  config = lm1b.get_config('fixed')
  run_config.validate(config, num_devices=8)
  assert (config.data.name, config.data.dataset, config.data.tokenizer) == (
      'tfds', 'lm1b', 'sentencepiece')
  assert config.data.vocab_size == config.model.vocab_size == 32_000


def test_shakespeare_length_sweep_holds_tokens_and_matches_parameters():
  """configs/shakespeare.py:length: at every n the same 2048 tokens a step and
  65,536 eval tokens; baseline d_p = 8, fixed d_p = 32 and a wider baseline within 1% of the
  fixed model's parameters; 'all' (RESULTS.md's first figures) is unchanged by it."""
  from fixed_head.experiments import sweeps  # pylint: disable=g-import-not-at-top
  shakespeare = repo_configs.load('shakespeare')
  runs = shakespeare.sweep('length')
  assert len(runs) == 24 and all(r.figures == ('length',) for r in runs)
  assert not any('length' in r.figures for r in shakespeare.sweep('all'))
  models = {}
  for r in runs:
    config = run_config.validate(sweeps.config_of(shakespeare, r), num_devices=1)
    n = config.data.seq_len
    model = run_config.model_config(config)
    assert config.batch_size * n == 2048 and config.evals.valid.num_examples * n == 65_536
    assert model.max_len == n and model.num_heads == 16 and model.num_layers == 2
    assert config.num_train_steps == shakespeare.LENGTH_STEPS
    models.setdefault(n, {})[(model.emb_dim, model.resolved_head_size)] = model
  assert sorted(models) == [32, 64, 128, 256]
  for n, by_shape in models.items():
    assert sorted(by_shape) == [(128, 8), (128, 32), (192, 12)]
    fixed, wide = by_shape[(128, 32)], by_shape[(192, 12)]
    assert fixed.is_fixed_head and not wide.is_fixed_head
    assert abs(accounting.count_params(wide) / accounting.count_params(fixed) - 1) < 0.01


def test_shakespeare_position_sweep_varies_only_the_head_size():
  """configs/shakespeare.py:position (RESULTS.md 3c): one model at d = 128, h = 16, n = 64
  whose runs differ only in d_p (8 = d / h ... 64 = n) and the seed; every checkpoint kept."""
  shakespeare = sweeps.load_module(os.path.join(repo_configs.REPO, 'configs', 'shakespeare.py'))
  module, runs = sweeps.plan(os.path.join(repo_configs.REPO, 'configs', 'shakespeare.py')
                             + ':position')
  assert len(runs) == 12 and not any('position' in r.figures
                                     for r in shakespeare.sweep('all'))
  seen = set()
  for r in runs:
    config = sweeps.config_of(module, r)
    model = ModelConfig.from_mapping(config.model)
    assert (model.emb_dim, model.num_heads, model.num_layers, config.data.seq_len,
            config.batch_size, config.num_train_steps) == (128, 16, 2, 64, 32, 3000)
    assert config.checkpoint.max_to_keep * config.checkpoint.every_steps > 3000
    seen.add((model.resolved_head_size, config.seed))
  assert seen == {(d_p, s) for d_p in (8, 16, 32, 64) for s in (0, 1, 2)}


# --- configs/lm1b.py: the paper's batch, and tensor2tensor's recipe -------------------------


def parse_config(arg: str, *overrides: str) -> ml_collections.ConfigDict:
  """The config train.py would get from --config=configs/<arg> and --config.* overrides."""
  argv = ['train.py', f'--config={os.path.join(repo_configs.REPO, "configs", arg)}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def built_count(config: ModelConfig) -> int:
  model = nnx.eval_shape(lambda: nn.build_model(config, rngs=nnx.Rngs(0)))
  return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize('arg', ['fixed', 'baseline', 'fixed,h=64,recipe=t2t'])
def test_lm1b_batch_is_128_rows_of_256_tokens(arg):
  c = run_config.resolve(lm1b.get_config(arg))
  assert (c.batch_size, c.data.seq_len, c.batch_tokens) == (128, 256, 128 * 256)
  assert c.batch_tokens == 8 * 4096  # T2T's batch_size 4096 tokens, on each of 8 cores
  run_config.validate(c, num_devices=8)


@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')  # config_flags
def test_lm1b_batch_overrides_parse_and_resolve():
  def rows(*overrides):
    return run_config.resolve(parse_config('lm1b.py:fixed', *overrides)).batch_size

  assert rows() == 128
  assert rows('--config.batch_tokens=65536') == 256
  assert rows('--config.batch_tokens=None', '--config.batch_size=64') == 64
  assert rows('--config.batch_tokens=16384', '--config.batch_size=64') == 64
  with pytest.raises(errors.UsageError, match=r'config.batch_tokens=32768 \(= 128 rows of 256 '
                     r'tokens\) and config.batch_size=256 disagree'):
    rows('--config.batch_size=256')
  # The default configs give their batch in rows, as before.
  assert parse_config('default.py', '--config.batch_size=16').batch_size == 16
  assert rows('--config.batch_size=None', '--config.batch_tokens=8192') == 32


def test_lm1b_evaluates_the_whole_test_split_in_train_sized_batches():
  c = lm1b.get_config('fixed')
  assert 'num_examples' not in c.evals.valid
  assert c.evals.valid.batch_size == run_config.resolve(c).batch_size == 128


def test_t2t_config_follows_each_choice():
  c = lm1b.get_config('fixed,recipe=t2t')
  m = c.model
  assert (m.position_embedding, m.scale_embeddings, m.attention_use_bias) == (
      'sinusoidal', True, False)
  assert (m.embed_init, m.embed_init_std, m.kernel_init) == ('normal', 256 ** -0.5,
                                                             'xavier_uniform')
  assert m.mlp_dropout_rate == m.dropout_rate == m.attention_dropout_rate == 0.1
  assert (c.optimizer.name, c.optimizer.b2, c.optimizer.eps) == ('adam', 0.997, 1e-9)
  assert (c.optimizer.weight_decay_mode, c.optimizer.weight_decay) == ('l2', 0.01)
  assert (c.optimizer.schedule, c.optimizer.learning_rate) == ('rsqrt', 0.1)
  assert c.task.label_smoothing == 0.1
  run_config.validate(c, num_devices=8)
  ours = lm1b.get_config('fixed')
  assert (ours.model.position_embedding, ours.optimizer.name,
          ours.task.get('label_smoothing', 0.0)) == ('learned', 'adamw', 0.0)
  assert lm1b.get_config('baseline,d=512,recipe=t2t').model.embed_init_std == 512 ** -0.5


@pytest.mark.parametrize('arg', ['fixed,recipe=t2t', 'baseline,d=512,recipe=t2t'])
def test_t2t_parameter_count_is_the_built_models(arg):
  config = ModelConfig.from_mapping(lm1b.get_config(arg).model)
  ours = ModelConfig.from_mapping(lm1b.get_config(arg.replace('t2t', 'ours')).model)
  d, h, dp = config.emb_dim, config.num_heads, config.resolved_head_size
  parts = accounting.param_breakdown(config)
  assert parts['embeddings'] == 32_000 * d  # no position table
  assert parts['attention'] == 6 * 4 * h * dp * d  # no attention biases
  assert accounting.count_params(config) == built_count(config)
  assert accounting.count_params(ours) - accounting.count_params(config) == (
      256 * d + 6 * (3 * h * dp + d))
  # Biases and look-ups are not matmuls: the FLOPs per token are the same in both recipes.
  assert accounting.flops_per_token(config) == accounting.flops_per_token(ours)
