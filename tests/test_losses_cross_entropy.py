"""siamese_jax.losses.cross_entropy against NumPy, under jax.jit and eagerly (``variant``)."""

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import given, strategies as st

from siamese_jax.losses import cross_entropy


@given(logits=hnp.arrays(np.float32, (4, 5), elements=st.floats(-50, 50, width=32)),
       labels=hnp.arrays(np.int32, (4,), elements=st.integers(0, 4)))
def test_softmax_cross_entropy_matches_numpy(logits, labels, variant):
  x = logits.astype(np.float64)
  log_softmax = x - x.max(1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
  want = -log_softmax[np.arange(4), labels].mean()
  got = variant(cross_entropy.batch_softmax_cross_entropy_loss)(logits, labels)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
