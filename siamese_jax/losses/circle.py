"""Circle loss (Sun et al. 2020) for pair labels, as PML's CircleLoss: per anchor
``softplus(logsumexp_pos(-gamma a_p (s_p - (1 - m))) + logsumexp_neg(gamma a_n (s_n - m)))`` with
the self-paced weights ``a_p = relu(1 + m - s_p)``, ``a_n = relu(s_n + m)`` held constant (no
gradient), on cosine similarities; the mean over anchors with a positive and a negative (PML's
AvgNonZeroReducer)."""

import jax
import jax.numpy as jnp

from siamese_jax.losses import objective, pairwise

# PML 2.9: m=0.4, gamma=80, CosineSimilarity only
DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "cosine_similarity"}


def circle_loss(similarity: jax.Array, positives: jax.Array, negatives: jax.Array,
                relaxation: float = 0.4, gamma: float = 80.0) -> jax.Array:
  """Per-anchor loss [B] of cosine similarities [B, M] with masks [B, M]; 0 for an anchor
  lacking a positive or a negative. Stable for any gamma (masked logsumexp, softplus)."""
  held = jax.lax.stop_gradient(similarity)
  positive_logits = -gamma * jax.nn.relu(1.0 + relaxation - held) * (
      similarity - (1.0 - relaxation))
  negative_logits = gamma * jax.nn.relu(held + relaxation) * (similarity - relaxation)
  total = (pairwise.masked_logsumexp(positive_logits, positives)
           + pairwise.masked_logsumexp(negative_logits, negatives))
  both = jnp.any(positives, axis=1) & jnp.any(negatives, axis=1)
  return jnp.where(both, jax.nn.softplus(total), 0.0)


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """PML's mean of the non-zero per-anchor ``circle_loss``."""
  per_anchor = circle_loss(pairs.matrix, pairs.positives, pairs.negatives, read("relaxation"),
                           read("gamma"))
  return pairwise.mean_nonzero(per_anchor, pairs.real), pairwise.pair_metrics(pairs)


PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS)

OBJECTIVE = objective.Objective(
    name="circle", batch_kind="pk", heads=("distance",),
    reads=pairwise.COMMON_READS + ("relaxation", "gamma"),
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS,
    checks=pairwise.common_checks() + (
        objective.Check("loss.distance", lambda v: v in (None, "cosine_similarity"),
                        "must be cosine_similarity (or None) for loss.name='circle'"),
        objective.within("loss.relaxation", 0.0, 1.0, "0.4"), objective.positive("loss.gamma")))
