"""Sub-center ArcFace (Deng et al. 2020): ArcFace where each class has ``loss.num_centers``
learned sub-centers and an embedding's cosine with a class is its largest with them, so a class
may hold a few modes (and noisy labels gather at minor sub-centers), as pytorch-metric-learning's
``SubCenterArcFaceLoss`` (its defaults: margin 28.6 degrees, scale 64, 3 sub-centers)."""

import jax.numpy as jnp

from siamese_jax.losses import arcface, base, objective


def class_cosines(center_cosines: jnp.ndarray) -> jnp.ndarray:
  """Each class's cosine, its nearest sub-center's: center_cosines [..., C, K] -> [..., C].

  Among tied sub-centers (a zero embedding's cosines are all 0) the gradient goes to the first,
  as PyTorch's ``max`` (PML's) sends it, not shared as ``jnp.max``'s.
  """
  nearest = jnp.argmax(center_cosines, axis=-1)[..., None]
  return jnp.take_along_axis(center_cosines, nearest, axis=-1)[..., 0]


def centers_param(name: str = "centers") -> objective.LearnedParam:
  """``loss.num_centers`` learned centers per training class, [C, K, D] (PML's ``W`` [D, C * K],
  center k of class c in column c * K + k, transposed and reshaped)."""
  return objective.LearnedParam(
      name, lambda spec, dims: (dims.num_classes, spec["num_centers"], dims.embedding_dim))


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}: ArcFace on each class's
  nearest sub-center (``arcface.batch_arcface_loss``)."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  cosines = class_cosines(base.cosines(embeddings, base.learned(params, "centers")))
  loss = arcface.batch_arcface_loss(cosines, batch["label"], spec["scale"], spec["margin"],
                                    batch.get("mask"))
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(cosines, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="subcenter_arcface", batch_kind="uniform", heads=("distance",),
    reads=("margin", "num_centers", "scale"), compute=compute, params=(centers_param(),),
    defaults={"margin": 28.6, "scale": 64.0, "num_centers": 3},
    checks=(objective.within("loss.margin", 0, 180, "28.6 (ArcFace's angular margin, degrees)"),
            objective.positive("loss.scale"),
            objective.at_least("loss.num_centers", 1, "(sub-centers per class)")))
