"""``scan_layers``: the Transformer blocks stacked on a 'layers' axis and run under nnx.scan
compute what the Python loop computes, count the same parameters, and shard on a mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from fixed_head import accounting
from fixed_head.config import ModelConfig
from fixed_head.nn import build_model
from fixed_head.train import sharding

NUM_LAYERS = 3
KINDS = [('lm', 'post'), ('lm', 'pre'), ('bert', 'post'), ('bert', 'pre')]


def config(kind, norm, scan, **kw):
  fields = dict(model_type=kind, vocab_size=48, emb_dim=16, num_heads=4, head_size=6,
                num_layers=NUM_LAYERS, mlp_dim=32, max_len=12, norm=norm,
                activation='gelu' if kind == 'bert' else 'relu', dropout_rate=0.1,
                attention_dropout_rate=0.1, scan_layers=scan)
  fields.update(kw)
  return ModelConfig(**fields)


def pair(kind, norm, **kw):
  """(loop model, scanned model holding the loop model's parameters)."""
  loop = build_model(config(kind, norm, False, **kw), rngs=nnx.Rngs(0))
  scan = build_model(config(kind, norm, True, **kw), rngs=nnx.Rngs(1))
  state = nnx.state(scan, nnx.Param)
  nnx.replace_by_pure_dict(state, stacked(nnx.to_pure_dict(nnx.state(loop, nnx.Param))))
  nnx.update(scan, state)
  return loop, scan


def map_blocks(tree, fn):
  """``tree`` (a loop model's pure dict) with each ``blocks`` {0: t0, 1: t1, ...} replaced
  by fn([t0, t1, ...])."""
  if not isinstance(tree, dict):
    return tree
  return {name: fn([sub[i] for i in range(len(sub))]) if name == 'blocks' else
          map_blocks(sub, fn) for name, sub in tree.items()}


def stacked(loop_params):
  """A loop model's parameters (pure dict) stacked on a leading axis: the parameters of the
  same model with ``scan_layers``."""
  return map_blocks(loop_params, lambda layers: jax.tree.map(lambda *xs: jnp.stack(xs), *layers))


def stack_of(tree, kind):
  """The ``TransformerStack`` of a model, or its entry in a pure dict."""
  get = (lambda t, k: t[k]) if isinstance(tree, dict) else getattr
  return get(tree, 'decoder') if kind == 'lm' else get(get(tree, 'encoder'), 'encoder')


def batch(kind):
  tokens = jax.random.randint(jax.random.key(0), (2, 10), 1, 48)
  if kind == 'lm':  # two packed documents and padding: the mask is per row
    return dict(tokens=tokens, segment_ids=jnp.array([[1] * 6 + [2] * 4, [1] * 8 + [0] * 2]))
  return dict(tokens=tokens, token_types=jnp.array([[0] * 5 + [1] * 5] * 2),
              input_mask=jnp.array([[1] * 10, [1] * 7 + [0] * 3]))


def outputs(model, inputs, **kw):
  """Every output array of the model (BERT's is a dataclass of several)."""
  inputs = dict(inputs)
  return jax.tree.leaves(model(inputs.pop('tokens'), **inputs, **kw))


def assert_close(a, b, atol=1e-6):
  for x, y in zip(a, b, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize('kind,norm', KINDS)
def test_scanned_model_with_the_loop_parameters_gives_the_same_outputs_and_gradients(kind, norm):
  loop, scan = pair(kind, norm)
  inputs = batch(kind)

  def loss(model):
    ys = outputs(model, inputs)
    return sum(jnp.sum(jnp.sin(y)) for y in ys), ys

  (_, want), loop_grads = nnx.value_and_grad(loss, has_aux=True)(loop)
  (_, got), scan_grads = nnx.value_and_grad(loss, has_aux=True)(scan)
  assert_close(got, want)
  # Not vacuous: a scanned model with its own parameters computes something else.
  fresh = build_model(config(kind, norm, True), rngs=nnx.Rngs(1))
  assert not np.allclose(outputs(fresh, inputs)[0], want[0], atol=1e-3)

  loop_grads = stacked(nnx.to_pure_dict(loop_grads))
  leaves = jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(scan_grads))
  assert len(leaves) == len(jax.tree.leaves(loop_grads))
  largest = max(float(jnp.abs(g).max()) for _, g in leaves)
  for (path, got), want in zip(leaves, jax.tree.leaves(loop_grads)):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" in name:
      # Its exact gradient is 0 (the softmax removes the constant it adds to a query's
      # scores): both models give rounding noise.
      assert max(np.abs(got).max(), np.abs(want).max()) < 1e-6 * largest, name
      continue
    # Equal up to float32 rounding of another summation order.
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * float(np.abs(want).max()),
                               err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize('kind,norm', [('lm', 'pre'), ('bert', 'post')])
def test_dropout_gives_each_layer_its_own_key_split_from_one_draw(kind, norm):
  loop, scan = pair(kind, norm)
  x = jax.random.normal(jax.random.key(3), (2, 10, 16))
  mask = None if kind == 'bert' else jnp.tril(jnp.ones((10, 10), bool))
  got = stack_of(scan, kind)(x, mask=mask, deterministic=False, rngs=nnx.Rngs(dropout=7))

  # The loop's blocks, layer i given the i-th of num_layers keys split from one draw.
  keys = jax.random.split(nnx.Rngs(dropout=7).dropout(), NUM_LAYERS)
  want = x
  for block, key in zip(stack_of(loop, kind).blocks, keys):
    want = block(want, mask=mask, deterministic=False, rngs=nnx.Rngs(dropout=key))
  if norm == 'pre':
    want = stack_of(loop, kind).final_norm(want)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  clean = stack_of(scan, kind)(x, mask=mask)
  assert not np.allclose(got, clean, atol=1e-3)


@pytest.mark.slow
def test_dropout_is_a_pure_function_of_params_batch_and_key():
  kind = 'lm'
  model = build_model(config(kind, 'post', True), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  inputs = batch(kind)

  @jax.jit
  def run(params, inputs, key):
    return outputs(nnx.merge(graphdef, params), inputs, deterministic=False,
                   rngs=nnx.Rngs(dropout=key))

  a, b = run(params, inputs, jax.random.key(7)), run(params, inputs, jax.random.key(7))
  c = run(params, inputs, jax.random.key(8))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.allclose(a[0], c[0], atol=1e-3)
  clean = outputs(model, inputs)
  assert not np.allclose(a[0], clean[0], atol=1e-3)
  eager = outputs(model, inputs, deterministic=False, rngs=nnx.Rngs(dropout=jax.random.key(7)))
  assert_close(eager, a, atol=1e-5)


@pytest.mark.parametrize('kind,norm', KINDS)
@pytest.mark.parametrize('scan', [False, True])
def test_count_params_equals_the_parameters_built(kind, norm, scan):
  c = config(kind, norm, scan)
  model = build_model(c, rngs=nnx.Rngs(0))
  built = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert built == accounting.count_params(c)
  assert built == accounting.count_params(c.replace(scan_layers=not scan))


@pytest.mark.parametrize('kind', ['lm', 'bert'])
def test_stacked_parameters_lead_with_the_layers_axis(kind):
  loop, scan = (build_model(config(kind, 'pre', s), rngs=nnx.Rngs(0)) for s in (False, True))
  per_layer = dict(nnx.to_flat_state(nnx.state(stack_of(loop, kind).blocks[0], nnx.Param)))
  scanned = dict(nnx.to_flat_state(nnx.state(stack_of(scan, kind).blocks, nnx.Param)))
  assert scanned.keys() == per_layer.keys() and len(scanned) == 16
  for path, v in scanned.items():
    names, layer = v.get_metadata()['out_sharding'], per_layer[path]
    assert v.shape == (NUM_LAYERS, *layer.shape), path
    assert names == ('layers', *layer.get_metadata()['out_sharding']), path
  # The final LayerNorm is outside the scan: one, unstacked.
  assert stack_of(scan, kind).final_norm.scale.get_metadata()['out_sharding'] == ('norm',)
  assert stack_of(scan, kind).final_norm.scale.shape == (16,)
  # Each layer is initialised with its own key.
  kernel = stack_of(scan, kind).blocks.attention.query.kernel[...]
  assert not np.allclose(kernel[0], kernel[1])


def test_scan_layers_must_be_a_bool():
  with pytest.raises(ValueError, match=r"model.scan_layers='yes': must be True or False"):
    config('lm', 'post', 'yes')
  assert ModelConfig().scan_layers is False


@pytest.mark.parametrize('kind', ['lm', 'bert'])
def test_scanned_model_shards_on_a_mesh(kind):
  mesh = sharding.make_mesh(dict(data=1, fsdp=2, tensor=4), jax.devices()[:8])
  loop, scan = (build_model(config(kind, 'pre', s), rngs=nnx.Rngs(0)) for s in (False, True))
  specs = lambda model: jax.tree.map(
      lambda s: s.spec, sharding.param_shardings(nnx.state(model, nnx.Param), mesh))
  loop_specs, scan_specs = specs(loop), specs(scan)

  blocks = stack_of(scan_specs, kind)['blocks']
  assert blocks['attention']['query']['kernel'] == P(None, 'fsdp', 'tensor', None)
  assert blocks['attention']['out']['kernel'] == P(None, 'tensor', None, 'fsdp')
  assert blocks['mlp']['wi']['kernel'] == P(None, 'fsdp', 'tensor')
  assert blocks['mlp']['wi']['bias'] == P(None, 'tensor')
  assert blocks['mlp_norm']['scale'] == P(None, None)
  embed = scan_specs if kind == 'lm' else scan_specs['encoder']
  assert embed['token_embed']['embedding'] == P('tensor', 'fsdp')
  # Every stacked spec is the loop's per-layer spec behind None; the rest are the loop's.
  assert scan_specs == map_blocks(
      loop_specs, lambda layers: jax.tree.map(lambda s: P(None, *s), layers[0]))

  # Placed in those shardings, the scanned model runs and gives the unsharded outputs.
  graphdef, params = nnx.split(scan, nnx.Param)
  treedef = jax.tree.structure(params)
  placed = jax.device_put(nnx.to_pure_dict(params),
                          sharding.param_shardings(nnx.state(scan, nnx.Param), mesh))
  query = stack_of(placed, kind)['blocks']['attention']['query']['kernel']
  assert {s.data.shape for s in query.addressable_shards} == {(NUM_LAYERS, 8, 1, 6)}
  inputs = batch(kind)

  @jax.jit
  def run(pure, inputs):
    return outputs(nnx.merge(graphdef, jax.tree.unflatten(treedef, jax.tree.leaves(pure))),
                   inputs)

  assert_close(run(placed, inputs), outputs(scan, inputs), atol=1e-5)
