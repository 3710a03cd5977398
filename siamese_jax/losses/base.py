"""What the objectives share: the masked batch mean, the model's outputs for a batch, the unit
vectors and cosines the class-weight and proxy losses compare, and the accuracies they report."""

from typing import Callable

import jax
import jax.numpy as jnp

from siamese_jax import scoring
from siamese_jax.losses.objective import LOSS_PARAMS


def masked_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean of ``values`` [B] over entries where ``mask`` [B] is non-zero (0 if there are none).

  Masked entries are replaced (not multiplied) by 0, so a NaN or inf in padding cannot leak in.
  """
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(bool)
  total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
  count = jnp.sum(mask).astype(values.dtype)
  return total / jnp.maximum(count, 1)


def apply_model(params, apply_fn: Callable, images: tuple, key, train: bool, **kwargs):
  """``apply_fn`` on uint8 or float ``images`` (one array per tower) with dropout drawn from
  ``key`` when ``train``; ``kwargs`` (e.g. ``method="embed"``) pass through."""
  rngs = {"dropout": key} if train else {}
  floats = [scoring.to_float_images(x) for x in images]
  return apply_fn({"params": params}, *floats, train=train, rngs=rngs, **kwargs)


def pair_outputs(params, apply_fn: Callable, batch: dict, key, train: bool) -> jax.Array:
  """The pair model's output [B] (a distance or a logit) for a pair batch {x_a, x_b, ...}."""
  output, _, _ = apply_model(params, apply_fn, (batch["x_a"], batch["x_b"]), key, train)
  return output


def class_outputs(params, apply_fn: Callable, batch: dict, key, train: bool) -> jax.Array:
  """A classifier's outputs [B, C] (logits, or cosines) for a labelled batch {x, label, ...}."""
  outputs, _ = apply_model(params, apply_fn, (batch["x"],), key, train)
  return outputs


def embeddings(params, apply_fn: Callable, batch: dict, key, train: bool) -> jax.Array:
  """The encoder's embeddings [B, D] of a labelled batch {x, label, ...}."""
  return apply_model(params, apply_fn, (batch["x"],), key, train, method="embed")


def learned(params, name: str) -> jax.Array:
  """The objective's learned parameter ``name`` (under ``objective.LOSS_PARAMS``)."""
  return params[LOSS_PARAMS][name]


def unit(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """``x / max(|x|, eps)`` along the last axis ([..., D] -> [..., D]), as PyTorch's
  ``F.normalize`` (what pytorch-metric-learning's distances do): a zero vector stays zero, and
  its gradient is finite (``x / eps``'s, not the NaN of ``sqrt``'s at 0)."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
  return x / jnp.maximum(norm, eps)


def cosines(embeddings: jax.Array, weights: jax.Array) -> jax.Array:
  """Cosine of each embedding with each weight vector: embeddings [B, D], weights [..., D] ->
  [B, ...] (0 where either is the zero vector)."""
  return jnp.einsum("bd,...d->b...", unit(embeddings), unit(weights))


def pair_accuracy(output: jax.Array, same: jax.Array, mask, pair_scoring) -> jax.Array:
  """Fraction of real pairs called rightly "same" or not, as ``siamese_jax.scoring`` calls them:
  output [B], same [B] (1 = same class), mask [B] or None, pair_scoring a PairScoring."""
  predicted_same = scoring.predict_same(output, pair_scoring.higher_means_same,
                                        pair_scoring.threshold)
  return masked_mean((predicted_same == (same > 0)).astype(jnp.float32), mask)


def class_accuracy(outputs: jax.Array, labels: jax.Array, mask) -> jax.Array:
  """Fraction of real examples whose largest output [B, C] is their label [B]."""
  correct = (jnp.argmax(outputs, -1) == labels).astype(jnp.float32)
  return masked_mean(correct, mask)
