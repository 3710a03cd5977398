"""siamese_jax.losses.bce: the NumPy reference, stability at extreme logits, finite gradients at
zero distance, vmap; each check that takes ``variant`` (conftest) runs under jax.jit and eagerly."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from hypothesis import given, strategies as st

from siamese_jax import distances
from siamese_jax.losses import bce
from tests.helpers import all_finite

DTYPES = [jnp.float32, jnp.bfloat16]


@given(logit=hnp.arrays(np.float32, (5,), elements=st.floats(-30, 30, width=32)),
       same=hnp.arrays(np.float32, (5,), elements=st.sampled_from([0.0, 1.0])))
def test_pair_bce_matches_numpy(logit, same, variant):
  x = logit.astype(np.float64)
  want = np.mean(np.maximum(x, 0) - x * same + np.log1p(np.exp(-np.abs(x))))
  got = variant(bce.batch_pair_bce_loss)(logit, same)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


PAIR_BCE_VALUE_AND_GRAD = jax.value_and_grad(bce.pair_bce_loss)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("logit", [1e4, -1e4, 88.0, -88.0, 0.0])
@pytest.mark.parametrize("same", [0.0, 1.0])
def test_pair_bce_stable_for_extreme_logits(dtype, logit, same, variant):
  x = jnp.asarray(logit, dtype)
  value, grad = variant(PAIR_BCE_VALUE_AND_GRAD)(x, jnp.asarray(same, dtype))
  assert all_finite((value, grad))
  want = max(logit, 0) - logit * same + np.log1p(np.exp(-abs(logit)))
  assert float(value) == pytest.approx(want, rel=1e-2, abs=1e-2)
  assert float(grad) == pytest.approx(scipy.special.expit(logit) - same, abs=1e-2)


# Jitted only, as training runs it (one function object: one compile per shape and dtype).
L1_LOGIT_GRAD = jax.jit(jax.grad(lambda ea, eb, same, m: bce.batch_pair_bce_loss(
    m - distances.batch_l1(ea, eb), same), argnums=(0, 1)))


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=st.sampled_from([(1, 1), (5, 8)]), margin=st.floats(0.01, 10.0),
       seed=st.integers(0, 2 ** 16))
def test_gradient_finite_for_identical_inputs(dtype, shape, margin, seed):
  key_e, key_s = jax.random.split(jax.random.key(seed))
  embeddings = jax.random.normal(key_e, shape, dtype)
  same = jax.random.bernoulli(key_s, 0.5, shape[:1]).astype(dtype)
  assert all_finite(L1_LOGIT_GRAD(embeddings, embeddings, same, jnp.asarray(margin, dtype)))


def test_vmapped_equals_per_pair_loop(variant):
  logits = jax.random.normal(jax.random.key(3), (9,)) * 10
  same = (jnp.arange(9) % 2).astype(jnp.float32)
  loop = np.mean([bce.pair_bce_loss(logits[i], same[i]) for i in range(9)])
  np.testing.assert_allclose(variant(bce.batch_pair_bce_loss)(logits, same), loop, rtol=1e-5)
