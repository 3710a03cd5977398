"""ArcFace (Deng et al. 2019): softmax over the cosines between an embedding and learned class
weights, with the true class's angle widened by an additive margin, as pytorch-metric-learning's
``ArcFaceLoss`` (its defaults: margin 28.6 degrees, scale 64). The class weights are the
objective's own (``params["loss"]["class_weights"]`` [C, D]), so the trained model is the plain
embedding model, compared by distance."""

import jax
import jax.numpy as jnp
import optax

from siamese_jax.losses import base, objective


def additive_angular_margin(cosine: jax.Array, margin: float) -> jax.Array:
  """The true class's logit before scaling: ``cos(theta + margin)`` for the angle ``theta`` of
  ``cosine`` [] (margin in radians), or ``cos(theta) - margin * sin(margin)`` once
  ``theta + margin`` passes 180 degrees (where ``cos(theta + m)`` would turn back up; PML's rule).

  Computed as ``cos(theta) cos(m) - sin(theta) sin(m)`` with ``sin(theta) = sqrt((1 - c)(1 + c))``:
  the same value as ``cos(acos(c) + m)``, and a finite gradient at ``c = +-1`` (an embedding on
  its class weight), where ``acos``'s is infinite (PML's is NaN there).
  """
  c = jnp.clip(cosine, -1.0, 1.0)
  sin_sq = (1.0 - c) * (1.0 + c)
  sin = jnp.where(sin_sq > 0, jnp.sqrt(jnp.where(sin_sq > 0, sin_sq, 1.0)), 0.0)
  widened = c * jnp.cos(margin) - sin * jnp.sin(margin)
  # theta <= pi - m  <=>  c >= cos(pi - m) = -cos(m)
  return jnp.where(c >= -jnp.cos(margin), widened, c - margin * jnp.sin(margin))


def arcface_loss(cosines: jax.Array, label: jax.Array, scale: float = 64.0,
                 margin_degrees: float = 28.6) -> jax.Array:
  """The loss of one example: cosines [C] with each class's weight, label [] int -> [].

  Cross-entropy of ``scale * cosines`` with the true class's cosine replaced by
  ``additive_angular_margin`` (``margin_degrees`` in degrees, as PML takes it).
  """
  target = additive_angular_margin(cosines[label], jnp.radians(margin_degrees))
  logits = scale * cosines.at[label].set(target)
  return optax.losses.softmax_cross_entropy_with_integer_labels(logits, label)


def batch_arcface_loss(cosines: jax.Array, labels: jax.Array, scale: float = 64.0,
                       margin_degrees: float = 28.6, mask: jax.Array | None = None) -> jax.Array:
  """Mean ArcFace loss (PML's MeanReducer): cosines [B, C], labels [B] int, mask [B] or None -> []."""
  per_example = jax.vmap(arcface_loss, in_axes=(0, 0, None, None))(cosines, labels, scale,
                                                                     margin_degrees)
  return base.masked_mean(per_example, mask)


def class_weights_param(name: str = "class_weights") -> objective.LearnedParam:
  """One learned weight vector per training class, [C, D] (PML's ``W``, transposed)."""
  return objective.LearnedParam(name, lambda spec, dims: (dims.num_classes, dims.embedding_dim))


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}: the encoder's embeddings
  against the learned class weights; the accuracy is the nearest class weight's (by cosine)."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  cosines = base.cosines(embeddings, base.learned(params, "class_weights"))
  loss = batch_arcface_loss(cosines, batch["label"], spec["scale"], spec["margin"],
                            batch.get("mask"))
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(cosines, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="arcface", batch_kind="uniform", heads=("distance",), reads=("margin", "scale"),
    compute=compute, params=(class_weights_param(),), defaults={"margin": 28.6, "scale": 64.0},
    checks=(objective.within("loss.margin", 0, 180, "28.6 (ArcFace's angular margin, degrees)"),
            objective.positive("loss.scale")))
