"""ProxyNCA (Movshovitz-Attias et al. 2017): softmax over minus the squared distances between
an embedding and one learned proxy per class (both scaled to unit length), as
pytorch-metric-learning's ``ProxyNCALoss`` (``LpDistance(power=2)``, softmax_scale 1 = our
``loss.scale``). The proxies are the objective's own (``params["loss"]["proxies"]`` [C, D]).

One difference: PML leaves out of its mean an example whose class probability underflows to 0
(its ``-log`` would be inf); the log-softmax here never underflows, so every example counts
(the two agree wherever PML's probability is not 0, which is where its test fixture stays).
"""

import jax
import jax.numpy as jnp
import optax

from siamese_jax.losses import arcface, base, objective


def proxy_nca_loss(embedding: jax.Array, label: jax.Array, proxies: jax.Array,
                   scale: float = 1.0) -> jax.Array:
  """The loss of one example: embedding [D], label [] int, proxies [C, D] -> [].

  ``-log softmax(-scale * |u - p_c|^2)[label]`` for the unit embedding u and unit proxies p_c;
  the squared distance is a sum of squares, smooth at 0 (an embedding on its proxy).
  """
  sq_distances = jnp.sum(jnp.square(base.unit(embedding) - base.unit(proxies)), axis=-1)
  return optax.losses.softmax_cross_entropy_with_integer_labels(-scale * sq_distances, label)


def batch_proxy_nca_loss(embeddings: jax.Array, labels: jax.Array, proxies: jax.Array,
                         scale: float = 1.0, mask: jax.Array | None = None) -> jax.Array:
  """Mean ProxyNCA loss (PML's MeanReducer): embeddings [B, D], labels [B] int, proxies [C, D],
  mask [B] or None -> []."""
  per_example = jax.vmap(proxy_nca_loss, in_axes=(0, 0, None, None))(embeddings, labels, proxies,
                                                                      scale)
  return base.masked_mean(per_example, mask)


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True):
  """(loss, {loss, accuracy}) of a labelled batch {x, label, mask}; the accuracy is the nearest
  proxy's."""
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  proxies = base.learned(params, "proxies")
  loss = batch_proxy_nca_loss(embeddings, batch["label"], proxies, spec["scale"],
                              batch.get("mask"))
  cosines = base.cosines(embeddings, proxies)  # the nearest unit proxy is the largest cosine
  return loss, {"loss": loss,
                "accuracy": base.class_accuracy(cosines, batch["label"], batch.get("mask"))}


OBJECTIVE = objective.Objective(
    name="proxy_nca", batch_kind="uniform", heads=("distance",), reads=("scale",),
    compute=compute, params=(arcface.class_weights_param("proxies"),), defaults={"scale": 1.0},
    checks=(objective.positive("loss.scale"),))
