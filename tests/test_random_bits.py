"""siamese_jax.random_bits: the unrolled key draws exactly jax.random's threefry bits (so dropout
masks, and runs, are unchanged), splits and folds as threefry does, under jit and without."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from siamese_jax import random_bits

KEY = jax.random.key(7)


@pytest.mark.parametrize("shape", [(), (5,), (2, 256, 128), (3, 7, 1)])
@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.uint16, jnp.uint32])
def test_bits_are_threefrys(variant, shape, dtype):
  draw = variant(lambda key: jax.random.bits(key, shape, dtype))
  np.testing.assert_array_equal(draw(random_bits.unrolled(KEY)), draw(KEY))


def test_split_fold_in_and_uniform_follow_threefry(variant):
  def draws(key):
    a, b = jax.random.split(jax.random.fold_in(key, 3))
    return (jax.random.uniform(a, (64,)), jax.random.bernoulli(b, 0.9, (4, 33)),
            jax.random.normal(jax.random.fold_in(b, 1), (8,)))
  for got, want in zip(variant(draws)(random_bits.unrolled(KEY)), variant(draws)(KEY)):
    np.testing.assert_array_equal(got, want)


def test_flax_dropout_masks_unchanged():
  layer = nn.Dropout(0.1, deterministic=False)
  x = jnp.ones((2, 256, 128))
  apply = jax.jit(lambda key: layer.apply({}, x, rngs={"dropout": key}))
  np.testing.assert_array_equal(apply(random_bits.unrolled(KEY)), apply(KEY))
  assert 0 < float(jnp.mean(apply(KEY) == 0)) < 0.2
