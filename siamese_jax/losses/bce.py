"""Binary cross-entropy on pairs scored by a logit head (Koch et al. 2015)."""

import jax
import jax.numpy as jnp
import optax

from siamese_jax import models
from siamese_jax.losses import base, objective


def pair_bce_loss(logit: jax.Array, same: jax.Array) -> jax.Array:
  """Binary cross-entropy from a logit for one pair: logit [], same [] (1 = same class).

  Computed by ``optax.losses.sigmoid_binary_cross_entropy`` through log-sigmoids, so it is
  finite with a finite gradient (``sigmoid(logit) - same``) for logits as large as 1e4.
  """
  return optax.losses.sigmoid_binary_cross_entropy(logit, same.astype(logit.dtype))


def batch_pair_bce_loss(logit: jax.Array, same: jax.Array,
                        mask: jax.Array | None = None) -> jax.Array:
  """Mean pair BCE: logit [B], same [B], mask [B] or None -> []."""
  return base.masked_mean(jax.vmap(pair_bce_loss)(logit, same), mask)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a pair batch {x_a, x_b, same, mask}; a logit above 0 is
  "same"."""
  logit = base.pair_outputs(params, apply_fn, batch, key, train)
  same = batch["same"].astype(jnp.float32)
  loss = batch_pair_bce_loss(logit, same, batch.get("mask"))
  accuracy = base.pair_accuracy(logit, same, batch.get("mask"), spec.scoring)
  return loss, {"loss": loss, "accuracy": accuracy}


OBJECTIVE = objective.Objective(
    name="bce", batch_kind="pairs", heads=models.LOGIT_HEADS, reads=(), compute=compute)
