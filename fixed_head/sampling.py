"""Sampling from the decoder-only LM (``fixed_head.nn.TransformerLM``), without a KV cache.

  tokens = sample(model, prompt, num_tokens)                               # greedy
  tokens = sample(model, prompt, num_tokens, temperature=0.8, rng=key)     # sampled

prompt: int [b, p] (p >= 1); returns int32 [b, p + num_tokens], the prompt unchanged in
its first p columns. The tokens live in a fixed [b, n] buffer (n = ``model.config.max_len``)
and every step runs the full causal forward pass over it, inside one jitted
``jax.lax.fori_loop``: one compilation per (model structure, b, greedy or not), whatever p,
num_tokens or the temperature. Causality makes the unused tail of the buffer harmless:
logits[:, i - 1] see only tokens 0 .. i - 1. The cost is n forward positions a token,
which is fine for the short sequences of this repository.

Key schedule (what makes a sample reproducible): the token at position i (0-based, over
the whole row, so p <= i < p + num_tokens) of every row is drawn at once with

  jax.random.categorical(jax.random.fold_in(rng, i), logits[:, i - 1] / temperature)

so the same key gives the same tokens, and position i's draw does not depend on p.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fixed_head.nn.transformer import TransformerLM

__all__ = ['sample']


def _check_rng(rng: Any) -> None:
  """A jax PRNG key: a typed key (jax.random.key) or a raw uint32[2] (jax.random.PRNGKey)."""
  typed = (isinstance(rng, jax.Array) and jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
           and rng.shape == ())
  raw = isinstance(rng, jax.Array) and rng.dtype == jnp.uint32 and rng.shape == (2,)
  if not (typed or raw):
    raise ValueError(f'rng={rng!r}: must be one jax PRNG key, e.g. rng=jax.random.key(0).')


def _check_args(model: Any, prompt: Any, num_tokens: Any, temperature: Any,
                rng: Any) -> np.ndarray:
  """Raises ValueError naming the argument at fault; returns the prompt as numpy [b, p]."""
  if not isinstance(model, TransformerLM):
    raise ValueError(f'model: sample() needs a fixed_head.nn.TransformerLM (the decoder-only '
                     f'LM), got {type(model).__name__}.')
  prompt = np.asarray(prompt)
  if prompt.ndim != 2 or prompt.shape[0] < 1 or prompt.shape[1] < 1:
    raise ValueError(f'prompt: must be int [b, p] with b, p >= 1, got shape {prompt.shape}; '
                     'give one token at least (e.g. a begin-of-sequence id).')
  if not np.issubdtype(prompt.dtype, np.integer):
    raise ValueError(f'prompt: must hold integer token ids, got dtype {prompt.dtype}.')
  vocab = model.config.vocab_size
  if prompt.min() < 0 or prompt.max() >= vocab:
    raise ValueError(f'prompt: token ids must lie in [0, {vocab}) (model.vocab_size), got '
                     f'ids from {prompt.min()} to {prompt.max()}.')
  if (isinstance(num_tokens, bool) or not isinstance(num_tokens, numbers.Integral)
      or num_tokens < 0):
    raise ValueError(f'num_tokens={num_tokens!r}: must be an integer >= 0.')
  p, max_len = prompt.shape[1], model.config.max_len
  if p + num_tokens > max_len:
    raise ValueError(f'prompt length p={p} + num_tokens={num_tokens} = {p + num_tokens} '
                     f'exceeds model.config.max_len={max_len}; ask for at most '
                     f'{max_len - p} tokens.')
  if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
      or not math.isfinite(temperature) or temperature < 0):
    raise ValueError(f'temperature={temperature!r}: must be a finite number >= 0 '
                     '(0 = greedy argmax).')
  if temperature > 0:
    if rng is None:
      raise ValueError(f'rng=None: temperature={temperature} samples, which needs a key; '
                       'pass rng=jax.random.key(seed), or temperature=0 for greedy.')
    _check_rng(rng)
  elif rng is not None:
    raise ValueError('rng: temperature=0 is greedy and draws nothing; pass temperature > 0 '
                     'to sample with this key, or leave rng=None.')
  return prompt


@functools.partial(jax.jit, static_argnames=('graphdef', 'greedy'))
def _generate(graphdef, state, buffer, start, stop, temperature, rng, *, greedy):
  """Fills buffer[:, start:stop] ([b, n] int32) one position at a time."""
  model = nnx.merge(graphdef, state)

  def step(i, buffer):
    logits = model(buffer)[:, i - 1]  # [b, V]: the prediction of token i
    if greedy:
      token = jnp.argmax(logits, axis=-1)
    else:
      token = jax.random.categorical(jax.random.fold_in(rng, i), logits / temperature, axis=-1)
    return jax.lax.dynamic_update_slice_in_dim(
        buffer, token[:, None].astype(buffer.dtype), i, axis=1)

  return jax.lax.fori_loop(start, stop, step, buffer)


def sample(model: TransformerLM, prompt: Any, num_tokens: int, *, temperature: float = 0.0,
           rng: jax.Array | None = None) -> jax.Array:
  """Continues each row of ``prompt`` (int [b, p], p >= 1) by ``num_tokens`` tokens.

  temperature 0: greedy, the argmax of the logits (``rng`` must be None). temperature > 0:
  each token drawn from softmax(logits / temperature) with the key schedule of the module
  docstring (``rng`` required). Needs p + num_tokens <= model.config.max_len. Returns
  int32 [b, p + num_tokens] whose first p columns are the prompt. Runs the model in
  inference mode (no dropout). Call it outside jit: it checks its arguments in Python.
  """
  prompt = _check_args(model, prompt, num_tokens, temperature, rng)
  b, p = prompt.shape
  stop = p + num_tokens
  buffer = jnp.zeros((b, model.config.max_len), jnp.int32).at[:, :p].set(prompt)
  graphdef, state = nnx.split(model)
  greedy = temperature == 0
  out = _generate(graphdef, state, buffer, jnp.int32(p), jnp.int32(stop),
                  jnp.float32(1.0 if greedy else temperature),
                  jax.random.key(0) if greedy else rng, greedy=greedy)
  return out[:, :stop]
