"""CosFace (Wang et al. 2018; NormFace with a margin of 0) on the cosine classifier head, whose
class weights are the model's (``models.CosineDense``)."""

import jax
import optax

from siamese_jax.losses import base, objective


def cosine_margin_softmax_loss(cosines: jax.Array, label: jax.Array, scale: float = 16.0,
                               margin: float = 0.0) -> jax.Array:
  """The loss of one example: cosines [C] in [-1, 1] between its unit embedding and each class's
  unit weight, label [] int -> [].

  Cross-entropy of the logits ``scale * (cosines - margin * onehot(label))``: the true class must
  win by ``margin`` in cosine; ``scale`` sets how peaked the softmax can get (cosines alone, in
  [-1, 1], cannot make it confident).
  """
  logits = scale * (cosines - margin * jax.nn.one_hot(label, cosines.shape[-1], dtype=cosines.dtype))
  return optax.losses.softmax_cross_entropy_with_integer_labels(logits, label)


def batch_cosine_margin_softmax_loss(cosines: jax.Array, labels: jax.Array, scale: float = 16.0,
                                     margin: float = 0.0,
                                     mask: jax.Array | None = None) -> jax.Array:
  """Mean CosFace loss: cosines [B, C], labels [B] int, mask [B] or None -> []."""
  per_example = jax.vmap(cosine_margin_softmax_loss, in_axes=(0, 0, None, None))(
      cosines, labels, scale, margin)
  return base.masked_mean(per_example, mask)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}; the accuracy's argmax over
  cosines is the logits'."""
  cosines = base.class_outputs(params, apply_fn, batch, key, train)
  loss = batch_cosine_margin_softmax_loss(cosines, batch["label"], spec["scale"], spec["margin"],
                                          batch.get("mask"))
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(cosines, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="cosine_softmax", batch_kind="uniform", heads=("cosine_classifier",),
    reads=("margin", "scale"), compute=compute,
    checks=(objective.within("loss.margin", 0, 2, "0.1 (a cosine margin; 0 is NormFace)"),
            objective.positive("loss.scale")))
