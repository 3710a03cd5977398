"""siamese_jax.losses.cosine_softmax (CosFace) against NumPy, under jax.jit and eagerly
(``variant``); a margin of 0 is NormFace."""

import hypothesis.extra.numpy as hnp
import jax.numpy as jnp
import numpy as np
import scipy.special
from hypothesis import given, strategies as st

from siamese_jax.losses import cosine_softmax, cross_entropy


def numpy_cosface(cosines, labels, scale, margin):
  logits = scale * (cosines.astype(np.float64) - margin * np.eye(cosines.shape[1])[labels])
  return -scipy.special.log_softmax(logits, axis=1)[np.arange(len(labels)), labels]


@given(cosines=hnp.arrays(np.float32, (4, 5), elements=st.floats(-1, 1, width=32)),
       labels=hnp.arrays(np.int32, (4,), elements=st.integers(0, 4)),
       scale=st.floats(1.0, 64.0), margin=st.floats(0.0, 0.5))
def test_cosine_margin_softmax_matches_numpy(cosines, labels, scale, margin, variant):
  got = variant(cosine_softmax.batch_cosine_margin_softmax_loss)(cosines, labels, scale, margin)
  want = numpy_cosface(cosines, labels, scale, margin).mean()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_cosine_margin_softmax_margin_raises_the_loss_and_zero_is_normface():
  cosines = jnp.array([[0.9, 0.1, -0.3], [0.2, 0.4, 0.0]])
  labels = jnp.array([0, 1])
  normface = cosine_softmax.batch_cosine_margin_softmax_loss(cosines, labels, 10.0, 0.0)
  np.testing.assert_allclose(
      normface, cross_entropy.batch_softmax_cross_entropy_loss(10 * cosines, labels), rtol=1e-6)
  assert float(cosine_softmax.batch_cosine_margin_softmax_loss(cosines, labels, 10.0, 0.2)) > \
      float(normface)
