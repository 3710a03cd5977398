"""Margin loss (Wu et al. 2017, "Sampling matters") as PML's MarginLoss with a learned boundary
beta: for every triplet (anchor i, positive j, negative k), ``relu(d_ij - beta + margin) +
relu(beta - d_ik + margin)``, summed and divided by the number of non-zero terms (PML's
DivisorReducer), plus ``nu * beta`` (when the batch has a triplet); on normalized Euclidean distances. Triplets: every (i, j, k)
(PML's ``triplets_per_anchor="all"``), or one drawn negative per positive pair with
``loss.miner='distance_weighted'`` (Wu et al.'s sampling).

beta is learned (``loss.learn_beta``, True here; PML's flag defaults to False) as
``params["loss"]["beta_offset"]``, starting at 0: beta = ``loss.beta`` + offset, so its initial
value is the config's and its gradient is beta's. One beta for all classes (PML's per-class
``num_classes`` option is not implemented).
"""

import jax
import jax.numpy as jnp

from siamese_jax import similarities
from siamese_jax.losses import objective, pairwise

# PML 2.9: margin=0.2, nu=0, beta=1.2, LpDistance (normalized). ``loss.margin`` is shared with
# contrastive and triplet: its record default (0.2) applies where loss.margin is None.
DEFAULTS = {**pairwise.COMMON_DEFAULTS,
            "distance": "lp", "beta": 1.2, "margin": 0.2}

BETA = objective.LearnedParam("beta_offset", lambda spec, dims: (),
                              jax.nn.initializers.zeros)


def margin_loss(mat: jax.Array, positives: jax.Array, negatives: jax.Array, beta: jax.Array,
                margin: float = 0.2, distance: str = "lp") -> jax.Array:
  """PML's margin loss [] of every triplet (i, j, k) with j in ``positives[i]`` and k in
  ``negatives[i]`` (mat, masks [B, M]), without forming the [B, M, M] triplets: each anchor's
  positive terms count once per negative and its negative terms once per positive."""
  positive_terms = jax.nn.relu(similarities.margin(distance, mat, beta) + margin)
  negative_terms = jax.nn.relu(similarities.margin(distance, beta, mat) + margin)
  per_positive = jnp.sum(negatives, axis=1, keepdims=True).astype(mat.dtype)
  per_negative = jnp.sum(positives, axis=1, keepdims=True).astype(mat.dtype)
  total = (jnp.sum(jnp.where(positives, positive_terms, 0.0) * per_positive)
           + jnp.sum(jnp.where(negatives, negative_terms, 0.0) * per_negative))
  divisor = (jnp.sum((positives & (positive_terms > 0)) * per_positive)
             + jnp.sum((negatives & (negative_terms > 0)) * per_negative))
  return jnp.where(divisor > 0, total / jnp.maximum(divisor, 1.0), 0.0)


def margin_loss_of_triplets(mat: jax.Array, negative_idx: jax.Array, valid: jax.Array,
                            beta: jax.Array, margin: float = 0.2, distance: str = "lp"):
  """PML's margin loss [] of the triplets (i, j, negative_idx[i, j]) where ``valid[i, j]``
  (mat [B, M], negative_idx [B, M] int, valid [B, M] bool)."""
  negative_mat = jnp.take_along_axis(mat, negative_idx, axis=1)
  positive_terms = jnp.where(valid, jax.nn.relu(similarities.margin(distance, mat, beta)
                                                + margin), 0.0)
  negative_terms = jnp.where(valid, jax.nn.relu(similarities.margin(distance, beta, negative_mat)
                                                + margin), 0.0)
  divisor = jnp.sum(positive_terms > 0) + jnp.sum(negative_terms > 0)
  total = jnp.sum(positive_terms) + jnp.sum(negative_terms)
  return jnp.where(divisor > 0, total / jnp.maximum(divisor, 1).astype(mat.dtype), 0.0)


def against(loss_params, pairs: pairwise.Pairs, read, key):
  """The margin loss of the pairs' triplets plus ``nu * beta`` (when beta is learned)."""
  offset = loss_params.get(BETA.name, jnp.zeros(()))
  if not read("learn_beta"):
    offset = jax.lax.stop_gradient(offset)
  beta = read("beta") + offset
  if read("miner") == "distance_weighted":
    negative_idx, valid = pairwise.distance_weighted(read, pairs, key)
    loss = margin_loss_of_triplets(pairs.matrix, negative_idx, valid, beta, read("margin"),
                                   pairs.distance)
    any_triplet = jnp.any(valid)
  else:
    loss = margin_loss(pairs.matrix, pairs.positives, pairs.negatives, beta, read("margin"),
                       pairs.distance)
    any_triplet = jnp.any(jnp.any(pairs.positives, axis=1) & jnp.any(pairs.negatives, axis=1))
  if read("learn_beta"):  # PML: no regulariser either when the batch has no triplet
    loss = loss + jnp.where(any_triplet, read("nu") * beta, 0.0)
  return loss, {"beta": beta, **pairwise.pair_metrics(pairs)}


PAIR_LOSS = pairwise.PairLoss(against, DEFAULTS, draws_triplets=True)

OBJECTIVE = objective.Objective(
    name="margin", batch_kind="pk", heads=("distance",),
    reads=pairwise.COMMON_READS + ("margin", "beta", "nu", "learn_beta"),
    compute=pairwise.make_compute(PAIR_LOSS), defaults=DEFAULTS, params=(BETA,),
    checks=pairwise.common_checks() + (
        objective.or_default(objective.within("loss.margin", 0.0, 1e9, "0.2")),
        objective.or_default(objective.positive("loss.beta")),
        objective.within("loss.nu", 0.0, 1e9, "0")))
