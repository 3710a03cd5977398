"""Softmax cross-entropy over the training classes: the classifier baseline, whose encoder's
embeddings are then compared by distance."""

import jax
import optax

from siamese_jax.losses import base, objective


def softmax_cross_entropy_loss(logits: jax.Array, label: jax.Array) -> jax.Array:
  """Cross-entropy of one example: logits [C], label [] int -> []."""
  return optax.losses.softmax_cross_entropy_with_integer_labels(logits, label)


def batch_softmax_cross_entropy_loss(logits: jax.Array, labels: jax.Array,
                                     mask: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy: logits [B, C], labels [B] int, mask [B] or None -> []."""
  return base.masked_mean(jax.vmap(softmax_cross_entropy_loss)(logits, labels), mask)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}."""
  del spec
  logits = base.class_outputs(params, apply_fn, batch, key, train)
  loss = batch_softmax_cross_entropy_loss(logits, batch["label"], batch.get("mask"))
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(logits, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="cross_entropy", batch_kind="uniform", heads=("classifier",), reads=(), compute=compute)
