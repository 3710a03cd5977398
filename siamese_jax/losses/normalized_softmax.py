"""Normalized softmax (NormFace, Wang et al. 2017; Zhai & Wu 2019): softmax over the cosines
between an embedding and learned class weights divided by a temperature, as
pytorch-metric-learning's ``NormalizedSoftmaxLoss`` (its default temperature 0.05). Our
``loss.scale`` is 1 / temperature (default 20 = 1 / 0.05): CosFace with no margin."""

import jax

from siamese_jax.losses import arcface, base, cosine_softmax, objective


def normalized_softmax_loss(cosines: jax.Array, label: jax.Array,
                            scale: float = 20.0) -> jax.Array:
  """The loss of one example: cosines [C], label [] int -> []: cross-entropy of
  ``scale * cosines``."""
  return cosine_softmax.cosine_margin_softmax_loss(cosines, label, scale, 0.0)


def batch_normalized_softmax_loss(cosines: jax.Array, labels: jax.Array, scale: float = 20.0,
                                  mask: jax.Array | None = None) -> jax.Array:
  """Mean loss (PML's MeanReducer): cosines [B, C], labels [B] int, mask [B] or None -> []."""
  per_example = jax.vmap(normalized_softmax_loss, in_axes=(0, 0, None))(cosines, labels, scale)
  return base.masked_mean(per_example, mask)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  cosines = base.cosines(embeddings, base.learned(params, "class_weights"))
  loss = batch_normalized_softmax_loss(cosines, batch["label"], spec["scale"], batch.get("mask"))
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(cosines, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="normalized_softmax", batch_kind="uniform", heads=("distance",), reads=("scale",),
    compute=compute, params=(arcface.class_weights_param(),), defaults={"scale": 20.0},
    checks=(objective.positive("loss.scale"),))
