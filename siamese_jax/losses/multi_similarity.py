"""Multi-Similarity loss (Wang et al. 2019) with its miner, as PML's MultiSimilarityLoss +
MultiSimilarityMiner: per anchor ``1/alpha log(1 + sum_pos exp(-alpha (s - base))) +
1/beta log(1 + sum_neg exp(beta (s - base)))`` on cosine similarities, averaged over anchors
(PML's MeanReducer: anchors with no pair count as 0)."""

import jax

from siamese_jax import similarities
from siamese_jax.losses import objective, pairwise

# PML 2.9: alpha=2, beta=50, base=0.5, CosineSimilarity, MultiSimilarityMiner(epsilon=0.1).
DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "cosine_similarity", "miner": "multi_similarity", "beta": 50.0}


def multi_similarity_loss(mat: jax.Array, positives: jax.Array, negatives: jax.Array,
                          alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                          distance: str = "cosine_similarity") -> jax.Array:
  """Per-anchor loss [B] of a comparison matrix mat [B, M] with positive/negative masks [B, M];
  0 for an anchor without pairs (``log(1 + 0)``)."""
  positive_part = pairwise.masked_logsumexp(
      alpha * similarities.margin(distance, mat, base), positives, add_one=True) / alpha
  negative_part = pairwise.masked_logsumexp(
      beta * similarities.margin(distance, base, mat), negatives, add_one=True) / beta
  return positive_part + negative_part


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """PML's mean over anchors of ``multi_similarity_loss``."""
  per_anchor = multi_similarity_loss(pairs.matrix, pairs.positives, pairs.negatives,
                                     read("alpha"), read("beta"), read("base"), pairs.distance)
  return pairwise.mean_over(per_anchor, pairs.real), pairwise.pair_metrics(pairs)


READS = pairwise.COMMON_READS + ("alpha", "beta", "base")

PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS)

OBJECTIVE = objective.Objective(
    name="multi_similarity", batch_kind="pk", heads=("distance",), reads=READS,
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS,
    checks=pairwise.common_checks() + (
        objective.positive("loss.alpha"), objective.or_default(objective.positive("loss.beta")),
        objective.within("loss.base", -1e9, 1e9, "0.5")))
