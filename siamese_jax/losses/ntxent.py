"""NT-Xent (normalized temperature-scaled cross-entropy; SimCLR, Chen et al. 2020) with labels,
as PML's NTXentLoss: for every positive pair (i, j), ``-log(exp(s_ij / t) / (exp(s_ij / t) +
sum_k exp(s_ik / t)))`` over i's negatives k, on cosine similarities (distances negated),
averaged over positive pairs (MeanReducer)."""

import jax
import jax.numpy as jnp

from siamese_jax import similarities
from siamese_jax.losses import objective, pairwise

# PML 2.9
DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "cosine_similarity", "temperature": 0.07}


def ntxent_pair_losses(mat: jax.Array, negatives: jax.Array, temperature: float = 0.07,
                       distance: str = "cosine_similarity") -> jax.Array:
  """The loss [B, M] of every entry of a comparison matrix [B, M] taken as a positive pair
  against its row's negatives [B, M]; 0 for a row without negatives. PML adds float's tiny to
  the ratio inside the log (a cap near -log(tiny) = 87 in float32); this is exact."""
  logits = (mat if similarities.higher_means_closer(distance) else -mat) / temperature
  negative_part = pairwise.masked_logsumexp(logits, negatives)
  has_negative = jnp.any(negatives, axis=1, keepdims=True)
  return jnp.where(has_negative, jnp.logaddexp(logits, negative_part[:, None]) - logits, 0.0)


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """PML: the mean over positive pairs, 0 when the batch lacks positives or negatives."""
  per_pair = ntxent_pair_losses(pairs.matrix, pairs.negatives, read("temperature"),
                                pairs.distance)
  both = jnp.any(pairs.positives) & jnp.any(pairs.negatives)
  loss = jnp.where(both, pairwise.mean_over(per_pair, pairs.positives), 0.0)
  return loss, pairwise.pair_metrics(pairs)


PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS)

OBJECTIVE = objective.Objective(
    name="ntxent", batch_kind="pk", heads=("distance",),
    reads=pairwise.COMMON_READS + ("temperature",),
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS,
    checks=pairwise.common_checks() + (
        objective.or_default(objective.positive("loss.temperature")),))
