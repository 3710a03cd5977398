"""Distances: NumPy reference values, safety at zero distance, vmap/pairwise agreement; each
check that takes ``variant`` (conftest) runs under jax.jit and eagerly."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
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


# Two shapes per strategy: each new shape compiles again (under jit, and op by op eagerly).
vectors = st.sampled_from([1, 16]).flatmap(lambda d: st.tuples(
    hnp.arrays(np.float32, (3, d), elements=st.floats(-10, 10, width=32)),
    hnp.arrays(np.float32, (3, d), elements=st.floats(-10, 10, width=32))))


@pytest.mark.parametrize("name", NAMES)
@given(pair=vectors)
def test_matches_numpy_reference(name, pair, variant):
  a, b = pair
  if name == "cosine":  # cosine is undefined for (near-)zero vectors
    a, b = a + np.float32(20.0), b - np.float32(20.0)
  got = variant(distances.get_batch_distance(name))(a, b)
  want = numpy_distance(name, a, b)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4)


@functools.cache
def pair_distance_grad(name, argnums):
  """One function object per (name, argnums), so jax.jit compiles it once per shape."""
  return jax.grad(distances.get_pair_distance(name), argnums=argnums)


@functools.cache
def batch_distance_grads(name):
  """First and second derivative of sum(batch distance to a fixed b) with respect to a."""
  batch_fn = distances.get_batch_distance(name)
  first = jax.grad(lambda a, b: jnp.sum(batch_fn(a, b)))
  second = jax.grad(lambda a, b: jnp.sum(first(a, b)))
  return first, second


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@given(x=st.sampled_from([1, 8]).flatmap(
    lambda d: hnp.arrays(np.float32, (d,), elements=st.floats(-100, 100, width=32))))
def test_zero_distance_value_and_gradient(name, dtype, x, variant):
  a = jnp.asarray(x, dtype)
  value = variant(distances.get_pair_distance(name))(a, a)
  tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
  tiny = np.sum(np.square(x, dtype=np.float64)) < 1e-6
  if not (name == "cosine" and tiny):  # optax: a (near-)zero vector has distance 1 to all
    assert abs(float(value)) <= tolerance
  if name in ("euclidean", "squared_euclidean", "l1"):
    assert float(value) == 0.0
  for argnums in (0, 1):
    grad = variant(pair_distance_grad(name, argnums))(a, a)
    assert grad.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32)))), (name, grad)
    if name in ("euclidean", "squared_euclidean"):
      np.testing.assert_array_equal(grad, 0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_distance_through_vmap_and_second_order(name, dtype, variant):
  a = jnp.zeros((4, 3), dtype).at[1].set(1.0)
  first, second = batch_distance_grads(name)
  assert bool(jnp.all(jnp.isfinite(variant(first)(a, a).astype(jnp.float32))))
  assert bool(jnp.all(jnp.isfinite(variant(second)(a, a).astype(jnp.float32))))


def test_safe_sqrt_is_zero_with_zero_gradient_at_and_below_zero(variant):
  x = jnp.asarray([-1.0, 0.0, 4.0])
  np.testing.assert_array_equal(variant(distances.safe_sqrt)(x), [0.0, 0.0, 2.0])
  grad = variant(jax.grad(lambda v: jnp.sum(distances.safe_sqrt(v))))(x)
  np.testing.assert_array_equal(grad, [0.0, 0.0, 0.25])


@pytest.mark.parametrize("name", NAMES)
def test_vmap_equals_loop(name, variant):
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (7, 5))
  b = jax.random.normal(key_b, (7, 5))
  batch = variant(distances.get_batch_distance(name))
  loop = jnp.stack([distances.get_pair_distance(name)(a[i], b[i]) for i in range(7)])
  np.testing.assert_allclose(batch(a, b), loop, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.sampled_from([(1, 1, 1), (6, 4, 8)]).flatmap(
    lambda s: st.tuples(hnp.arrays(np.float32, (s[0], s[2]), elements=st.floats(-5, 5, width=32)),
                        hnp.arrays(np.float32, (s[1], s[2]), elements=st.floats(-5, 5, width=32)))))
def test_pairwise_matrix_matches_per_pair(name, data, variant):
  x, y = data
  if name == "cosine":
    x, y = x + np.float32(10.0), y + np.float32(10.0)
  matrix = variant(distances.get_pairwise_distance(name))(x, y)
  assert matrix.shape == (x.shape[0], y.shape[0])
  want = numpy_distance(name, x[:, None, :], y[None, :, :])
  # sqrt amplifies the matmul form's rounding, and its zeroed band (distances.py), near 0.
  atol = 2e-3 if name == "euclidean" else 2e-4
  np.testing.assert_allclose(matrix, want, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("name", ["euclidean", "squared_euclidean"])
@given(rows=hnp.arrays(np.float32, (5, 16), elements=st.floats(-1e3, 1e3, width=32)),
       scale=st.sampled_from([1e-3, 1.0, 1e2]))
def test_pairwise_identical_rows_are_exactly_zero(name, rows, scale, variant):
  x = rows * np.float32(scale)
  y = np.concatenate([x[::-1], x[:2] + np.float32(1.0)])  # every row of x is somewhere in y
  matrix = np.asarray(variant(distances.get_pairwise_distance(name))(x, y))
  same = np.all(x[:, None, :] == y[None, :, :], axis=-1)
  assert np.all(matrix[same] == 0.0), matrix[same]
  assert np.all(matrix >= 0.0)


@pytest.mark.parametrize("name", ["euclidean", "squared_euclidean"])
@pytest.mark.parametrize("dim,scale,offset", [(2, 1.0, 0.0), (64, 1.0, 0.0), (128, 10.0, 0.0),
                                              (128, 1.0, 5.0), (512, 0.01, 0.0)])
def test_pairwise_matches_float64_reference(name, dim, scale, offset, variant):
  rng = np.random.default_rng(dim)
  x = (rng.normal(size=(64, dim)) * scale + offset).astype(np.float32)
  y = np.concatenate([(rng.normal(size=(32, dim)) * scale + offset).astype(np.float32), x[:8]])
  got = np.asarray(variant(distances.get_pairwise_distance(name))(x, y), np.float64)
  want = numpy_distance(name, x[:, None, :], y[None, :, :])
  # The error bound that distances.pairwise_squared_euclidean documents (and its square root
  # for the distance itself: |sqrt(a) - sqrt(b)| <= sqrt(|a - b|)).
  norms = np.sum(np.square(x, dtype=np.float64), -1)[:, None] + np.sum(
      np.square(y, dtype=np.float64), -1)[None, :]
  bound = (dim + 2) * np.finfo(np.float32).eps * norms
  error = np.abs(got - want)
  assert np.all(error <= (bound if name == "squared_euclidean" else np.sqrt(bound)))
  far = want > 0.1 * np.sqrt(norms)  # pairs well away from 0: close to float32 precision
  np.testing.assert_allclose(got[far], want[far], rtol=1e-4)
  np.testing.assert_array_equal(np.diagonal(got[:8, 32:]), 0.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_gradient_finite_with_duplicate_rows(name, dtype, variant):
  x = jnp.asarray([[1.0, 2.0], [1.0, 2.0], [0.5, 0.5], [3.0, -1.0]], dtype)
  fn = distances.get_pairwise_distance(name)
  diagonal = jnp.diagonal(variant(fn)(x, x)).astype(jnp.float32)
  if name == "cosine":  # 1 - cos cancels to a few ulps
    assert bool(jnp.all(diagonal <= 1e-6))
  else:
    np.testing.assert_array_equal(diagonal, 0.0)
  grad = variant(pairwise_sum_grad(name))(x)
  assert bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32))))


@functools.cache
def pairwise_sum_grad(name):
  fn = distances.get_pairwise_distance(name)
  return jax.grad(lambda p: jnp.sum(fn(p, p)))


def test_cosine_of_parallel_opposite_and_zero_vectors(variant):
  a = jnp.asarray([0.3, -1.2, 2.0])
  cosine = variant(distances.cosine)
  assert float(cosine(a, 2 * a)) == pytest.approx(0.0, abs=1e-6)
  assert float(cosine(a, -a)) == pytest.approx(2.0, abs=1e-6)
  assert float(cosine(jnp.zeros(3), a)) == pytest.approx(1.0)  # optax's convention
  zero_grad = variant(jax.grad(distances.cosine))(jnp.zeros(3), a)
  assert bool(jnp.all(jnp.isfinite(zero_grad)))


def test_unknown_distance_name_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown distance 'manhattan'.*euclidean"):
    distances.get_batch_distance("manhattan")
