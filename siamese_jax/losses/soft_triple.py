"""SoftTriple (Qian et al. 2019): each class has ``loss.num_centers`` learned centers; an
embedding's similarity to a class is the softmax-weighted mean of its cosines with the class's
centers (temperature ``loss.center_temperature``), and the loss is the softmax cross-entropy of
``scale`` times those similarities, the true class's lowered by ``margin``, as
pytorch-metric-learning's ``SoftTripleLoss`` (its defaults: 10 centers, la 20 = our
``loss.scale``, gamma 0.1 = our ``loss.center_temperature``, margin 0.01). As in PML, the
paper's regulariser that merges centers (tau) is not part of the loss."""

import jax
import jax.numpy as jnp

from siamese_jax.losses import base, cosine_softmax, objective, subcenter_arcface


def soft_class_similarities(center_cosines: jax.Array,
                            center_temperature: float = 0.1) -> jax.Array:
  """Each class's relaxed similarity: center_cosines [..., C, K] -> [..., C], the mean of a
  class's K cosines weighted by their softmax at ``center_temperature``."""
  weights = jax.nn.softmax(center_cosines / center_temperature, axis=-1)
  return jnp.sum(weights * center_cosines, axis=-1)


def soft_triple_loss(center_cosines: jax.Array, label: jax.Array, scale: float = 20.0,
                     margin: float = 0.01, center_temperature: float = 0.1) -> jax.Array:
  """The loss of one example: center_cosines [C, K] with every class's centers, label [] int
  -> []."""
  similarities = soft_class_similarities(center_cosines, center_temperature)
  return cosine_softmax.cosine_margin_softmax_loss(similarities, label, scale, margin)


def batch_soft_triple_loss(center_cosines: jax.Array, labels: jax.Array, scale: float = 20.0,
                           margin: float = 0.01, center_temperature: float = 0.1,
                           mask: jax.Array | None = None) -> jax.Array:
  """Mean SoftTriple loss (PML's MeanReducer): center_cosines [B, C, K], labels [B] int, mask [B]
  or None -> []."""
  per_example = jax.vmap(soft_triple_loss, in_axes=(0, 0, None, None, None))(
      center_cosines, labels, scale, margin, center_temperature)
  return base.masked_mean(per_example, mask)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}; the accuracy is the class of
  largest relaxed similarity."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  center_cosines = base.cosines(embeddings, base.learned(params, "centers"))
  loss = batch_soft_triple_loss(center_cosines, batch["label"], spec["scale"], spec["margin"],
                                spec["center_temperature"], batch.get("mask"))
  similarities = soft_class_similarities(center_cosines, spec["center_temperature"])
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(similarities, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="soft_triple", batch_kind="uniform", heads=("distance",),
    reads=("center_temperature", "margin", "num_centers", "scale"), compute=compute,
    params=(subcenter_arcface.centers_param(),),
    defaults={"margin": 0.01, "scale": 20.0, "num_centers": 10, "center_temperature": 0.1},
    checks=(objective.within("loss.margin", 0, 2, "0.01 (a cosine margin)"),
            objective.positive("loss.scale"), objective.positive("loss.center_temperature"),
            objective.at_least("loss.num_centers", 1, "(centers per class)")))
