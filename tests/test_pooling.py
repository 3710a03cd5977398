"""siamese_jax.pooling's max pools give nn.max_pool's values and, on tie-free input, its
gradients (every window's gradient to its maximum)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from siamese_jax import pooling


def _values_and_gradients(pool, x):
  weights = jax.random.normal(jax.random.key(1), pool(x).shape)
  return pool(x), jax.grad(lambda x: jnp.sum(jnp.sin(pool(x)) * weights))(x)


@pytest.mark.parametrize("shape", [(2, 28, 28, 3), (3, 7, 5, 4), (1, 3, 3, 1)])
def test_max_pool_2x2_equals_flax(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = _values_and_gradients(pooling.max_pool_2x2, x)
  flax = _values_and_gradients(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)
  np.testing.assert_array_equal(ours[0], flax[0])
  np.testing.assert_allclose(ours[1], flax[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 9, 6, 2), (2, 5, 5, 1)])
@pytest.mark.parametrize("window, stride, padding", [
    (3, 2, "SAME"), (3, 2, ((1, 1), (1, 1))), (3, 2, "VALID"), (2, 2, "VALID"), (3, 1, "SAME")])
def test_max_pool_equals_flax(shape, window, stride, padding):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = _values_and_gradients(lambda x: pooling.max_pool(x, window, stride, padding), x)
  flax = _values_and_gradients(
      lambda x: nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding), x)
  np.testing.assert_array_equal(ours[0], flax[0])
  np.testing.assert_allclose(ours[1], flax[1], rtol=1e-6, atol=1e-6)


def test_a_window_of_ties_shares_its_gradient():
  """All four equal: the 2 x 2 pool's gradient is split (nn.max_pool gives it to one), and the
  window's total is still the output's gradient."""
  grad = jax.grad(lambda x: jnp.sum(pooling.max_pool_2x2(x)))(jnp.ones((1, 2, 2, 1)))
  np.testing.assert_allclose(grad.ravel(), [0.25] * 4)
