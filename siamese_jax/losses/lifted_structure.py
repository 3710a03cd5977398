"""Lifted structure loss, generalized (Hermans et al. 2017, p. 4; Song et al. 2016's idea) as
PML's GeneralizedLiftedStructureLoss: per anchor ``relu(logsumexp_pos(d - pos_margin) +
logsumexp_neg(neg_margin - d))`` on normalized Euclidean distances, averaged over anchors (PML's
MeanReducer)."""

import jax

from siamese_jax import similarities
from siamese_jax.losses import objective, pairwise

# PML 2.9: neg_margin=1, pos_margin=0, LpDistance (normalized)
DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "lp"}


def lifted_structure_loss(mat: jax.Array, positives: jax.Array, negatives: jax.Array,
                          pos_margin: float = 0.0, neg_margin: float = 1.0,
                          distance: str = "lp") -> jax.Array:
  """Per-anchor loss [B] of a comparison matrix [B, M] with masks [B, M] (an empty side adds 0,
  as PML's logsumexp)."""
  positive_part = pairwise.masked_logsumexp(similarities.margin(distance, mat, pos_margin),
                                            positives)
  negative_part = pairwise.masked_logsumexp(similarities.margin(distance, neg_margin, mat),
                                            negatives)
  return jax.nn.relu(positive_part + negative_part)


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """PML's mean over anchors of ``lifted_structure_loss``."""
  per_anchor = lifted_structure_loss(pairs.matrix, pairs.positives, pairs.negatives,
                                     read("pos_margin"), read("neg_margin"), pairs.distance)
  return pairwise.mean_over(per_anchor, pairs.real), pairwise.pair_metrics(pairs)


PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS)

OBJECTIVE = objective.Objective(
    name="lifted_structure", batch_kind="pk", heads=("distance",),
    reads=pairwise.COMMON_READS + ("pos_margin", "neg_margin"),
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS,
    checks=pairwise.common_checks())
