"""Supervised contrastive loss (Khosla et al. 2020) as PML's SupConLoss: per anchor, minus the
mean over its positives of ``log softmax`` of ``s / temperature`` over its positives and
negatives, on cosine similarities (distances enter negated); the mean over the anchors with a
non-zero loss (AvgNonZeroReducer)."""

import jax
import jax.numpy as jnp

from siamese_jax import similarities
from siamese_jax.losses import objective, pairwise

# PML 2.9
DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "cosine_similarity", "temperature": 0.1}


def supcon_loss(mat: jax.Array, positives: jax.Array, negatives: jax.Array,
                temperature: float = 0.1, distance: str = "cosine_similarity") -> jax.Array:
  """Per-anchor loss [B] of a comparison matrix [B, M] with masks [B, M]; 0 for an anchor
  without positives. Stable at any temperature (the denominator is a masked logsumexp)."""
  logits = (mat if similarities.higher_means_closer(distance) else -mat) / temperature
  log_denominator = pairwise.masked_logsumexp(logits, positives | negatives)
  log_prob = jnp.where(positives, logits - log_denominator[:, None], 0.0)
  count = jnp.sum(positives, axis=1)
  return -jnp.sum(log_prob, axis=1) / jnp.maximum(count, 1).astype(mat.dtype)


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """PML: the non-zero mean of ``supcon_loss``, 0 when the batch lacks positives or negatives."""
  per_anchor = supcon_loss(pairs.matrix, pairs.positives, pairs.negatives, read("temperature"),
                           pairs.distance)
  both = jnp.any(pairs.positives) & jnp.any(pairs.negatives)
  loss = jnp.where(both, pairwise.mean_nonzero(per_anchor, pairs.real), 0.0)
  return loss, pairwise.pair_metrics(pairs)


PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS)

OBJECTIVE = objective.Objective(
    name="supcon", batch_kind="pk", heads=("distance",),
    reads=pairwise.COMMON_READS + ("temperature",),
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS,
    checks=pairwise.common_checks() + (
        objective.or_default(objective.positive("loss.temperature")),))
