"""Parameter and FLOP accounting: equal to the built models, and to the paper's tables."""

import jax
import pytest
from flax import nnx

from fixed_head import accounting
from fixed_head.config import ModelConfig
from fixed_head.nn import build_model
from fixed_head.paper import PUBLISHED_BERT_PARAMS, bert_config

CONFIGS = [
    ModelConfig(vocab_size=100, emb_dim=32, num_heads=4, num_layers=2, mlp_dim=64, max_len=16),
    ModelConfig(vocab_size=100, emb_dim=30, num_heads=7, head_size=9, num_layers=3, mlp_dim=40,
                max_len=8, norm='pre', tie_embeddings=False),
    ModelConfig(vocab_size=90, emb_dim=24, num_heads=5, head_size=16, num_layers=1, mlp_dim=20,
                max_len=8, use_bias=False),
    ModelConfig(model_type='bert', vocab_size=100, emb_dim=32, num_heads=4, num_layers=2,
                mlp_dim=64, max_len=16, activation='gelu'),
    ModelConfig(model_type='bert', vocab_size=77, emb_dim=20, num_heads=3, head_size=11,
                num_layers=2, mlp_dim=30, max_len=16, norm='pre', type_vocab_size=3,
                use_bias=False),
    # tensor2tensor's LM switches: no attention biases, sinusoidal positions (no table).
    ModelConfig(vocab_size=100, emb_dim=32, num_heads=4, head_size=8, num_layers=2,
                mlp_dim=64, max_len=16, norm='pre', attention_use_bias=False,
                position_embedding='sinusoidal', scale_embeddings=True),
    ModelConfig(model_type='bert', vocab_size=100, emb_dim=32, num_heads=4, num_layers=1,
                mlp_dim=64, max_len=16, use_bias=False, attention_use_bias=True),
]


def _built_count(config):
  model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
  return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: f'{c.model_type}-{c.norm}-{c.head_size}-'
                         f'{c.position_embedding}-{c.resolved_attention_use_bias}')
def test_count_params_equals_built_model(config):
  assert accounting.count_params(config) == _built_count(config)


@pytest.mark.parametrize('row', PUBLISHED_BERT_PARAMS, ids=lambda r: f'{r[0]}-d{r[1]}-h{r[2]}-dp{r[3]}')
def test_published_bert_totals_round_to_the_published_million(row):
  _, d, h, dp, published = row
  count = accounting.count_params(bert_config(d, h, dp))
  assert round(count / 1e6) * 1_000_000 == published, (count, published)


def test_published_bert_large_config_builds_with_that_count():
  config = bert_config(512, 8, 128)
  assert _built_count(config) == accounting.count_params(config) == 167_690_044


def test_attention_params_grow_linearly_with_heads():
  base = ModelConfig(emb_dim=256, num_heads=4, head_size=32, use_bias=False)
  counts = [accounting.attention_params(base.replace(num_heads=h)) for h in (4, 8, 16)]
  assert counts == [4 * h * 32 * 256 for h in (4, 8, 16)]
  baseline = ModelConfig(emb_dim=256, num_heads=8, use_bias=False)
  assert accounting.attention_params(baseline) == 4 * 256 ** 2


def test_count_params_accepts_mappings_and_rejects_unknown_fields():
  config = CONFIGS[0]
  assert accounting.count_params(config.to_dict()) == accounting.count_params(config)
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['num_head'\]"):
    accounting.count_params({'num_head': 4})


def test_flops_per_token_formula():
  c = ModelConfig(vocab_size=1000, emb_dim=64, num_heads=4, head_size=32, num_layers=3,
                  mlp_dim=256, max_len=128)
  f = accounting.flops_per_token(c, seq_len=100)
  assert f.attention_projection == 3 * 2 * 4 * 64 * 4 * 32
  assert f.attention_scores == 3 * 2 * 2 * 100 * 4 * 32
  assert f.feed_forward == 3 * 2 * 2 * 64 * 256
  assert f.embedding_output == 2 * 64 * 1000
  assert f.forward == (f.attention_projection + f.attention_scores + f.feed_forward
                       + f.embedding_output)
  assert f.training == 3 * f.forward
  assert accounting.flops_per_token(c).attention_scores == 3 * 2 * 2 * 128 * 4 * 32
  # Matmul FLOPs track 2 x (parameters touched per token) outside the score product.
  matmul_params = (accounting.param_breakdown(c)['attention'] + accounting.param_breakdown(c)[
      'feed_forward'])
  assert abs(f.attention_projection + f.feed_forward - 2 * matmul_params) < 0.01 * f.forward
  bert = c.replace(model_type='bert')
  assert accounting.flops_per_token(bert).embedding_output == 2 * 64 * 1000 + 2 * 64 * 64


def test_match_num_heads_finds_closest_parameter_count():
  baseline = ModelConfig(vocab_size=32000, emb_dim=512, num_heads=8, num_layers=6,
                         mlp_dim=1024, max_len=256)
  h = accounting.match_num_heads(baseline, head_size=32, emb_dim=256)
  target = accounting.count_params(baseline)
  gap = lambda k: abs(accounting.count_params(
      baseline.replace(emb_dim=256, head_size=32, num_heads=k)) - target)
  assert gap(h) <= gap(h - 1) and gap(h) <= gap(h + 1)
  assert gap(h) < 0.01 * target
  # At equal width and head size d / h the baseline matches itself.
  assert accounting.match_num_heads(baseline, head_size=64) == 8


def test_counts_and_matching_follow_the_tensor2tensor_switches():
  base = ModelConfig(vocab_size=32000, emb_dim=512, num_heads=8, num_layers=6, mlp_dim=1024,
                     max_len=256)
  t2t = base.replace(attention_use_bias=False, position_embedding='sinusoidal')
  layer_biases = 3 * 512 + 512  # W_q, W_k, W_v biases (h d_p each) and W_o's (d)
  assert accounting.count_params(base) - accounting.count_params(t2t) == (
      256 * 512 + 6 * layer_biases)
  # A d = 256, d_p = 16 model matched to the d = 512 baseline: without biases and position
  # table on both sides, one head fewer matches best.
  with_bias = accounting.match_num_heads(base, head_size=16, emb_dim=256, max_heads=512)
  without = accounting.match_num_heads(t2t, head_size=16, emb_dim=256, max_heads=512)
  assert (with_bias, without) == (180, 179)
  for config, h in ((base, with_bias), (t2t, without)):
    target = accounting.count_params(config)
    gap = lambda k, c=config, t=target: abs(accounting.count_params(
        c.replace(emb_dim=256, head_size=16, num_heads=k)) - t)
    assert gap(h) <= min(gap(h - 1), gap(h + 1))
