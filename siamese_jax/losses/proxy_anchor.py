"""Proxy-Anchor (Kim et al. 2020): each class's learned proxy is an anchor that pulls the
batch's embeddings of its class above cosine ``margin`` and pushes the others below
``-margin``, each through a smooth log-sum-exp, as pytorch-metric-learning's ``ProxyAnchorLoss``
(its defaults: margin 0.1, alpha 32 = our ``loss.scale``). The positive term is averaged over
the proxies whose class is in the batch, the negative term over all proxies (PML's
DivisorReducer). The proxies are the objective's own (``params["loss"]["proxies"]`` [C, D])."""

import jax
import jax.numpy as jnp

from siamese_jax.losses import arcface, base, objective


def _log_one_plus_sum_exp(values: jax.Array, keep: jax.Array) -> jax.Array:
  """``log(1 + sum(exp(values[keep])))`` [] of values [B], keep [B] bool, stable for large
  values; 0 where nothing is kept; values left out (padding) pass neither value nor gradient."""
  kept = jnp.where(keep, values, -jnp.inf)
  return jax.nn.logsumexp(jnp.concatenate([kept, jnp.zeros((1,), values.dtype)]))


def proxy_anchor_terms(cosines: jax.Array, positive: jax.Array, valid: jax.Array,
                       scale: float = 32.0, margin: float = 0.1) -> tuple[jax.Array, jax.Array]:
  """One proxy's (positive term [], negative term []): cosines [B] of the batch's embeddings with
  the proxy, positive [B] bool (of its class), valid [B] bool (real examples).

  ``log(1 + sum_pos exp(-scale (cos - margin)))`` and ``log(1 + sum_neg exp(scale (cos +
  margin)))``.
  """
  pos = _log_one_plus_sum_exp(scale * (margin - cosines), positive & valid)
  neg = _log_one_plus_sum_exp(scale * (cosines + margin), ~positive & valid)
  return pos, neg


def batch_proxy_anchor_loss(cosines: jax.Array, labels: jax.Array, scale: float = 32.0,
                            margin: float = 0.1, mask: jax.Array | None = None) -> jax.Array:
  """Proxy-Anchor loss of a batch: cosines [B, C] of the embeddings with every proxy, labels [B]
  int, mask [B] or None -> []: the positive terms summed over proxies and divided by the number
  of proxies with a positive in the batch, plus the negative terms' mean over all C proxies."""
  num_classes = cosines.shape[1]
  valid = jnp.ones(labels.shape, bool) if mask is None else mask.astype(bool)
  positive = labels[:, None] == jnp.arange(num_classes)[None, :]  # [B, C]
  pos, neg = jax.vmap(proxy_anchor_terms, in_axes=(1, 1, None, None, None))(
      cosines, positive, valid, scale, margin)
  with_positives = jnp.sum(jnp.any(positive & valid[:, None], axis=0))
  return (jnp.sum(pos) / jnp.maximum(with_positives, 1).astype(pos.dtype)
          + jnp.sum(neg) / num_classes)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}; the accuracy is the nearest
  proxy's (by cosine)."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  cosines = base.cosines(embeddings, base.learned(params, "proxies"))
  loss = batch_proxy_anchor_loss(cosines, batch["label"], spec["scale"], spec["margin"],
                                 batch.get("mask"))
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(cosines, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="proxy_anchor", batch_kind="uniform", heads=("distance",), reads=("margin", "scale"),
    compute=compute, params=(arcface.class_weights_param("proxies"),),
    defaults={"margin": 0.1, "scale": 32.0},
    checks=(objective.within("loss.margin", 0, 1, "0.1 (a cosine margin)"),
            objective.positive("loss.scale")))
