"""N-pair loss (Sohn 2016) as PML's NPairsLoss: one (anchor, positive) pair per class of the
batch, the anchor the class's first example and the positive its second; softmax cross-entropy
of each anchor's similarities to every pair's positive, the true one its own, averaged over pairs
(MeanReducer). PML's default comparison is DotProductSimilarity, which normalizes rows by default
(``loss.normalize_embeddings``): cosine logits."""

import jax
import jax.numpy as jnp

from siamese_jax import similarities
from siamese_jax.losses import objective, pairwise

DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "dot_product"}


def first_pairs(positives: jax.Array) -> tuple[jax.Array, jax.Array]:
  """From positives [B, B] (same label, j != i, both real): (valid [B] bool: i is the first row
  of its class and the class has a second; second [B] int: that second row)."""
  index = jnp.arange(positives.shape[0])
  earlier = positives & (index[None, :] < index[:, None])
  later = positives & (index[None, :] > index[:, None])
  valid = ~jnp.any(earlier, axis=1) & jnp.any(later, axis=1)
  return valid, jnp.argmax(later, axis=1)


def npairs_loss(mat: jax.Array, positives: jax.Array, distance: str = "dot_product") -> jax.Array:
  """Mean cross-entropy [] of the batch against itself: mat [B, B] comparisons, positives
  [B, B]; 0 when no class has two examples."""
  valid, second = first_pairs(positives)
  logits = mat[:, second]  # [anchor i, pair c] = comparison(i, second row of c)
  if not similarities.higher_means_closer(distance):
    logits = -logits
  keep = valid[None, :] & valid[:, None]
  per_anchor = pairwise.masked_logsumexp(logits, keep) - jnp.diagonal(logits)
  return pairwise.mean_over(per_anchor, valid)


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """``npairs_loss`` of the batch (PML's NPairsLoss takes no reference set, nor do we)."""
  if not pairs.same_rows:
    raise ValueError("loss.name='npairs' compares the batch with itself only (no xbm memory)")
  return npairs_loss(pairs.matrix, pairs.positives, pairs.distance), pairwise.pair_metrics(pairs)


PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS)

OBJECTIVE = objective.Objective(
    name="npairs", batch_kind="pk", heads=("distance",), reads=pairwise.COMMON_READS,
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS,
    checks=pairwise.common_checks())
