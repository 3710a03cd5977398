"""SphereFace (Liu et al. 2017, A-Softmax): softmax over the embedding's length times the cosines
with learned unit class weights, the true class's angle multiplied by an integer margin ``m``,
as pytorch-metric-learning's ``SphereFaceLoss`` (its defaults: margin 4, scale 1). The class
weights are the objective's own (``params["loss"]["class_weights"]`` [C, D])."""

import math

import jax
import jax.numpy as jnp
import optax

from siamese_jax.losses import arcface, base, objective


def multiplied_angle_cosine(cosine: jax.Array, margin: int) -> jax.Array:
  """``psi(theta) = (-1)^k cos(m theta) - 2k`` for the angle theta of ``cosine`` [], with
  ``k = floor(theta m / pi)`` (so psi falls monotonically from 1 to 1 - 2m; PML's Eq. 6).

  ``cos(m theta)`` is the multiple-angle polynomial in ``cos(theta)`` (PML's Eq. 7), smooth at
  ``cos = +-1``; ``k`` is a constant to the gradient (as PML's ``no_grad``).
  """
  c = jnp.clip(cosine, -1.0, 1.0)
  cos_m = sum((-1) ** n * math.comb(margin, 2 * n) * c ** (margin - 2 * n) * (1 - c ** 2) ** n
              for n in range(margin // 2 + 1))
  k = jnp.floor(jnp.arccos(jax.lax.stop_gradient(c)) / (math.pi / margin))
  return jnp.where(k % 2 == 0, 1.0, -1.0) * cos_m - 2 * k


def sphereface_loss(cosines: jax.Array, norm: jax.Array, label: jax.Array, scale: float = 1.0,
                    margin: int = 4) -> jax.Array:
  """The loss of one example: cosines [C] with each unit class weight, norm [] (the embedding's
  length), label [] int -> []: cross-entropy of ``scale * norm * cosines`` with the true class's
  cosine replaced by ``multiplied_angle_cosine``."""
  logits = cosines.at[label].set(multiplied_angle_cosine(cosines[label], margin))
  return optax.losses.softmax_cross_entropy_with_integer_labels(scale * norm * logits, label)


def batch_sphereface_loss(embeddings: jax.Array, labels: jax.Array, class_weights: jax.Array,
                          scale: float = 1.0, margin: int = 4,
                          mask: jax.Array | None = None) -> jax.Array:
  """Mean SphereFace loss (PML's MeanReducer): embeddings [B, D], labels [B] int, class_weights
  [C, D], mask [B] or None -> []. The length's gradient is 0 at a zero embedding (PyTorch's
  ``norm``'s), not NaN."""
  sq = jnp.sum(jnp.square(embeddings), axis=-1)
  norms = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
  cosines = base.cosines(embeddings, class_weights)
  per_example = jax.vmap(sphereface_loss, in_axes=(0, 0, 0, None, None))(
      cosines, norms, labels, scale, margin)
  return base.masked_mean(per_example, mask)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  class_weights = base.learned(params, "class_weights")
  loss = batch_sphereface_loss(embeddings, batch["label"], class_weights, spec["scale"],
                               int(spec["margin"]), batch.get("mask"))
  cosines = base.cosines(embeddings, class_weights)
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(cosines, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="sphereface", batch_kind="uniform", heads=("distance",), reads=("margin", "scale"),
    compute=compute, params=(arcface.class_weights_param(),),
    defaults={"margin": 4.0, "scale": 1.0},
    checks=(objective.Check("loss.margin", lambda v: isinstance(v, (int, float))
                            and not isinstance(v, bool) and v >= 1 and float(v).is_integer(),
                            "must be a whole number >= 1 (SphereFace multiplies the angle by it), "
                            "e.g. 4"),
            objective.positive("loss.scale")))
