r"""Our MultiHeadAttention against ``flax.nnx.MultiHeadAttention``, forward and forward+backward.

Both modules hold the same weights (ours copied into Flax's with qkv_features = h * d_p) and
see the same inputs and mask: causal (the LM) or padding (BERT, the last quarter of every
row padded). Ours takes the mask as the models give it, a ``SegmentMask``; Flax takes its
dense [b, 1, n, n] array. For every cell the two outputs are checked to agree before
anything is timed. Forward+backward is the gradient of a fixed linear function of the output
with respect to the parameters and the input, as in training. Times are medians over
``--repeats`` rounds in which the two take turns; ratio = ours / Flax (below 1: ours faster).

The grid covers the head sizes the paper compares at d = 256, h = 16: d_p = d / h = 16 (the
baseline), 32 (its fixed-head LM1B models), 128 (its BERT models) and d_p = n.

  python benchmarks/attention.py                           # n = 128, 256; float32
  python benchmarks/attention.py --seq_lens=128,512 --dtype=bfloat16 --batch_size=32
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from fixed_head.experiments import figures, timing
from fixed_head.nn import attention as attn
from fixed_head.nn import masks

flags.DEFINE_integer('emb_dim', 256, 'd.')
flags.DEFINE_integer('num_heads', 16, 'h.')
flags.DEFINE_list('head_sizes', ['baseline', '32', '128', 'n'],
                  "d_p values: integers, 'baseline' (d / h) and 'n' (the sequence length).")
flags.DEFINE_list('seq_lens', ['128', '256'], 'Sequence lengths n.')
flags.DEFINE_list('masks', ['causal', 'padding'], "'causal' (LM) and/or 'padding' (BERT).")
flags.DEFINE_integer('batch_size', 8, 'Rows.')
flags.DEFINE_string('dtype', 'float32', 'Compute dtype (parameters stay float32).')
flags.DEFINE_integer('repeats', 5, 'Timed rounds; the median is shown.')
flags.DEFINE_bool('quick', False, 'Tiny shapes, d_p = d/h and n only, 1 repeat (a smoke '
                  'test).')


def head_size(spec: str, d: int, h: int, n: int) -> int:
  return {'baseline': d // h, 'n': n}.get(spec) or int(spec)


def copy_into_flax(ours: attn.MultiHeadAttention, dtype) -> nnx.MultiHeadAttention:
  """A flax.nnx.MultiHeadAttention with qkv_features = h * d_p holding ``ours``'s weights."""
  h, dp, d = ours.num_heads, ours.head_size, ours.in_features
  ref = nnx.MultiHeadAttention(num_heads=h, in_features=d, qkv_features=h * dp, decode=False,
                               dtype=dtype, rngs=nnx.Rngs(1))
  for name in ('query', 'key', 'value', 'out'):
    mine, theirs = getattr(ours, name), getattr(ref, name)
    theirs.kernel[...] = mine.kernel[...].reshape(theirs.kernel.shape)
    theirs.bias[...] = mine.bias[...].reshape(theirs.bias.shape)
  return ref


def programs(module, x, mask, cotangent):
  """(forward, forward+backward) of ``module(x, mask=mask)``, jitted, as thunks."""
  graphdef, params = nnx.split(module)

  def apply(params, x):
    return nnx.merge(graphdef, params)(x, mask=mask)

  def loss(params, x):
    return jnp.sum(apply(params, x).astype(jnp.float32) * cotangent)

  forward = jax.jit(apply)
  backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return (lambda: forward(params, x)), (lambda: backward(params, x))


def cell(d: int, h: int, dp: int, n: int, mask_kind: str, b: int, dtype, repeats: int):
  """Times and agreement of ours and Flax's for one shape and mask."""
  ours = attn.MultiHeadAttention(in_features=d, num_heads=h, head_size=dp, dtype=dtype,
                                 bias_init=nnx.initializers.normal(0.1), rngs=nnx.Rngs(0))
  flax_mha = copy_into_flax(ours, dtype)
  keys = jax.random.split(jax.random.key(1), 2)
  x = jax.random.normal(keys[0], (b, n, d), jnp.float32).astype(dtype)
  cotangent = jax.random.normal(keys[1], (b, n, d), jnp.float32)
  if mask_kind == 'causal':
    ours_mask = masks.SegmentMask(causal=True)
    flax_mask = nnx.make_causal_mask(jnp.ones((b, n)))
  else:
    valid = (jnp.arange(n) < n - n // 4).astype(jnp.int32)[None].repeat(b, 0)
    ours_mask = masks.SegmentMask(valid)
    flax_mask = nnx.make_attention_mask(valid, valid)
  ours_fwd, ours_bwd = programs(ours, x, ours_mask, cotangent)
  flax_fwd, flax_bwd = programs(flax_mha, x, flax_mask, cotangent)
  # Flax's padded query rows average all-masked logits; ours are zero: compare valid rows.
  rows = n if mask_kind == 'causal' else n - n // 4
  gap = float(jnp.max(jnp.abs(ours_fwd()[:, :rows].astype(jnp.float32)
                              - flax_fwd()[:, :rows].astype(jnp.float32))))
  # Forward and forward+backward are timed apart: a forward that runs right after a
  # backward finds the caches and allocator in that program's state.
  times = {**timing.round_robin({'ours_fwd': ours_fwd, 'flax_fwd': flax_fwd}, repeats=repeats),
           **timing.round_robin({'ours_bwd': ours_bwd, 'flax_bwd': flax_bwd}, repeats=repeats)}
  return {k: timing.median(v) for k, v in times.items()}, gap


def main(argv):
  del argv
  f = flags.FLAGS
  d, h, b, repeats = f.emb_dim, f.num_heads, f.batch_size, f.repeats
  seq_lens = [int(n) for n in f.seq_lens]
  head_sizes = f.head_sizes
  if f.quick:  # the two head sizes the paper compares
    d, h, b, repeats, seq_lens, head_sizes = 32, 4, 2, 1, [16], ['baseline', 'n']
  dtype = jnp.dtype(f.dtype)
  tolerance = 1e-4 if dtype == jnp.float32 else 5e-2
  print(timing.header())
  print(f'd = {d}, h = {h}, batch {b}, {dtype.name}; ms, median of {repeats}; ratio = ours / '
        'flax.nnx.MultiHeadAttention\n', flush=True)
  rows = []
  for n in seq_lens:
    for spec in head_sizes:
      dp = head_size(spec, d, h, n)
      for mask_kind in f.masks:
        t, gap = cell(d, h, dp, n, mask_kind, b, dtype, repeats)
        if not gap <= tolerance:
          raise AssertionError(f'ours and Flax disagree by {gap} at n={n}, d_p={dp}, '
                               f'{mask_kind}: not timing different computations.')
        label = f'{dp} ({spec})' if spec in ('baseline', 'n') else str(dp)
        rows.append([n, label, mask_kind, f'{t["ours_fwd"] * 1e3:.2f}',
                     f'{t["flax_fwd"] * 1e3:.2f}', f'{t["ours_fwd"] / t["flax_fwd"]:.2f}',
                     f'{t["ours_bwd"] * 1e3:.2f}', f'{t["flax_bwd"] * 1e3:.2f}',
                     f'{t["ours_bwd"] / t["flax_bwd"]:.2f}', f'{gap:.1e}'])
        print(f'  n={n} d_p={dp} {mask_kind}: fwd {rows[-1][5]}, fwd+bwd {rows[-1][8]}',
              flush=True)
  print()
  print(figures.markdown(['n', 'd_p', 'mask', 'fwd ours', 'fwd flax', 'fwd ratio',
                          'fwd+bwd ours', 'fwd+bwd flax', 'fwd+bwd ratio', 'max |diff|'], rows))
  ratios = [float(r[5]) for r in rows] + [float(r[8]) for r in rows]
  print(f'\nratio ours / flax: median {np.median(ratios):.2f}, worst {max(ratios):.2f}')


if __name__ == '__main__':
  app.run(main)
