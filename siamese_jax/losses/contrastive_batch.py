"""Contrastive loss over every pair of a P x K batch with separate margins, as PML's
ContrastiveLoss(pos_margin, neg_margin): ``relu(d - pos_margin)`` over positive pairs plus
``relu(neg_margin - d)`` over negative pairs (similarities: the other way round), each averaged
over its non-zero pairs (PML's AvgNonZeroReducer), on normalized Euclidean distances.

Why a second name rather than a mode of ``contrastive``: ``contrastive`` is Hadsell et al.'s
squared loss on a *pair* batch scored by the distance head (batch kind "pairs", ``loss.margin``,
a mean over all pairs); this one is PML's un-squared hinge on the batch's similarity matrix
(batch kind "pk", two margins, means over the active pairs). Different batches, formula and
reduction: one record each keeps every record's batch kind and keys fixed.
"""

import jax

from siamese_jax import similarities
from siamese_jax.losses import objective, pairwise

# PML 2.9: pos_margin=0, neg_margin=1, LpDistance (normalized)
DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "lp"}


def contrastive_pair_losses(mat: jax.Array, pos_margin: float = 0.0, neg_margin: float = 1.0,
                            distance: str = "lp") -> tuple[jax.Array, jax.Array]:
  """(as positive, as negative) hinge of every entry of a comparison matrix [B, M]."""
  return (jax.nn.relu(similarities.margin(distance, mat, pos_margin)),
          jax.nn.relu(similarities.margin(distance, neg_margin, mat)))


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """PML's non-zero mean over positive pairs plus that over negative pairs."""
  as_positive, as_negative = contrastive_pair_losses(pairs.matrix, read("pos_margin"),
                                                     read("neg_margin"), pairs.distance)
  positive_loss = pairwise.mean_nonzero(as_positive, pairs.positives)
  negative_loss = pairwise.mean_nonzero(as_negative, pairs.negatives)
  return positive_loss + negative_loss, {"positive_loss": positive_loss,
                                         "negative_loss": negative_loss,
                                         **pairwise.pair_metrics(pairs)}


PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS)

OBJECTIVE = objective.Objective(
    name="contrastive_batch", batch_kind="pk", heads=("distance",),
    reads=pairwise.COMMON_READS + ("pos_margin", "neg_margin"),
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS,
    checks=pairwise.common_checks())
