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
