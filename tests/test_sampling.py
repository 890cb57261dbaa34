"""fixed_head.sampling.sample against step-by-step references, and trainer.load_model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head import data as data_lib
from fixed_head.config import ModelConfig
from fixed_head.errors import UsageError
from fixed_head.nn import build_model
from fixed_head.sampling import _generate, sample
from fixed_head.train import trainer
from test_train import final_params, tiny_config

V, N = 50, 16  # vocabulary, max_len


@pytest.fixture(scope='module')
def model():
  # h d_p = 40 != d = 24, pre-LN, an untied output layer, dropout (which sampling must not
  # apply); wide embeddings so that greedy continuations vary instead of repeating one token.
  config = ModelConfig(vocab_size=V, emb_dim=24, num_heads=5, head_size=8, num_layers=2,
                       mlp_dim=32, max_len=N, norm='pre', tie_embeddings=False,
                       embed_init_std=1.0, dropout_rate=0.1, attention_dropout_rate=0.1)
  return build_model(config, rngs=nnx.Rngs(0))


@pytest.fixture(scope='module')
def prompt():
  return jax.random.randint(jax.random.key(1), (3, 4), 0, V)


@nnx.jit
def last_logits(model, tokens):
  """The model on the whole prefix; the logits of its last position (they predict the next)."""
  return model(tokens)[:, -1]


def greedy_reference(model, prompt, num_tokens):
  """The model on the growing prefix, argmax of its last logits, one token at a time."""
  tokens = jnp.asarray(prompt, jnp.int32)
  for _ in range(num_tokens):
    token = jnp.argmax(last_logits(model, tokens), axis=-1).astype(jnp.int32)
    tokens = jnp.concatenate([tokens, token[:, None]], axis=1)
  return tokens


def sampled_reference(model, prompt, num_tokens, temperature, key):
  """The documented key schedule: position i drawn with fold_in(key, i)."""
  tokens = jnp.asarray(prompt, jnp.int32)
  for i in range(tokens.shape[1], tokens.shape[1] + num_tokens):
    logits = last_logits(model, tokens) / temperature  # position i - 1 predicts token i
    token = jax.random.categorical(jax.random.fold_in(key, i), logits, axis=-1)
    tokens = jnp.concatenate([tokens, token[:, None].astype(jnp.int32)], axis=1)
  return tokens


@pytest.mark.slow
def test_greedy_equals_the_step_by_step_argmax(model, prompt):
  out = sample(model, prompt, N - 4)  # fills the buffer to max_len exactly
  assert out.shape == (3, N) and out.dtype == jnp.int32
  np.testing.assert_array_equal(out, greedy_reference(model, prompt, N - 4))
  assert len(np.unique(out[:, 4:])) > 8  # the continuations vary, so the match means something
  np.testing.assert_array_equal(sample(model, prompt[:, :1], 3),
                                greedy_reference(model, prompt[:, :1], 3))


@pytest.mark.slow
def test_sampling_follows_the_documented_key_schedule(model, prompt):
  key = jax.random.key(7)
  out = sample(model, prompt, 9, temperature=1.3, rng=key)
  np.testing.assert_array_equal(out, sampled_reference(model, prompt, 9, 1.3, key))
  np.testing.assert_array_equal(out, sample(model, prompt, 9, temperature=1.3, rng=key))
  other = sample(model, prompt, 9, temperature=1.3, rng=jax.random.key(8))
  assert np.mean(np.asarray(other[:, 4:]) != np.asarray(out[:, 4:])) > 0.5
  assert not np.array_equal(out, sample(model, prompt, 9))  # temperature 1.3 is not greedy
  legacy = jax.random.PRNGKey(7)  # a raw uint32[2] key works the same way
  np.testing.assert_array_equal(sample(model, prompt, 9, temperature=1.3, rng=legacy),
                                sampled_reference(model, prompt, 9, 1.3, legacy))


def test_very_low_temperature_is_greedy(model, prompt):
  cold = sample(model, prompt, N - 4, temperature=1e-6, rng=jax.random.key(3))
  np.testing.assert_array_equal(cold, sample(model, prompt, N - 4))


def test_the_prompt_is_kept_and_nothing_is_generated_for_zero_tokens(model, prompt):
  np.testing.assert_array_equal(sample(model, prompt, 0), prompt)
  for out in (sample(model, prompt, 5), sample(model, prompt, 5, temperature=2.0,
                                                    rng=jax.random.key(0))):
    assert out.shape == (3, 9)
    np.testing.assert_array_equal(out[:, :4], prompt)


def test_one_compilation_for_any_prompt_length_and_token_count(model, prompt):
  sample(model, prompt, 2)
  before = _generate._cache_size()  # pylint: disable=protected-access
  for p, num_tokens in ((1, 15), (2, 3), (4, 12), (16, 0)):
    sample(model, jnp.tile(prompt, (1, 4))[:, :p], num_tokens)
  assert _generate._cache_size() == before  # pylint: disable=protected-access


@pytest.mark.parametrize('args, kwargs, match', [
    (([[1, 2]], 15), {}, r'p=2 \+ num_tokens=15 = 17 exceeds model.config.max_len=16'),
    (([1, 2], 3), {}, r'prompt: must be int \[b, p\]'),
    ((np.zeros((2, 0), np.int32), 3), {}, r'prompt: must be int \[b, p\] with b, p >= 1'),
    (([[1.0, 2.0]], 3), {}, 'prompt: must hold integer token ids'),
    (([[1, V]], 3), {}, r'prompt: token ids must lie in \[0, 50\)'),
    (([[1, 2]], -1), {}, 'num_tokens=-1'),
    (([[1, 2]], 2.0), {}, 'num_tokens=2.0'),
    (([[1, 2]], 3), dict(temperature=1.0), 'rng=None: temperature=1.0 samples'),
    (([[1, 2]], 3), dict(temperature=-0.5, rng=jax.random.key(0)), 'temperature=-0.5'),
    (([[1, 2]], 3), dict(temperature=float('nan'), rng=jax.random.key(0)), 'temperature=nan'),
    (([[1, 2]], 3), dict(temperature=1.0, rng=0), 'rng=0: must be one jax PRNG key'),
    (([[1, 2]], 3), dict(rng=jax.random.key(0)), 'rng: temperature=0 is greedy'),
])
def test_bad_arguments_raise_naming_the_argument(model, args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    sample(model, *args, **kwargs)


def test_only_the_lm_is_sampled():
  bert = build_model(ModelConfig(model_type='bert', vocab_size=V, emb_dim=8, num_heads=2,
                                 num_layers=1, mlp_dim=8, max_len=8), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='model: sample.. needs a fixed_head.nn.TransformerLM'):
    sample(bert, [[1, 2]], 3)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(config, workdir) of an 8-step run with checkpoints at steps 4 and 8."""
  config, workdir = tiny_config(steps=8), str(tmp_path_factory.mktemp('run'))
  trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  return config, workdir


@pytest.mark.slow
def test_load_model_restores_the_trained_parameters(trained):
  config, workdir = trained
  valid = trainer.evaluate(None, workdir, devices=jax.devices()[:1])['evals']['valid']
  model = trainer.load_model(workdir)
  assert model.config.head_size == 6 and model.config.max_len == 8
  params = nnx.to_pure_dict(nnx.state(model))
  jax.tree.map(np.testing.assert_array_equal, params, final_params(workdir, config))
  # Its loss on the evaluator's rows is the loss evaluate() reported for the checkpoint.
  rows = data_lib.build_source(config.data, 'eval').get_batch(range(32))['tokens']
  log_probs = jax.nn.log_softmax(model(jnp.asarray(rows))[:, :-1])
  nll = -np.take_along_axis(np.asarray(log_probs), rows[:, 1:, None], axis=-1)
  assert np.mean(nll) == pytest.approx(valid['loss'], rel=1e-5)

  earlier = nnx.to_pure_dict(nnx.state(trainer.load_model(workdir, step=4)))
  assert not np.allclose(earlier['token_embed']['embedding'], params['token_embed']['embedding'])
  assert sample(model, rows[:2, :4], 4).shape == (2, 8)


def test_load_model_names_what_is_missing(trained, tmp_path):
  with pytest.raises(UsageError, match='holds no config.json: it is not the workdir'):
    trainer.load_model(str(tmp_path))
  with pytest.raises(UsageError, match=r'step=3: no checkpoint of that step .*available: \[4, 8\]'):
    trainer.load_model(trained[1], step=3)
