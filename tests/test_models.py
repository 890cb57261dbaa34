"""The LM and BERT models: shapes, masking, packing, dropout, dtypes, encoder outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fixed_head.config import ModelConfig
from fixed_head.nn import (BertEncoder, BertForPreTraining, TransformerLM, build_model)


def lm_config(**kw):
  fields = dict(model_type='lm', vocab_size=50, emb_dim=24, num_heads=5, head_size=8,
                num_layers=2, mlp_dim=32, max_len=12, dropout_rate=0.1,
                attention_dropout_rate=0.1)
  fields.update(kw)
  return ModelConfig(**fields)


def bert_config(**kw):
  return lm_config(model_type='bert', activation='gelu', **kw)


def _tokens(shape, vocab=50, seed=0):
  return jax.random.randint(jax.random.key(seed), shape, 1, vocab)


@pytest.mark.slow
@pytest.mark.parametrize('norm', ['post', 'pre'])
@pytest.mark.parametrize('tie', [True, False])
def test_lm_is_causal(norm, tie):
  model = TransformerLM(lm_config(norm=norm, tie_embeddings=tie), rngs=nnx.Rngs(0))
  tokens = _tokens((2, 10))
  changed = tokens.at[:, 6:].set(3)
  a, b = model(tokens), model(changed)
  assert a.shape == (2, 10, 50) and a.dtype == jnp.float32
  np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-6)
  assert not np.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.slow
@pytest.mark.parametrize('positions', ['learned', 'sinusoidal'])
def test_lm_packed_rows_equal_separate_documents(positions):
  model = TransformerLM(lm_config(position_embedding=positions), rngs=nnx.Rngs(0))
  doc_a, doc_b = _tokens((1, 4), seed=1), _tokens((1, 5), seed=2)
  packed = jnp.concatenate([doc_a, doc_b, jnp.zeros((1, 2), jnp.int32)], axis=1)
  segment_ids = jnp.array([[1] * 4 + [2] * 5 + [0] * 2])
  positions = jnp.array([[0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 0]])
  out = model(packed, segment_ids=segment_ids, positions=positions)
  np.testing.assert_allclose(out[:, :4], model(doc_a), atol=1e-5)
  np.testing.assert_allclose(out[:, 4:9], model(doc_b), atol=1e-5)
  assert np.all(np.isfinite(out))


def test_lm_tied_embeddings_share_the_table():
  tied = TransformerLM(lm_config(tie_embeddings=True), rngs=nnx.Rngs(0))
  untied = TransformerLM(lm_config(tie_embeddings=False), rngs=nnx.Rngs(0))
  assert tied.output is None
  assert untied.output.kernel.shape == (24, 50)


@pytest.mark.slow
def test_dropout_is_keyed_and_only_in_training():
  model = TransformerLM(lm_config(), rngs=nnx.Rngs(0))
  tokens = _tokens((2, 10))
  clean = model(tokens)
  a = model(tokens, deterministic=False, rngs=nnx.Rngs(dropout=7))
  b = model(tokens, deterministic=False, rngs=nnx.Rngs(dropout=7))
  c = model(tokens, deterministic=False, rngs=nnx.Rngs(dropout=8))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, clean)
  np.testing.assert_array_equal(clean, model(tokens))


@pytest.mark.slow
def test_bf16_compute_with_f32_params():
  c32 = lm_config(dropout_rate=0.0, attention_dropout_rate=0.0)
  c16 = c32.replace(dtype='bfloat16')
  m32, m16 = TransformerLM(c32, rngs=nnx.Rngs(0)), TransformerLM(c16, rngs=nnx.Rngs(0))
  params = jax.tree.leaves(nnx.state(m16, nnx.Param))
  assert all(p.dtype == jnp.float32 for p in params)
  tokens = _tokens((2, 10))
  out = m16(tokens)
  assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
  np.testing.assert_allclose(out, m32(tokens), atol=0.1)


def test_sequence_longer_than_max_len_is_refused():
  model = TransformerLM(lm_config(), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='exceeds model.max_len=12'):
    model(_tokens((1, 13)))


@pytest.mark.slow
@pytest.mark.parametrize('norm', ['post', 'pre'])
def test_bert_is_bidirectional_and_ignores_padding(norm):
  model = BertForPreTraining(bert_config(norm=norm), rngs=nnx.Rngs(0))
  tokens = _tokens((2, 10))
  types = jnp.array([[0] * 5 + [1] * 5] * 2)
  input_mask = jnp.array([[1] * 7 + [0] * 3, [1] * 10])
  out = model(tokens, token_types=types, input_mask=input_mask)
  assert out.mlm_logits.shape == (2, 10, 50)
  assert out.nsp_logits.shape == (2, 2)
  assert out.encoder.sequence_output.shape == (2, 10, 24)
  assert out.encoder.pooled_output.shape == (2, 24)
  # A later token changes an earlier position's output: no causal mask.
  later = model(tokens.at[:, 6].set(2), token_types=types, input_mask=input_mask)
  assert not np.allclose(later.encoder.sequence_output[:, 0], out.encoder.sequence_output[:, 0])
  # Padded tokens do not: row 0's valid outputs ignore what sits in its padding.
  padded = model(tokens.at[0, 7:].set(4), token_types=types, input_mask=input_mask)
  np.testing.assert_allclose(padded.encoder.sequence_output[0, :7],
                             out.encoder.sequence_output[0, :7], atol=1e-5)


@pytest.mark.slow
def test_bert_masked_positions_gather_the_mlm_logits():
  model = BertForPreTraining(bert_config(), rngs=nnx.Rngs(0))
  tokens = _tokens((2, 10))
  full = model(tokens).mlm_logits
  positions = jnp.array([[1, 4, 9], [0, 2, 2]])
  picked = model(tokens, masked_positions=positions).mlm_logits
  assert picked.shape == (2, 3, 50)
  np.testing.assert_allclose(picked, jnp.take_along_axis(full, positions[..., None], 1),
                             atol=1e-5)


def test_bert_encoder_stands_alone_for_fine_tuning():
  model = BertForPreTraining(bert_config(), rngs=nnx.Rngs(0))
  assert isinstance(model.encoder, BertEncoder)
  encoder_params = nnx.state(model.encoder, nnx.Param)
  fresh = BertEncoder(bert_config(), rngs=nnx.Rngs(99))
  nnx.update(fresh, encoder_params)
  tokens = _tokens((2, 10))
  np.testing.assert_array_equal(fresh(tokens).sequence_output,
                                model(tokens).encoder.sequence_output)


def test_build_model_dispatches_on_model_type():
  assert isinstance(build_model(lm_config(), rngs=nnx.Rngs(0)), TransformerLM)
  assert isinstance(build_model(bert_config(), rngs=nnx.Rngs(0)), BertForPreTraining)
  assert isinstance(build_model(lm_config().to_dict(), rngs=nnx.Rngs(0)), TransformerLM)
  with pytest.raises(ValueError, match="model_type='lm'"):
    TransformerLM(bert_config(), rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_model_trains_under_jit():
  """A few SGD steps on a repeated sequence lower the loss: gradients flow everywhere."""
  model = TransformerLM(lm_config(dropout_rate=0.0, attention_dropout_rate=0.0),
                        rngs=nnx.Rngs(0))
  tokens = jnp.tile(jnp.arange(1, 11)[None], (4, 1))

  def loss_fn(m):
    logits = m(tokens)[:, :-1]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

  @nnx.jit
  def step(m):
    loss, grads = nnx.value_and_grad(loss_fn)(m)
    params = nnx.state(m, nnx.Param)
    nnx.update(m, jax.tree.map(lambda p, g: p - 0.5 * g, params, grads))
    return loss, grads

  first, grads = step(model)
  assert all(np.any(g != 0) for g in jax.tree.leaves(grads))
  for _ in range(20):
    last, _ = step(model)
  assert last < 0.5 * first


@pytest.mark.slow
@pytest.mark.parametrize('model_type', ['lm', 'bert'])
def test_the_pallas_kernel_gives_the_einsum_models_outputs_and_gradients(model_type):
  """Both models hand their masks to attention as a SegmentMask; the fused kernel (interpret
  mode on a CPU) reads it directly, the einsum path builds the dense mask."""
  kw = dict(dropout_rate=0.0, attention_dropout_rate=0.0, head_size=16)
  config = lm_config(**kw) if model_type == 'lm' else bert_config(**kw)
  tokens = _tokens((2, 12))
  segments = jnp.array([[1] * 5 + [2] * 5 + [0] * 2, [1] * 12])
  valid = jnp.array([[1] * 10 + [0] * 2, [1] * 9 + [0] * 3])
  extra = dict(segment_ids=segments)
  if model_type == 'bert':
    extra['input_mask'] = valid

  def loss_and_grads(impl):
    model = build_model(config.replace(attention_impl=impl), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def loss(params):
      out = nnx.merge(graphdef, params)(tokens, **extra)
      out = out if model_type == 'lm' else out.mlm_logits
      return jnp.sum(jnp.sin(out))

    return jax.value_and_grad(loss)(params)

  (want, want_grads), (got, got_grads) = loss_and_grads('xla'), loss_and_grads('pallas')
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-4)
