"""siamese_jax.losses.triplet: the hinge against NumPy and optax, the mined losses against a
brute-force NumPy reference, finite gradients when embeddings coincide; each check that takes
``variant`` (conftest) runs under jax.jit and eagerly."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, strategies as st

from siamese_jax import distances
from siamese_jax.losses import triplet
from tests.helpers import all_finite

DTYPES = [jnp.float32, jnp.bfloat16]
MINED = sorted(triplet.MINING)


@given(t=st.sampled_from([1, 8]).flatmap(lambda d: hnp.arrays(
    np.float32, (3, 4, d), elements=st.floats(-3, 3, width=32))), margin=st.floats(0.1, 3.0))
def test_triplet_matches_numpy_and_optax(t, margin, variant):
  a, p, n = t
  got = variant(triplet.batch_triplet_margin_loss)(a, p, n, margin)
  dp = np.linalg.norm(a.astype(np.float64) - p, axis=-1)
  dn = np.linalg.norm(a.astype(np.float64) - n, axis=-1)
  np.testing.assert_allclose(got, np.maximum(dp - dn + margin, 0).mean(), rtol=1e-5, atol=1e-5)
  # optax's version adds eps=1e-6 under the root: same to within sqrt(eps) per distance.
  from_optax = optax.losses.triplet_margin_loss(a, p, n, margin=margin).mean()
  np.testing.assert_allclose(got, from_optax, atol=2.1e-3)


# Gradients run jitted only, as training runs them (one function object: one compile per shape).
HINGE_GRAD = jax.jit(jax.grad(lambda ea, eb, m: triplet.batch_triplet_margin_loss(ea, eb, ea, m),
                              argnums=(0, 1)))


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=st.sampled_from([(1, 1), (5, 8)]), margin=st.floats(0.01, 10.0),
       seed=st.integers(0, 2 ** 16))
def test_hinge_gradient_finite_for_identical_inputs(dtype, shape, margin, seed):
  embeddings = jax.random.normal(jax.random.key(seed), shape, dtype)
  assert all_finite(HINGE_GRAD(embeddings, embeddings, jnp.asarray(margin, dtype)))


def numpy_mined_loss(kind, emb, labels, real, margin):
  # Distances come from the library (checked against NumPy in test_distances); in float64 a
  # 1e-27 offset would order differently from float32, where it underflows to a tie.
  dist = np.asarray(distances.pairwise_euclidean(emb, emb), np.float64)
  n = len(labels)
  hinges = []
  for i in range(n):
    pos = [j for j in range(n) if j != i and labels[j] == labels[i] and real[i] and real[j]]
    neg = [k for k in range(n) if labels[k] != labels[i] and real[i] and real[k]]
    if not (pos and neg):
      continue
    if kind == "batch_hard":
      hinges.append(max(dist[i, max(pos, key=lambda j: dist[i, j])]
                        - dist[i, min(neg, key=lambda k: dist[i, k])] + margin, 0))
    for j in pos:
      if kind == "batch_all":
        hinges += [max(dist[i, j] - dist[i, k] + margin, 0) for k in neg]
      elif kind == "semi_hard":
        farther = [dist[i, k] for k in neg if dist[i, k] > dist[i, j]]
        dn = min(farther) if farther else max(dist[i, k] for k in neg)
        hinges.append(max(dist[i, j] - dn + margin, 0))
  hinges = np.asarray(hinges)
  if kind == "batch_all":
    active = hinges[hinges > 0]
    return active.mean() if active.size else 0.0
  return hinges.mean() if hinges.size else 0.0


@pytest.mark.parametrize("kind", MINED)
@given(batch=st.tuples(  # one shape (one compile); the mask makes the smaller batches
    hnp.arrays(np.float32, (10, 3), elements=st.floats(-2, 2, width=32)),
    hnp.arrays(np.int32, (10,), elements=st.integers(0, 2)),
    hnp.arrays(np.bool_, (10,), elements=st.booleans())), margin=st.floats(0.1, 2.0))
def test_mined_losses_match_numpy(kind, batch, margin, variant):
  emb, labels, real = batch
  loss, _ = variant(triplet.MINING[kind])(emb, labels, margin, mask=real)
  want = numpy_mined_loss(kind, emb, labels, real, margin)
  np.testing.assert_allclose(loss, want, rtol=1e-3, atol=2e-3)


@functools.cache
def jitted_mined_loss_grad(kind, distance):
  fn = triplet.MINING[kind]
  return jax.jit(jax.grad(lambda e, labels, margin, mask: fn(e, labels, margin, distance,
                                                             mask=mask)[0]))


@pytest.mark.parametrize("kind", MINED)
@pytest.mark.parametrize("distance", sorted(distances.PAIR_DISTANCES))
@pytest.mark.parametrize("dtype", DTYPES)
@given(real=st.sampled_from([2, 8]), labels_seed=st.integers(0, 1000),
       margin=st.floats(0.01, 10.0), scale=st.sampled_from([0.0, 1.0, 1e3]))
def test_mined_loss_gradient_finite_when_embeddings_coincide(kind, distance, dtype, real,
                                                             labels_seed, margin, scale):
  labels = jax.random.randint(jax.random.key(labels_seed), (8,), 0, 3)
  collapsed = jnp.full((8, 4), scale, dtype)  # every pairwise distance is exactly 0
  mask = jnp.arange(8) < real  # a batch of 2 as padding of one shape: one compile per case
  grad = jitted_mined_loss_grad(kind, distance)(collapsed, labels, jnp.asarray(margin, dtype),
                                                mask)
  assert all_finite(grad)
