"""Online triplet mining over a labelled batch, as masks and indices (no Python loops).

Inputs are a distance matrix ``dist`` [B, B] (``dist[i, j]`` = distance from anchor i to j),
``labels`` [B] int and an optional ``mask`` [B] (1 = real example, 0 = padding). Ties are broken
towards the lowest index, like ``numpy.argmax``/``argmin``.
"""

import jax
import jax.numpy as jnp


def _real(labels: jax.Array, mask: jax.Array | None) -> jax.Array:
  return jnp.ones(labels.shape, bool) if mask is None else mask.astype(bool)


def positive_mask(labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """[B, B] bool: j is a positive of anchor i (same label, j != i, both real)."""
  real = _real(labels, mask)
  same = labels[:, None] == labels[None, :]
  not_self = ~jnp.eye(labels.shape[0], dtype=bool)
  return same & not_self & real[:, None] & real[None, :]


def negative_mask(labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """[B, B] bool: k is a negative of anchor i (different label, both real)."""
  real = _real(labels, mask)
  return (labels[:, None] != labels[None, :]) & real[:, None] & real[None, :]


def batch_all_triplet_mask(labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """[B, B, B] bool: (i, j, k) is a valid triplet (anchor i, positive j, negative k)."""
  return positive_mask(labels, mask)[:, :, None] & negative_mask(labels, mask)[:, None, :]


def batch_hard_mining(dist: jax.Array, labels: jax.Array, mask: jax.Array | None = None):
  """Hardest positive (farthest) and hardest negative (nearest) of each anchor.

  Returns (positive_idx [B] int, negative_idx [B] int, valid [B] bool); ``valid`` is False for
  anchors that are padding or lack a positive or a negative in the batch.
  """
  positives = positive_mask(labels, mask)
  negatives = negative_mask(labels, mask)
  positive_idx = jnp.argmax(jnp.where(positives, dist, -jnp.inf), axis=1)
  negative_idx = jnp.argmin(jnp.where(negatives, dist, jnp.inf), axis=1)
  valid = jnp.any(positives, axis=1) & jnp.any(negatives, axis=1)
  return positive_idx, negative_idx, valid


def semi_hard_mining(dist: jax.Array, labels: jax.Array, mask: jax.Array | None = None):
  """FaceNet's semi-hard negative for every anchor-positive pair.

  For anchor i and positive j the negative is the k with the smallest ``dist[i, k]`` among
  negatives with ``dist[i, k] > dist[i, j]``; when there is none, the negative farthest from i
  (the choice of TensorFlow Addons' ``triplet_semihard_loss``).
  Returns (negative_idx [B, B] int, valid [B, B] bool) where ``valid[i, j]`` marks real
  anchor-positive pairs whose anchor has at least one negative.
  """
  positives = positive_mask(labels, mask)
  negatives = negative_mask(labels, mask)
  # farther[i, j, k]: k is a negative of i farther from i than j is.
  farther = negatives[:, None, :] & (dist[:, None, :] > dist[:, :, None])
  nearest_farther = jnp.argmin(jnp.where(farther, dist[:, None, :], jnp.inf), axis=2)
  farthest = jnp.argmax(jnp.where(negatives, dist, -jnp.inf), axis=1)
  negative_idx = jnp.where(jnp.any(farther, axis=2), nearest_farther, farthest[:, None])
  valid = positives & jnp.any(negatives, axis=1)[:, None]
  return negative_idx, valid


# ------------------------------------------- pair miners (pytorch-metric-learning's, as masks)
# They take a comparison matrix ``mat`` [B, M] (a distance, or a similarity when
# ``higher_means_closer``) and the candidate ``positives``/``negatives`` [B, M] bool (e.g.
# ``positive_mask``/``negative_mask``, or a batch against a memory), and return the kept subset.

def multi_similarity_mining(mat: jax.Array, positives: jax.Array, negatives: jax.Array,
                            epsilon: float = 0.1, higher_means_closer: bool = True):
  """Wang et al. (2019)'s pair mining, as PML's MultiSimilarityMiner: keep a positive that is
  less similar than the anchor's most similar negative plus ``epsilon``, and a negative more
  similar than the anchor's least similar positive minus ``epsilon`` (for a distance, the same
  with "closer" for "more similar"). Returns (positives [B, M], negatives [B, M]) bool; an anchor
  without positives keeps no negatives and one without negatives keeps no positives."""
  mat = jax.lax.stop_gradient(mat)
  if higher_means_closer:
    hardest_negative = jnp.max(jnp.where(negatives, mat, -jnp.inf), axis=1, keepdims=True)
    easiest_positive = jnp.min(jnp.where(positives, mat, jnp.inf), axis=1, keepdims=True)
    return (positives & (mat - epsilon < hardest_negative),
            negatives & (mat + epsilon > easiest_positive))
  hardest_negative = jnp.min(jnp.where(negatives, mat, jnp.inf), axis=1, keepdims=True)
  easiest_positive = jnp.max(jnp.where(positives, mat, -jnp.inf), axis=1, keepdims=True)
  return (positives & (mat + epsilon > hardest_negative),
          negatives & (mat - epsilon < easiest_positive))


def pair_margin_mining(mat: jax.Array, positives: jax.Array, negatives: jax.Array,
                       pos_margin: float = 0.2, neg_margin: float = 0.8,
                       higher_means_closer: bool = False):
  """PML's PairMarginMiner: positives farther than ``pos_margin`` and negatives closer than
  ``neg_margin`` (similarities: below and above them). Returns (positives, negatives) [B, M]."""
  mat = jax.lax.stop_gradient(mat)
  if higher_means_closer:
    return positives & (mat < pos_margin), negatives & (mat > neg_margin)
  return positives & (mat > pos_margin), negatives & (mat < neg_margin)


def distance_weighted_weights(dist: jax.Array, negatives: jax.Array, dim: int,
                              cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4) -> jax.Array:
  """Wu et al. (2017)'s sampling distribution over each anchor's negatives, as PML's
  DistanceWeightedMiner: ``q(d)^-1`` for unit-norm embeddings in ``dim`` dimensions,
  ``d^(2 - dim) (1 - d^2 / 4)^((3 - dim) / 2)`` with d clipped below at ``cutoff``, zero for
  d >= ``nonzero_loss_cutoff`` and for non-negatives. dist [B, M] Euclidean distances of unit
  rows; returns weights [B, M], each row summing to 1 (or all 0: no usable negative).

  PML subtracts one global maximum of the log-weights before exponentiating; this subtracts each
  row's (the same distribution after the row's normalisation, and no overflow for large
  ``dim``). Rows with no usable negative are 0 here, NaN in PML (which then skips them)."""
  mat = jnp.maximum(jax.lax.stop_gradient(dist), cutoff)
  usable = negatives & (mat < nonzero_loss_cutoff) & (mat < 2.0)
  safe = jnp.where(usable, mat, 1.0)
  log_weights = (2.0 - dim) * jnp.log(safe) - ((dim - 3.0) / 2.0) * jnp.log(
      1.0 - 0.25 * jnp.square(safe))
  log_weights = jnp.where(usable, log_weights, -jnp.inf)
  row_max = jnp.max(log_weights, axis=1, keepdims=True)
  weights = jnp.exp(log_weights - jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  total = jnp.sum(weights, axis=1, keepdims=True)
  return weights / jnp.where(total > 0, total, 1.0)


def distance_weighted_mining(key, dist: jax.Array, positives: jax.Array, negatives: jax.Array,
                             dim: int, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4):
  """One triplet per anchor-positive pair (i, j), its negative drawn from
  ``distance_weighted_weights`` of anchor i with ``key``.

  Returns (negative_idx [B, M] int, valid [B, M] bool: j is a positive of i and i has a usable
  negative). PML draws, per anchor, as many positives (with replacement) as its class has
  members; this takes each positive once, the same triplets in expectation."""
  weights = distance_weighted_weights(dist, negatives, dim, cutoff, nonzero_loss_cutoff)
  has_negative = jnp.any(weights > 0, axis=1, keepdims=True)
  logits = jnp.log(jnp.where(weights > 0, weights, 1.0))
  logits = jnp.where(weights > 0, logits, -jnp.inf)
  rows = jnp.broadcast_to(logits[:, None, :], (*positives.shape, logits.shape[1]))
  negative_idx = jax.random.categorical(key, jnp.where(has_negative[:, :, None], rows, 0.0))
  return negative_idx, positives & has_negative
