"""Online triplet mining picks the same triplets as a brute-force NumPy reference."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, strategies as st

from siamese_jax import distances, mining


def brute_force_batch_hard(dist, labels, real):
  n = len(labels)
  positives, negatives, valid = [], [], []
  for i in range(n):
    pos = [j for j in range(n) if j != i and labels[j] == labels[i] and real[i] and real[j]]
    neg = [k for k in range(n) if labels[k] != labels[i] and real[i] and real[k]]
    valid.append(bool(pos) and bool(neg))
    positives.append(max(pos, key=lambda j: (dist[i, j], -j)) if pos else None)
    negatives.append(min(neg, key=lambda k: (dist[i, k], k)) if neg else None)
  return positives, negatives, valid


def brute_force_semi_hard(dist, labels, real):
  n = len(labels)
  choice, valid = {}, {}
  for i in range(n):
    neg = [k for k in range(n) if labels[k] != labels[i] and real[i] and real[k]]
    for j in range(n):
      is_pos = j != i and labels[j] == labels[i] and real[i] and real[j]
      valid[i, j] = is_pos and bool(neg)
      if not valid[i, j]:
        continue
      farther = [k for k in neg if dist[i, k] > dist[i, j]]
      if farther:
        choice[i, j] = min(farther, key=lambda k: (dist[i, k], k))
      else:
        choice[i, j] = max(neg, key=lambda k: (dist[i, k], -k))
  return choice, valid


labelled_batches = st.integers(2, 12).flatmap(lambda b: st.tuples(
    hnp.arrays(np.float32, (b, 3), elements=st.floats(-3, 3, width=32), unique=False),
    hnp.arrays(np.int32, (b,), elements=st.integers(0, 3)),
    hnp.arrays(np.bool_, (b,), elements=st.booleans())))


@given(batch=labelled_batches)
def test_batch_hard_matches_brute_force(batch):
  embeddings, labels, real = batch
  dist = np.asarray(distances.pairwise_euclidean(embeddings, embeddings))
  pos, neg, valid = jax.jit(mining.batch_hard_mining)(dist, labels, real)
  want_pos, want_neg, want_valid = brute_force_batch_hard(dist, labels, real)
  np.testing.assert_array_equal(valid, want_valid)
  for i, ok in enumerate(want_valid):
    if ok:
      assert int(pos[i]) == want_pos[i] and int(neg[i]) == want_neg[i]


@given(batch=labelled_batches)
def test_semi_hard_matches_brute_force(batch):
  embeddings, labels, real = batch
  dist = np.asarray(distances.pairwise_euclidean(embeddings, embeddings))
  negative_idx, valid = jax.jit(mining.semi_hard_mining)(dist, labels, real)
  choice, want_valid = brute_force_semi_hard(dist, labels, real)
  for (i, j), ok in want_valid.items():
    assert bool(valid[i, j]) == ok
    if ok:
      assert int(negative_idx[i, j]) == choice[i, j]


@given(batch=labelled_batches)
def test_batch_all_mask_matches_brute_force(batch):
  _, labels, real = batch
  got = np.asarray(mining.batch_all_triplet_mask(labels, real))
  n = len(labels)
  want = np.zeros((n, n, n), bool)
  for i in range(n):
    for j in range(n):
      for k in range(n):
        want[i, j, k] = (real[i] and real[j] and real[k] and i != j
                         and labels[i] == labels[j] and labels[i] != labels[k])
  np.testing.assert_array_equal(got, want)


def test_no_positive_or_no_negative_gives_invalid_anchor():
  labels = jnp.asarray([0, 1, 1])  # anchor 0 has no positive
  dist = distances.pairwise_euclidean(jnp.eye(3), jnp.eye(3))
  _, _, valid = mining.batch_hard_mining(dist, labels)
  np.testing.assert_array_equal(valid, [False, True, True])
  _, _, valid = mining.batch_hard_mining(dist, jnp.zeros(3, int))  # no negatives at all
  np.testing.assert_array_equal(valid, [False, False, False])
