"""Triplet losses: FaceNet's hinge on explicit triplets, and the online-mined batch-all,
batch-hard and semi-hard losses of a P x K batch (``loss.mining``; the selections are
``siamese_jax.mining``'s)."""

import functools

import jax
import jax.numpy as jnp

from siamese_jax import distances, mining
from siamese_jax.losses import base, objective


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


def batch_triplet_margin_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array,
                              margin: float = 1.0, distance: str = "euclidean",
                              mask: jax.Array | None = None) -> jax.Array:
  """Mean triplet hinge over explicit triplets: anchor, positive, negative [B, D] -> []."""
  per_triplet = jax.vmap(functools.partial(triplet_margin_loss, margin=margin,
                                           distance=distance))(anchor, positive, negative)
  return base.masked_mean(per_triplet, mask)


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
  fraction_active = base.masked_mean((hinge > 0).astype(hinge.dtype), valid)
  return base.masked_mean(hinge, valid), fraction_active


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
  fraction_active = base.masked_mean((hinge_flat > 0).astype(hinge.dtype), valid_flat)
  return base.masked_mean(hinge_flat, valid_flat), fraction_active


# loss.mining -> (embeddings, labels, margin, distance, mask) -> (loss, fraction active)
MINING = {
    "batch_all": batch_all_triplet_loss,
    "batch_hard": batch_hard_triplet_loss,
    "semi_hard": semi_hard_triplet_loss,
}


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, fraction_active}) of a P x K batch {x, label, mask}: the encoder's embeddings
  compared by ``model.distance``, triplets mined as ``loss.mining`` says."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  mined_loss = MINING[spec["mining"]]
  loss, fraction_active = mined_loss(embeddings, batch["label"], spec["margin"], spec.distance,
                                     batch.get("mask"))
  return loss, {"loss": loss, "fraction_active": fraction_active}


OBJECTIVE = objective.Objective(
    name="triplet", batch_kind="pk", heads=("distance",), reads=("margin", "mining"),
    compute=compute,
    checks=(objective.positive("loss.margin"), objective.one_of("loss.mining", MINING),
            objective.at_least("train.samples_per_class", 2,
                               "for triplet mining (an anchor needs a positive)")))
