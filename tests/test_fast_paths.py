"""The step's fast paths keep results exact: accuracy without argmax."""

import jax
import jax.numpy as jnp
import numpy as np

from fixed_head.tasks import losses


def test_is_argmax_equals_argmax_including_ties():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 50)).astype(np.float32)
  logits[:8] = 0.0  # all tied: only label 0 is the argmax
  logits[8:16, 3] = logits[8:16, 7] = 9.0  # a tie for the max between 3 and 7: 3 wins
  labels = rng.integers(0, 50, 64)
  labels[:4] = 0
  labels[8:12], labels[12:16] = 3, 7
  labels[16:32] = np.argmax(logits[16:32], -1)  # right by construction
  got = np.asarray(losses.is_argmax(jnp.asarray(logits), jnp.asarray(labels)))
  np.testing.assert_array_equal(got, np.argmax(logits, -1) == labels)
  assert got[:4].all() and not got[4:8].any() and got[8:12].all() and not got[12:16].any()
  assert got[16:32].all()


def test_is_argmax_keeps_leading_axes():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 11))
  labels = jnp.argmax(logits, -1).at[0, 0].set(0)
  np.testing.assert_array_equal(losses.is_argmax(logits, labels),
                                jnp.argmax(logits, -1) == labels)
