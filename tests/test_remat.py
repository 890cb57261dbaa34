"""``ModelConfig.remat``: recomputing activations in the backward pass changes neither the
loss nor the gradients (dropout included), wraps what it says, and plans less memory."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head.config import REMAT_POLICIES, ModelConfig
from fixed_head.nn import build_model

NUM_LAYERS = 2
# LLVM without its optimisations: the same XLA program and memory plan, compiled 4x faster.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def config(remat, scan, **kw):
  fields = dict(vocab_size=48, emb_dim=16, num_heads=4, head_size=6, num_layers=NUM_LAYERS,
                mlp_dim=32, max_len=12, dropout_rate=0.1, attention_dropout_rate=0.1,
                scan_layers=scan, remat=remat)
  fields.update(kw)
  return ModelConfig(**fields)


def loss_fn(model_config):
  """(loss, params): the LM's next-token loss with dropout on, as a function of (params,
  tokens, segment_ids, dropout key)."""
  graphdef, params = nnx.split(build_model(model_config, rngs=nnx.Rngs(0)))

  def loss(params, tokens, segment_ids, key):
    model = nnx.merge(graphdef, params)
    logits = model(tokens, segment_ids=segment_ids, deterministic=False,
                   rngs=nnx.Rngs(dropout=key))
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

  return loss, params


def grad_fn(model_config):
  """(jit(value_and_grad(loss)), params)."""
  loss, params = loss_fn(model_config)
  return jax.jit(jax.value_and_grad(loss), compiler_options=FAST_COMPILE), params


def inputs(batch=2, length=10, vocab=48):
  tokens = jax.random.randint(jax.random.key(0), (batch, length), 1, vocab)
  segment_ids = jnp.array([[1] * 6 + [2] * 4, [1] * 8 + [0] * 2])  # two documents, padding
  return tokens, segment_ids, jax.random.key(7)


@pytest.mark.slow
@pytest.mark.parametrize('scan', [False, True], ids=['loop', 'scan'])
def test_loss_and_gradients_do_not_depend_on_remat(scan):
  results = {}
  for remat in REMAT_POLICIES:
    fn, params = grad_fn(config(remat, scan))
    results[remat] = fn(params, *inputs())
  # Dropout is on: another key changes the loss, as a wrong key in the recomputation would.
  other_key = inputs()[:2] + (jax.random.key(8),)
  assert abs(fn(params, *other_key)[0] - results['full'][0]) > 1e-3
  loss, grads = results['none']
  for remat in ('attention', 'full'):
    other_loss, other_grads = results[remat]
    np.testing.assert_allclose(other_loss, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(other_grads), strict=True):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def checkpoints(model_config):
  """How many rematerialised calls (jax.checkpoint) the jaxpr of the loss holds; a scanned
  body is printed once."""
  remat = jax.make_jaxpr(jax.checkpoint(jnp.sin))(1.0).eqns[0].primitive.name  # 'remat2'
  loss, params = loss_fn(model_config)
  text = str(jax.make_jaxpr(loss)(params, *inputs()))
  return len(re.findall(rf'\b{remat}\[', text))


@pytest.mark.parametrize('scan', [False, True], ids=['loop', 'scan'])
def test_remat_wraps_each_attention_or_each_block(scan):
  per_stack = 1 if scan else NUM_LAYERS  # the scan body holds one block
  assert checkpoints(config('none', scan)) == 0
  assert checkpoints(config('attention', scan)) == per_stack
  assert checkpoints(config('full', scan)) == per_stack


@pytest.mark.slow
def test_remat_plans_less_memory_where_activations_dominate():
  """XLA's planned temporaries of the train step: the [b, h, n, n] attention activations of
  every layer dominate, and 'full' keeps only each block's input. Measured on the scanned
  stack: XLA's CPU compiler drops the barriers that keep the loop's recomputation apart
  from the forward pass (see fixed_head.nn.layers.recomputed)."""
  temp = {}
  for remat in REMAT_POLICIES:
    c = config(remat, True, vocab_size=64, emb_dim=32, num_heads=4, head_size=16,
               num_layers=4, mlp_dim=64, max_len=128)
    fn, params = grad_fn(c)
    tokens = jax.random.randint(jax.random.key(0), (4, 128), 1, 64)
    args = (params, tokens, jnp.ones_like(tokens), jax.random.key(1))
    temp[remat] = fn.lower(*args).compile().memory_analysis().temp_size_in_bytes
  assert temp['full'] < temp['attention'] < temp['none'], temp


def test_remat_must_be_a_known_policy():
  assert ModelConfig().remat == 'none'
  with pytest.raises(ValueError,
                     match=r"model.remat='blocks': must be one of \('none', 'attention', 'full'\)"):
    ModelConfig(remat='blocks')
