"""Online triplet mining picks the same triplets as a brute-force NumPy reference; the pair
miners (multi-similarity, pair-margin, distance-weighted) match pytorch-metric-learning 2.9 on the
batches of tests/fixtures/pml_reference_pairs.npz."""

import pathlib

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from siamese_jax import distances, mining, similarities


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


# ------------------------------------------- pair miners against pytorch-metric-learning 2.9

PML = np.load(pathlib.Path(__file__).parent / "fixtures" / "pml_reference_pairs.npz")
PML_CASES = ("b8", "b12_identical", "b6_unique", "b16_clusters")


def _pml_case(case):
  labels = jnp.asarray(PML[f"{case}/labels"], jnp.int32)
  return jnp.asarray(PML[f"{case}/emb"]), labels, mining.positive_mask(labels), \
      mining.negative_mask(labels)


@pytest.mark.parametrize("case", PML_CASES)
def test_multi_similarity_miner_matches_pml(case):
  emb, labels, positives, negatives = _pml_case(case)
  sim = similarities.matrix("cosine_similarity", emb, emb)
  kept_pos, kept_neg = mining.multi_similarity_mining(sim, positives, negatives, 0.1, True)
  np.testing.assert_array_equal(kept_pos, PML[f"{case}/miner/multi_similarity/pos"])
  np.testing.assert_array_equal(kept_neg, PML[f"{case}/miner/multi_similarity/neg"])


@pytest.mark.parametrize("case", PML_CASES)
def test_pair_margin_miner_matches_pml(case):
  emb, labels, positives, negatives = _pml_case(case)
  dist = similarities.matrix("lp", emb, emb)
  kept_pos, kept_neg = mining.pair_margin_mining(dist, positives, negatives, 0.2, 0.8, False)
  np.testing.assert_array_equal(kept_pos, PML[f"{case}/miner/pair_margin/pos"])
  np.testing.assert_array_equal(kept_neg, PML[f"{case}/miner/pair_margin/neg"])


def test_miners_on_distances_mirror_those_on_similarities():
  emb = jax.random.normal(jax.random.key(0), (12, 6))
  labels = jnp.array([0, 1, 2] * 4, jnp.int32)
  positives, negatives = mining.positive_mask(labels), mining.negative_mask(labels)
  sim = similarities.matrix("cosine_similarity", emb, emb)
  # -cos is a distance with the same order: the same pairs, epsilon and margins negated.
  for a, b in zip(mining.multi_similarity_mining(sim, positives, negatives, 0.1, True),
                  mining.multi_similarity_mining(-sim, positives, negatives, 0.1, False)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(mining.pair_margin_mining(sim, positives, negatives, 0.3, 0.1, True),
                  mining.pair_margin_mining(-sim, positives, negatives, -0.3, -0.1, False)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", PML_CASES)
def test_distance_weighted_weights_match_pml(case):
  emb, labels, positives, negatives = _pml_case(case)
  dist = similarities.matrix("lp", emb, emb)
  weights = mining.distance_weighted_weights(dist, negatives, emb.shape[1])
  np.testing.assert_allclose(weights, PML[f"{case}/miner/distance_weighted/weights"], atol=2e-6)


def test_distance_weighted_draws_follow_the_weights():
  emb = jax.random.normal(jax.random.key(1), (8, 4))
  labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32)
  positives, negatives = mining.positive_mask(labels), mining.negative_mask(labels)
  dist = similarities.matrix("lp", emb, emb)
  weights = mining.distance_weighted_weights(dist, negatives, 4)
  draw = jax.jit(lambda key: mining.distance_weighted_mining(key, dist, positives, negatives, 4))
  counts = np.zeros(weights.shape)
  for i in range(400):
    negative_idx, valid = draw(jax.random.key(i))
    assert bool(jnp.all(negatives[jnp.arange(8)[:, None], negative_idx] | ~valid))
    for a, p in zip(*np.nonzero(np.asarray(valid))):
      counts[a, negative_idx[a, p]] += 1
  frequencies = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  rows = np.asarray(jnp.any(weights > 0, axis=1))
  np.testing.assert_allclose(frequencies[rows], weights[rows], atol=0.06)  # 800 draws a row
  np.testing.assert_array_equal(draw(jax.random.key(5))[0], draw(jax.random.key(5))[0])
