"""siamese_jax.losses.contrastive: the NumPy reference, finite gradients at zero distance, masks,
vmap; each check that takes ``variant`` (conftest) runs under jax.jit and eagerly."""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from siamese_jax import distances
from siamese_jax.losses import base, contrastive
from tests.helpers import all_finite


def numpy_contrastive(d, same, margin):
  return same * d ** 2 + (1 - same) * np.maximum(margin - d, 0) ** 2


@given(d=hnp.arrays(np.float32, (6,), elements=st.floats(0, 5, width=32)),
       same=hnp.arrays(np.float32, (6,), elements=st.sampled_from([0.0, 1.0])),
       margin=st.floats(0.1, 5.0))
def test_contrastive_matches_numpy(d, same, margin, variant):
  got = variant(contrastive.batch_contrastive_loss)(d, same, margin)
  np.testing.assert_allclose(got, numpy_contrastive(d, same, margin).mean(), rtol=1e-5, atol=1e-6)


def test_contrastive_default_margin_is_one():
  assert float(contrastive.contrastive_loss(jnp.float32(0.25), jnp.float32(0.0))) == \
      pytest.approx(0.5625)


DISTANCES = {"euclidean": distances.batch_euclidean, "cosine": distances.batch_cosine,
             "l1": distances.batch_l1}


@functools.cache
def jitted_grad(distance):
  """One function object per distance, so jax.jit compiles it once per shape and dtype."""
  loss = lambda ea, eb, same, m: contrastive.batch_contrastive_loss(DISTANCES[distance](ea, eb),
                                                                    same, m)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


# Gradients run jitted only, as training runs them; eager and jitted values are both checked
# against NumPy above.
@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@given(shape=st.sampled_from([(1, 1), (5, 8)]), margin=st.floats(0.01, 10.0),
       seed=st.integers(0, 2 ** 16))
def test_gradient_finite_for_identical_inputs(distance, dtype, shape, margin, seed):
  key_e, key_s = jax.random.split(jax.random.key(seed))
  embeddings = jax.random.normal(key_e, shape, dtype)
  same = jax.random.bernoulli(key_s, 0.5, shape[:1]).astype(dtype)
  grads = jitted_grad(distance)(embeddings, embeddings, same, jnp.asarray(margin, dtype))
  assert all_finite(grads), distance


def test_mask_drops_padding_even_when_it_is_nan(variant):
  d = jnp.asarray([0.5, jnp.nan, 0.2])
  same = jnp.asarray([1.0, 1.0, 0.0])
  mask = jnp.asarray([1, 0, 1])
  got = variant(contrastive.batch_contrastive_loss)(d, same, 1.0, mask)
  assert float(got) == pytest.approx((0.25 + 0.64) / 2)
  assert float(variant(base.masked_mean)(jnp.ones(3), jnp.zeros(3))) == 0.0


def test_vmapped_equals_per_pair_loop(variant):
  d = jax.random.uniform(jax.random.key(3), (9,)) * 2
  same = (jnp.arange(9) % 2).astype(jnp.float32)
  loop = np.mean([contrastive.contrastive_loss(d[i], same[i], 1.0) for i in range(9)])
  np.testing.assert_allclose(variant(contrastive.batch_contrastive_loss)(d, same), loop,
                             rtol=1e-6)
