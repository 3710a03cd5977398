"""What the pair-based losses share (pytorch-metric-learning's GenericPairLoss, its reducers and
miners, in fixed shapes): a batch compared with reference rows (itself, or xbm's memory) as a
matrix with positive and negative masks, the pair miners, PML's masked logsumexp and reducers,
and the common ``compute``.

A pair loss is ``against(loss_params, pairs, read, key) -> (loss [], metrics)`` over a ``Pairs``;
``read(name)`` gives a ``loss.*`` setting (None resolved to the loss's own default). The same
function serves the batch (``make_compute``) and xbm's batch-against-memory.

Where we differ from PML: padding rows (mask 0) take part in no pair and are not counted in
means over anchors; miners read the loss's own matrix (PML gives a miner its own distance,
by default cosine for the multi-similarity miner and normalized Lp for the others: the same as
the losses' defaults that use them); and PML's GenericPairLoss returns 0 when the (mined) pairs
number at most one positive and one negative, where ours computes the loss of that pair.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from siamese_jax import mining, similarities
from siamese_jax.losses import base, objective


class Pairs(NamedTuple):
  """A batch against reference rows. matrix [B, M]: ``loss.distance`` between query row i and
  reference row j. positives, negatives [B, M] bool: the pairs the loss sees (same label / other
  label, real rows, no row with itself; after mining). real [B] bool: the query rows that are
  not padding (what PML's mean over anchors counts). distance: the comparison's name. dim: the
  embedding size D. same_rows: the reference is the batch itself (index j = row j)."""
  matrix: jax.Array
  positives: jax.Array
  negatives: jax.Array
  real: jax.Array
  distance: str
  dim: int
  same_rows: bool


# The keys every pair loss reads (the comparison and the miner); ``COMMON_DEFAULTS`` holds the
# values of those declared None that every pair loss shares (a module's DEFAULTS extends it).
COMMON_READS = ("distance", "distance_p", "normalize_embeddings", "miner", "miner_epsilon",
                "miner_pos_margin", "miner_neg_margin", "miner_cutoff",
                "miner_nonzero_loss_cutoff")
COMMON_DEFAULTS = {"miner": "none"}
MINERS = ("none", "multi_similarity", "pair_margin", "distance_weighted")


def common_checks(miners=MINERS) -> tuple[objective.Check, ...]:
  """The checks of the keys in ``COMMON_READS``."""
  return (objective.or_default(objective.one_of("loss.distance", similarities.COMPARISONS)),
          objective.positive("loss.distance_p"),
          objective.or_default(objective.one_of("loss.miner", miners)),
          objective.within("loss.miner_epsilon", 0.0, float("inf"), "0.1"),
          objective.at_least("train.samples_per_class", 2,
                             "for a pair-based loss (an anchor needs a positive)"))


def masked_logsumexp(x: jax.Array, keep: jax.Array, add_one: bool = False) -> jax.Array:
  """PML's ``lmu.logsumexp`` over the last axis: x, keep [..., M] -> [...]; ``log(1 + sum exp)``
  with ``add_one``; 0 where a row keeps nothing. Gradients are finite and 0 off ``keep``."""
  x = jnp.where(keep, x, -jnp.inf)
  if add_one:
    x = jnp.concatenate([x, jnp.zeros_like(x[..., :1])], axis=-1)
  top = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  total = jnp.sum(jnp.exp(x - top), axis=-1)
  found = total > 0
  value = jnp.log(jnp.where(found, total, 1.0)) + top[..., 0]
  return jnp.where(jnp.any(keep, axis=-1), value, 0.0)


def mean_over(values: jax.Array, keep: jax.Array) -> jax.Array:
  """PML's MeanReducer over the kept entries (0 if none)."""
  return base.masked_mean(values.reshape(-1), keep.reshape(-1))


def mean_nonzero(values: jax.Array, keep: jax.Array) -> jax.Array:
  """PML's AvgNonZeroReducer: the mean of the kept entries that are > 0 (0 if none)."""
  keep = keep & (values > 0)
  return base.masked_mean(values.reshape(-1), keep.reshape(-1))


def reader(spec, defaults: dict[str, Any]) -> Callable[[str], Any]:
  """``read(key)``: ``spec[key]``, or ``defaults[key]`` where the spec holds None."""
  return lambda key: objective.setting(spec, key, defaults)


def compare(read, embeddings: jax.Array, reference: jax.Array) -> jax.Array:
  """``loss.distance`` of every embedding [B, D] with every reference row [M, D] -> [B, M]."""
  return similarities.matrix(read("distance"), embeddings, reference, float(read("distance_p")),
                             bool(read("normalize_embeddings")))


def mine(read, pairs: Pairs, key) -> Pairs:
  """``pairs`` restricted by ``loss.miner``: PML's MultiSimilarityMiner or PairMarginMiner, or
  the pairs of the triplets DistanceWeightedMiner draws (its (a, p, a, n)) with ``key``."""
  miner = read("miner")
  closer = similarities.higher_means_closer(pairs.distance)
  if miner == "multi_similarity":
    positives, negatives = mining.multi_similarity_mining(
        pairs.matrix, pairs.positives, pairs.negatives, read("miner_epsilon"), closer)
  elif miner == "pair_margin":
    positives, negatives = mining.pair_margin_mining(
        pairs.matrix, pairs.positives, pairs.negatives, read("miner_pos_margin"),
        read("miner_neg_margin"), closer)
  elif miner == "distance_weighted":
    negative_idx, positives = distance_weighted(read, pairs, key)
    drawn = jax.nn.one_hot(negative_idx, pairs.matrix.shape[1], dtype=bool) & positives[..., None]
    negatives = jnp.any(drawn, axis=1)
  else:
    return pairs
  return pairs._replace(positives=positives, negatives=negatives)


def distance_weighted(read, pairs: Pairs, key):
  """``mining.distance_weighted_mining`` of ``pairs`` (needs ``loss.distance='lp'`` with
  normalized rows, as PML asserts): (negative_idx [B, M], valid [B, M])."""
  return mining.distance_weighted_mining(
      key, pairs.matrix, pairs.positives, pairs.negatives, pairs.dim, read("miner_cutoff"),
      read("miner_nonzero_loss_cutoff"))


def batch_pairs(read, embeddings: jax.Array, labels: jax.Array, mask) -> Pairs:
  """The batch against itself: every real pair of distinct rows, positive or negative."""
  real = jnp.ones(labels.shape, bool) if mask is None else mask.astype(bool)
  return Pairs(compare(read, embeddings, embeddings), mining.positive_mask(labels, mask),
               mining.negative_mask(labels, mask), real, read("distance"), embeddings.shape[-1],
               True)


class PairLoss(NamedTuple):
  """A pair-based loss: ``against(loss_params, pairs, read, key) -> (loss, metrics)``, its own
  ``defaults`` for keys whose config value is None, and whether it draws its own triplets with
  the distance-weighted miner (margin) rather than taking the pairs of the drawn triplets."""
  against: Callable
  defaults: dict[str, Any]
  draws_triplets: bool = False


def loss_of_pairs(pair_loss: PairLoss, loss_params, pairs: Pairs, read, key):
  """``pair_loss`` on ``pairs`` mined as ``loss.miner`` says: (loss, metrics with the loss)."""
  if not (pair_loss.draws_triplets and read("miner") == "distance_weighted"):
    pairs = mine(read, pairs, jax.random.fold_in(key, 1))
  loss, metrics = pair_loss.against(loss_params, pairs, read, jax.random.fold_in(key, 2))
  return loss, {"loss": loss, **metrics}


def make_compute(pair_loss: PairLoss) -> Callable:
  """The ``Objective.compute`` of ``pair_loss`` on a P x K batch {x, label, mask}."""
  def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
    read = reader(spec, pair_loss.defaults)
    embeddings = base.embeddings(params, apply_fn, batch, key, train)
    pairs = batch_pairs(read, embeddings, batch["label"], batch.get("mask"))
    return loss_of_pairs(pair_loss, params.get(objective.LOSS_PARAMS, {}), pairs, read, key)
  return compute


def pair_metrics(pairs: Pairs) -> dict:
  """The number of pairs the loss sees (after mining), as a training metric."""
  count = jnp.sum(pairs.positives) + jnp.sum(pairs.negatives)
  return {"pairs": count.astype(jnp.float32)}
