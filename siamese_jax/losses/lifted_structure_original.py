"""Lifted structured loss as Song et al. (2016) wrote it, PML's LiftedStructureLoss: for every
positive pair (i, j), ``relu(logsumexp(neg_margin - d_ik, neg_margin - d_jl) + d_ij -
pos_margin)^2 / 2`` over the negatives k of i and l of j, averaged over positive pairs (both
orders; MeanReducer), on normalized Euclidean distances. ``lifted_structure`` is the generalized
form (Hermans et al. 2017) that PML and the Reality Check use."""

import jax
import jax.numpy as jnp

from siamese_jax import similarities
from siamese_jax.losses import objective, pairwise

# PML 2.9: neg_margin=1, pos_margin=0, LpDistance (normalized)
DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "lp"}


def lifted_structure_pair_losses(mat: jax.Array, negatives: jax.Array, pos_margin: float = 0.0,
                                 neg_margin: float = 1.0, distance: str = "lp") -> jax.Array:
  """The loss [B, B] of every entry (i, j) of the batch's comparison matrix taken as a positive
  pair, against the negatives [B, B] of both i and j (none: that term is 0, as PML's)."""
  remaining = similarities.margin(distance, neg_margin, mat)
  row = pairwise.masked_logsumexp(remaining, negatives)
  has = jnp.any(negatives, axis=1)
  both = jnp.logaddexp(row[:, None], row[None, :])
  negative_part = jnp.where(has[:, None] & has[None, :], both,
                            jnp.where(has[:, None], row[:, None],
                                      jnp.where(has[None, :], row[None, :], 0.0)))
  return jnp.square(jax.nn.relu(negative_part + similarities.margin(distance, mat, pos_margin))) / 2


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """PML's mean over positive pairs; 0 when the batch lacks positives or negatives."""
  if not pairs.same_rows:
    raise ValueError("loss.name='lifted_structure_original' compares the batch with itself only "
                     "(use lifted_structure with xbm)")
  per_pair = lifted_structure_pair_losses(pairs.matrix, pairs.negatives, read("pos_margin"),
                                          read("neg_margin"), pairs.distance)
  both = jnp.any(pairs.positives) & jnp.any(pairs.negatives)
  loss = jnp.where(both, pairwise.mean_over(per_pair, pairs.positives), 0.0)
  return loss, pairwise.pair_metrics(pairs)


PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS)

OBJECTIVE = objective.Objective(
    name="lifted_structure_original", batch_kind="pk", heads=("distance",),
    reads=pairwise.COMMON_READS + ("pos_margin", "neg_margin"),
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS,
    checks=pairwise.common_checks())
