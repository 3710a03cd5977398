"""Losses for pairs, triplets, mined triplets and the classifier baseline.

Each loss comes as a per-example function (what the property tests check) and a vmapped batch
function that takes an optional ``mask`` [B] (1 = real example, 0 = padding) and returns the mean
over the real examples. Online triplet mining lives in ``siamese_jax.mining``; the batch-all,
batch-hard and semi-hard losses here combine its selections with the hinge.

Where optax already has the loss (binary and softmax cross-entropy), we call it.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from siamese_jax import distances, mining


def masked_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean of ``values`` [B] over entries where ``mask`` [B] is non-zero (0 if there are none).

  Masked entries are replaced (not multiplied) by 0, so a NaN or inf in padding cannot leak in.
  """
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(bool)
  total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
  count = jnp.sum(mask).astype(values.dtype)
  return total / jnp.maximum(count, 1)


# ----------------------------------------------------------------------------- pair losses

def contrastive_loss(distance: jax.Array, same: jax.Array, margin: float = 1.0) -> jax.Array:
  """Hadsell, Chopra & LeCun (2006) loss for one pair: distance [], same [] (1 = same class).

  ``same * d^2 + (1 - same) * max(margin - d, 0)^2``. Pair it with a safe distance
  (``distances.euclidean``) so the gradient is finite when the two embeddings coincide.
  """
  positive_term = jnp.square(distance)
  negative_term = jnp.square(jnp.maximum(margin - distance, 0.0))
  return same * positive_term + (1.0 - same) * negative_term


def pair_bce_loss(logit: jax.Array, same: jax.Array) -> jax.Array:
  """Binary cross-entropy from a logit for one pair (Koch et al. 2015): logit [], same [].

  Computed by ``optax.losses.sigmoid_binary_cross_entropy`` through log-sigmoids, so it is
  finite with a finite gradient (``sigmoid(logit) - same``) for logits as large as 1e4.
  """
  return optax.losses.sigmoid_binary_cross_entropy(logit, same.astype(logit.dtype))


def triplet_margin_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array,
                        margin: float = 1.0, distance: str = "euclidean") -> jax.Array:
  """FaceNet hinge for one triplet: anchor, positive, negative [D] -> [].

  ``max(d(a, p) - d(a, n) + margin, 0)`` with a safe distance. ``optax.losses.triplet_margin_loss``
  computes the same hinge with ``sqrt(d^2 + eps)``, which is biased by up to ``sqrt(eps)``; this
  one is exact and still has finite gradients when a == p or a == n.
  """
  pair_distance = distances.get_pair_distance(distance)
  return jnp.maximum(pair_distance(anchor, positive) - pair_distance(anchor, negative) + margin,
                     0.0)


def softmax_cross_entropy_loss(logits: jax.Array, label: jax.Array) -> jax.Array:
  """Cross-entropy of one example for the classifier baseline: logits [C], label [] int."""
  return optax.losses.softmax_cross_entropy_with_integer_labels(logits, label)


def cosine_margin_softmax_loss(cosines: jax.Array, label: jax.Array, scale: float = 16.0,
                               margin: float = 0.0) -> jax.Array:
  """CosFace (Wang et al. 2018; NormFace with ``margin=0``) for one example: cosines [C] in
  [-1, 1] between its unit embedding and each class's unit weight, label [] int -> [].

  Cross-entropy of the logits ``scale * (cosines - margin * onehot(label))``: the true class must
  win by ``margin`` in cosine; ``scale`` sets how peaked the softmax can get (cosines alone, in
  [-1, 1], cannot make it confident).
  """
  logits = scale * (cosines - margin * jax.nn.one_hot(label, cosines.shape[-1], dtype=cosines.dtype))
  return optax.losses.softmax_cross_entropy_with_integer_labels(logits, label)


def batch_contrastive_loss(distance: jax.Array, same: jax.Array, margin: float = 1.0,
                           mask: jax.Array | None = None) -> jax.Array:
  """Mean contrastive loss: distance [B], same [B], mask [B] or None -> []."""
  per_pair = jax.vmap(contrastive_loss, in_axes=(0, 0, None))(distance, same, margin)
  return masked_mean(per_pair, mask)


def batch_pair_bce_loss(logit: jax.Array, same: jax.Array,
                        mask: jax.Array | None = None) -> jax.Array:
  """Mean pair BCE: logit [B], same [B], mask [B] or None -> []."""
  return masked_mean(jax.vmap(pair_bce_loss)(logit, same), mask)


def batch_triplet_margin_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array,
                              margin: float = 1.0, distance: str = "euclidean",
                              mask: jax.Array | None = None) -> jax.Array:
  """Mean triplet hinge over explicit triplets: anchor, positive, negative [B, D] -> []."""
  per_triplet = jax.vmap(functools.partial(triplet_margin_loss, margin=margin,
                                           distance=distance))(anchor, positive, negative)
  return masked_mean(per_triplet, mask)


def batch_softmax_cross_entropy_loss(logits: jax.Array, labels: jax.Array,
                                     mask: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy: logits [B, C], labels [B] int, mask [B] or None -> []."""
  return masked_mean(jax.vmap(softmax_cross_entropy_loss)(logits, labels), mask)


def batch_cosine_margin_softmax_loss(cosines: jax.Array, labels: jax.Array, scale: float = 16.0,
                                     margin: float = 0.0,
                                     mask: jax.Array | None = None) -> jax.Array:
  """Mean CosFace loss: cosines [B, C], labels [B] int, mask [B] or None -> []."""
  per_example = jax.vmap(cosine_margin_softmax_loss, in_axes=(0, 0, None, None))(
      cosines, labels, scale, margin)
  return masked_mean(per_example, mask)


# ------------------------------------------------------------------ online-mined triplets

def batch_all_triplet_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 1.0,
                           distance: str = "euclidean", mask: jax.Array | None = None,
                           only_active: bool = True) -> tuple[jax.Array, jax.Array]:
  """Batch-all loss (Hermans et al. 2017) over every valid triplet of a labelled batch.

  embeddings [B, D], labels [B] int, mask [B] or None. Returns (loss [], fraction of valid
  triplets with a positive hinge []). With ``only_active`` the mean is over triplets whose hinge
  is positive (Hermans et al.'s "BA != 0"), otherwise over all valid triplets.
  """
  dist = distances.get_pairwise_distance(distance)(embeddings, embeddings)
  valid = mining.batch_all_triplet_mask(labels, mask)
  hinge = jnp.maximum(dist[:, :, None] - dist[:, None, :] + margin, 0.0)
  hinge = jnp.where(valid, hinge, 0.0)
  active = valid & (hinge > 0)
  num_valid = jnp.sum(valid)
  num_active = jnp.sum(active)
  denominator = num_active if only_active else num_valid
  loss = jnp.sum(hinge) / jnp.maximum(denominator, 1).astype(hinge.dtype)
  return loss, num_active / jnp.maximum(num_valid, 1)


def batch_hard_triplet_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 1.0,
                            distance: str = "euclidean",
                            mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Batch-hard loss (Hermans et al. 2017): each anchor with its farthest positive and
  nearest negative in the batch.

  embeddings [B, D], labels [B] int, mask [B] or None. Returns (loss [], fraction of anchors
  with a positive hinge []). Anchors lacking a positive or a negative do not count.
  """
  dist = distances.get_pairwise_distance(distance)(embeddings, embeddings)
  positive_idx, negative_idx, valid = mining.batch_hard_mining(dist, labels, mask)
  rows = jnp.arange(dist.shape[0])
  hinge = jnp.maximum(dist[rows, positive_idx] - dist[rows, negative_idx] + margin, 0.0)
  fraction_active = masked_mean((hinge > 0).astype(hinge.dtype), valid)
  return masked_mean(hinge, valid), fraction_active


def semi_hard_triplet_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 1.0,
                           distance: str = "euclidean",
                           mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Semi-hard loss (Schroff et al. 2015, FaceNet) over every anchor-positive pair.

  For each (anchor, positive) the negative is the nearest one farther than the positive (falling
  back to the farthest negative when none is). embeddings [B, D], labels [B] int, mask [B] or
  None. Returns (loss [], fraction of anchor-positive pairs with a positive hinge []).
  """
  dist = distances.get_pairwise_distance(distance)(embeddings, embeddings)
  negative_idx, valid = mining.semi_hard_mining(dist, labels, mask)
  anchor_negative = jnp.take_along_axis(dist, negative_idx, axis=1)
  hinge = jnp.maximum(dist - anchor_negative + margin, 0.0)
  hinge_flat, valid_flat = hinge.reshape(-1), valid.reshape(-1)
  fraction_active = masked_mean((hinge_flat > 0).astype(hinge.dtype), valid_flat)
  return masked_mean(hinge_flat, valid_flat), fraction_active


MINED_TRIPLET_LOSSES = {
    "batch_all": batch_all_triplet_loss,
    "batch_hard": batch_hard_triplet_loss,
    "semi_hard": semi_hard_triplet_loss,
}
