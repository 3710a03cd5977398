"""How the pair-based losses compare a batch's embeddings (``loss.distance``): the four
distances of pytorch-metric-learning (PML), each a matrix over two sets of rows with a direction.

``cosine_similarity``, ``dot_product`` (similarities: higher means closer, PML's
``is_inverted``), ``lp`` (``|x - y|_p``) and ``snr`` (``var(x - y) / var(x)``, Yuan et al. 2019)
are distances or similarities. As in PML, rows are first scaled to unit p-norm when
``normalize`` is true (PML's ``normalize_embeddings=True`` default; cosine always normalizes),
dividing by ``max(|x|_p, 1e-12)`` as ``torch.nn.functional.normalize`` does.

Safe at zero distance: ``lp`` at p = 2 is ``distances.pairwise_euclidean`` (value 0 and gradient 0
where two rows coincide), other p use the same double ``where`` around the root; a zero row
normalizes to a zero row with finite gradient. ``snr`` divides by the anchor's variance clipped at
1e-12 (PML divides by it unclipped: inf or NaN for a constant row; ours is finite).

``margin(name, x, y)`` is PML's ``distance.margin``: how far ``x`` is beyond ``y`` in the direction
of "farther apart" (``x - y`` for distances, ``y - x`` for similarities), so one loss formula
serves both kinds.
"""

import jax
import jax.numpy as jnp

from siamese_jax import distances

NORM_EPSILON = 1e-12  # torch.nn.functional.normalize's eps
VARIANCE_EPSILON = 1e-12

# name -> higher means closer (a similarity)
COMPARISONS: dict[str, bool] = {
    "cosine_similarity": True,
    "dot_product": True,
    "lp": False,
    "snr": False,
}


def check_name(name: str) -> None:
  """Raises a one-line ValueError unless ``name`` is a ``COMPARISONS`` entry."""
  if name not in COMPARISONS:
    raise ValueError(f"loss.distance={name!r} is not known; choose one of {', '.join(COMPARISONS)}")


def higher_means_closer(name: str) -> bool:
  """True for the similarities (cosine_similarity, dot_product), False for the distances."""
  check_name(name)
  return COMPARISONS[name]


def lp_norm(x: jax.Array, p: float = 2.0) -> jax.Array:
  """``|x|_p`` over the last axis: x [..., D] -> [...]; 0 with finite (zero) gradient at x = 0."""
  if p == 2:
    return distances.safe_sqrt(jnp.sum(jnp.square(x), axis=-1))
  if p == 1:
    return jnp.sum(jnp.abs(x), axis=-1)
  total = jnp.sum(jnp.abs(x) ** p, axis=-1)
  positive = total > 0
  safe_total = jnp.where(positive, total, jnp.ones_like(total))
  return jnp.where(positive, safe_total ** (1.0 / p), jnp.zeros_like(total))


def normalize(x: jax.Array, p: float = 2.0) -> jax.Array:
  """Rows scaled to unit p-norm: x [N, D] -> [N, D], ``x / max(|x|_p, 1e-12)`` (torch's
  ``normalize``); a zero row stays zero with finite gradient."""
  return x / jnp.maximum(lp_norm(x, p), NORM_EPSILON)[..., None]


def pairwise_dot_product(x: jax.Array, y: jax.Array) -> jax.Array:
  """All ``x_i . y_j``: x [N, D], y [M, D] -> [N, M] (float32 or wider, full precision)."""
  compute = jnp.promote_types(x.dtype, jnp.float32)
  return jnp.matmul(x.astype(compute), y.astype(compute).T, precision=jax.lax.Precision.HIGHEST)


def pairwise_lp(x: jax.Array, y: jax.Array, p: float = 2.0) -> jax.Array:
  """All ``|x_i - y_j|_p``: x [N, D], y [M, D] -> [N, M]; p = 2 as one matmul
  (``distances.pairwise_euclidean``), other p through the [N, M, D] differences (small batches)."""
  if p == 2:
    return distances.pairwise_euclidean(x, y)
  return lp_norm(x[:, None, :] - y[None, :, :], p)


def _variance(x: jax.Array) -> jax.Array:
  # torch.var's unbiased estimate; the ratio below does not depend on the correction.
  return jnp.var(x, axis=-1, ddof=1)


def pairwise_snr(x: jax.Array, y: jax.Array) -> jax.Array:
  """All ``var(x_i - y_j) / var(x_i)`` (PML's SNRDistance): x [N, D], y [M, D] -> [N, M], D > 1;
  0 where x_i == y_j, smooth there (a variance has no root), anchor variance clipped at 1e-12."""
  compute = jnp.promote_types(x.dtype, jnp.float32)
  x, y = x.astype(compute), y.astype(compute)
  noise = _variance(x[:, None, :] - y[None, :, :])
  return noise / jnp.maximum(_variance(x), VARIANCE_EPSILON)[:, None]


def matrix(name: str, x: jax.Array, y: jax.Array, p: float = 2.0,
           normalize_rows: bool = True) -> jax.Array:
  """The comparison ``name`` of every row of x [N, D] with every row of y [M, D] -> [N, M].

  ``p``: the norm of ``lp`` and of the row normalization (cosine and dot product normalize
  with p = 2, as PML). ``normalize_rows``: scale rows to unit norm first (cosine: always).
  """
  check_name(name)
  norm_p = p if name == "lp" else 2.0
  if normalize_rows or name == "cosine_similarity":
    x, y = normalize(x, norm_p), normalize(y, norm_p)
  if name in ("cosine_similarity", "dot_product"):
    return pairwise_dot_product(x, y)
  if name == "lp":
    return pairwise_lp(x, y, p)
  return pairwise_snr(x, y)


def margin(name: str, x, y):
  """PML's ``distance.margin(x, y)``: ``x - y`` for a distance, ``y - x`` for a similarity."""
  return y - x if higher_means_closer(name) else x - y
