"""Distances: NumPy reference values, safety at zero distance, vmap/jit/pairwise agreement."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, strategies as st

from siamese_jax import distances

NAMES = sorted(distances.PAIR_DISTANCES)
DTYPES = [jnp.float32, jnp.bfloat16]


def numpy_distance(name, a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if name == "euclidean":
    return np.sqrt(np.sum((a - b) ** 2, -1))
  if name == "squared_euclidean":
    return np.sum((a - b) ** 2, -1)
  if name == "l1":
    return np.sum(np.abs(a - b), -1)
  norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
  return 1.0 - np.sum(a * b, -1) / norm


vectors = st.integers(1, 16).flatmap(lambda d: st.tuples(
    hnp.arrays(np.float32, (3, d), elements=st.floats(-10, 10, width=32)),
    hnp.arrays(np.float32, (3, d), elements=st.floats(-10, 10, width=32))))


@pytest.mark.parametrize("name", NAMES)
@given(pair=vectors)
def test_matches_numpy_reference(name, pair):
  a, b = pair
  if name == "cosine":  # cosine is undefined for (near-)zero vectors
    a, b = a + np.float32(20.0), b - np.float32(20.0)
  got = distances.get_batch_distance(name)(a, b)
  want = numpy_distance(name, a, b)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@given(x=st.integers(1, 8).flatmap(
    lambda d: hnp.arrays(np.float32, (d,), elements=st.floats(-100, 100, width=32))))
def test_zero_distance_value_and_gradient(name, dtype, x):
  a = jnp.asarray(x, dtype)
  fn = distances.get_pair_distance(name)
  value = jax.jit(fn)(a, a)
  tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
  tiny = np.sum(np.square(x, dtype=np.float64)) < 1e-6
  if not (name == "cosine" and tiny):  # optax: a (near-)zero vector has distance 1 to all
    assert abs(float(value)) <= tolerance
  for argnums in (0, 1):
    grad = jax.jit(jax.grad(fn, argnums=argnums))(a, a)
    assert grad.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32)))), (name, grad)
  if name in ("euclidean", "squared_euclidean"):
    np.testing.assert_array_equal(jax.grad(fn)(a, a), 0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_distance_through_vmap_and_second_order(name, dtype):
  a = jnp.zeros((4, 3), dtype).at[1].set(1.0)
  batch_fn = distances.get_batch_distance(name)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(batch_fn(p, a))))(a)
  assert bool(jnp.all(jnp.isfinite(grads.astype(jnp.float32))))
  hessian_diag = jax.grad(lambda p: jnp.sum(jax.grad(lambda q: jnp.sum(batch_fn(q, a)))(p)))(a)
  assert bool(jnp.all(jnp.isfinite(hessian_diag.astype(jnp.float32))))


def test_naive_sqrt_is_nan_at_zero_and_safe_sqrt_is_not():
  naive = jax.grad(lambda a, b: jnp.sqrt(jnp.sum((a - b) ** 2)))
  a = jnp.ones(3)
  assert bool(jnp.all(jnp.isnan(naive(a, a))))  # the failure the safe version exists to avoid
  np.testing.assert_array_equal(jax.grad(distances.euclidean)(a, a), 0.0)
  np.testing.assert_array_equal(jax.grad(distances.safe_sqrt)(0.0), 0.0)


def test_eps_in_sqrt_biases_the_distance():
  a = jnp.zeros(2)
  biased = jnp.sqrt(jnp.sum((a - a) ** 2) + 1e-6)
  assert float(biased) == pytest.approx(1e-3, rel=1e-3)
  assert float(distances.euclidean(a, a)) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_vmap_equals_loop_and_jit_equals_eager(name):
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (7, 5))
  b = jax.random.normal(key_b, (7, 5))
  batch = distances.get_batch_distance(name)
  loop = jnp.stack([distances.get_pair_distance(name)(a[i], b[i]) for i in range(7)])
  np.testing.assert_allclose(batch(a, b), loop, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.jit(batch)(a, b), batch(a, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 8)).flatmap(
    lambda s: st.tuples(hnp.arrays(np.float32, (s[0], s[2]), elements=st.floats(-5, 5, width=32)),
                        hnp.arrays(np.float32, (s[1], s[2]), elements=st.floats(-5, 5, width=32)))))
def test_pairwise_matrix_matches_per_pair(name, data):
  x, y = data
  if name == "cosine":
    x, y = x + np.float32(10.0), y + np.float32(10.0)
  matrix = distances.get_pairwise_distance(name)(x, y)
  assert matrix.shape == (x.shape[0], y.shape[0])
  want = numpy_distance(name, x[:, None, :], y[None, :, :])
  atol = 2e-3 if name == "euclidean" else 2e-4  # sqrt amplifies the matmul form's rounding near 0
  np.testing.assert_allclose(matrix, want, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_gradient_finite_with_duplicate_rows(name, dtype):
  x = jnp.asarray([[1.0, 2.0], [1.0, 2.0], [0.5, 0.5], [3.0, -1.0]], dtype)
  fn = distances.get_pairwise_distance(name)
  assert bool(jnp.all(jnp.diagonal(fn(x, x)).astype(jnp.float32) <= 1e-2))
  grad = jax.jit(jax.grad(lambda p: jnp.sum(fn(p, p))))(x)
  assert bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32))))


def test_cosine_builds_on_optax_and_optax_is_safe_at_identical_inputs():
  a = jnp.asarray([0.3, -1.2, 2.0])
  assert float(distances.cosine(a, 2 * a)) == pytest.approx(0.0, abs=1e-6)
  assert float(distances.cosine(a, -a)) == pytest.approx(2.0, abs=1e-6)
  grad = jax.grad(lambda p: optax.losses.cosine_distance(p, a, epsilon=1e-12))(a)
  assert bool(jnp.all(jnp.isfinite(grad)))
  zero_grad = jax.grad(lambda p: distances.cosine(p, a))(jnp.zeros(3))
  assert bool(jnp.all(jnp.isfinite(zero_grad)))


def test_unknown_distance_name_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown distance 'manhattan'.*euclidean"):
    distances.get_batch_distance("manhattan")
