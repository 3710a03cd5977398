"""Contrastive loss (Hadsell, Chopra & LeCun 2006) on pairs scored by the distance head."""

import jax
import jax.numpy as jnp

from siamese_jax.losses import base, objective


def contrastive_loss(distance: jax.Array, same: jax.Array, margin: float = 1.0) -> jax.Array:
  """The loss of one pair: distance [], same [] (1 = same class).

  ``same * d^2 + (1 - same) * max(margin - d, 0)^2``. Pair it with a safe distance
  (``distances.euclidean``) so the gradient is finite when the two embeddings coincide.
  """
  positive_term = jnp.square(distance)
  negative_term = jnp.square(jnp.maximum(margin - distance, 0.0))
  return same * positive_term + (1.0 - same) * negative_term


def batch_contrastive_loss(distance: jax.Array, same: jax.Array, margin: float = 1.0,
                           mask: jax.Array | None = None) -> jax.Array:
  """Mean contrastive loss: distance [B], same [B], mask [B] or None -> []."""
  per_pair = jax.vmap(contrastive_loss, in_axes=(0, 0, None))(distance, same, margin)
  return base.masked_mean(per_pair, mask)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a pair batch {x_a, x_b, same, mask}; the accuracy calls a pair
  "same" as siamese_jax.scoring does."""
  distance = base.pair_outputs(params, apply_fn, batch, key, train)
  same = batch["same"].astype(jnp.float32)
  loss = batch_contrastive_loss(distance, same, spec["margin"], batch.get("mask"))
  accuracy = base.pair_accuracy(distance, same, batch.get("mask"), spec.scoring)
  return loss, {"loss": loss, "accuracy": accuracy}


OBJECTIVE = objective.Objective(
    name="contrastive", batch_kind="pairs", heads=("distance",), reads=("margin",),
    compute=compute, checks=(objective.positive("loss.margin"),))
