"""Distances between embeddings: per pair, vmapped over pairs, and as pairwise matrices.

Every function here is safe at zero distance: the value is 0 and every gradient is finite (0 for
the Euclidean ones, never NaN) under ``jit``, ``vmap`` and ``grad``, in float32 and bfloat16.

Why this needs care. ``d = sqrt(s)`` with ``s = |a - b|^2`` has ``dd/ds = 1 / (2 sqrt(s))``, which
is infinite at ``s = 0``; the chain rule multiplies it by ``ds/da = 2 (a - b) = 0`` and gives
``inf * 0 = NaN``, and that NaN then poisons every parameter through the shared encoder (seed 002
shows the loss turning NaN mid-training). A single ``jnp.where(s > 0, sqrt(s), 0)`` is not enough:
``where`` routes the *cotangent* to the branch it picked, but the untaken ``sqrt`` branch is still
differentiated at ``s = 0``, and ``0 * inf`` is still NaN. The fix is the double ``where``: first
replace ``s`` by a harmless value (1) wherever it is 0, so the square root is only ever
differentiated at a positive number, then select 0 for those entries. Value and gradient are
exact everywhere else.

Why not ``sqrt(s + eps)`` (seed 002's ``d' = sqrt(d^2 + 1e-6)``, also optax's
``triplet_margin_loss``): it biases every distance upwards, by ``sqrt(eps)`` at 0 (1e-3 for
eps = 1e-6, the same order as a converged positive-pair distance) and by about
``eps / (2 d)`` elsewhere, it makes the gradient at 0 depend on eps rather than on the data, and
in bfloat16 (8 bits of mantissa) ``s + 1e-6`` rounds back to ``s`` for any ``s`` above about 3e-4,
so the guard only exists near 0 anyway.

Cosine distance builds on ``optax.losses.cosine_distance`` with a positive ``epsilon``, which
clips the squared norms before their square root, so it is finite for zero vectors too.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

COSINE_EPSILON = 1e-12


def safe_sqrt(x: jax.Array) -> jax.Array:
  """Elementwise ``sqrt(max(x, 0))`` whose gradient is 0 (not inf or NaN) where ``x <= 0``."""
  positive = x > 0
  safe_x = jnp.where(positive, x, jnp.ones_like(x))
  return jnp.where(positive, jnp.sqrt(safe_x), jnp.zeros_like(x))


def squared_euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
  """``|a - b|^2`` for one pair: a, b [D] -> []."""
  return jnp.sum(jnp.square(a - b), axis=-1)


def euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
  """``|a - b|`` for one pair: a, b [D] -> []; 0 with zero (finite) gradient when a == b."""
  return safe_sqrt(squared_euclidean(a, b))


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  """``sum |a - b|`` for one pair (Koch et al. 2015's component-wise L1): a, b [D] -> [].

  ``|x|`` has no derivative at 0; JAX returns the finite subgradient 1 there, so the gradient is
  finite (never NaN) at a == b.
  """
  return jnp.sum(jnp.abs(a - b), axis=-1)


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """``1 - cos(a, b)`` for one pair: a, b [D] -> [] in [0, 2]; finite for zero vectors.

  At a == b the value is 0 up to float rounding (``1 - cos`` cancels: a few float32 ulps of 1,
  which is why bfloat16 inputs are reduced in float32); a zero
  vector has cosine 0, hence distance 1, to everything (optax's convention).
  """
  # 1 - cos cancels catastrophically in bfloat16 (0.01 at a == b), so reduce in float32.
  compute = jnp.promote_types(a.dtype, jnp.float32)
  return optax.losses.cosine_distance(a.astype(compute), b.astype(compute),
                                      epsilon=COSINE_EPSILON).astype(a.dtype)


PAIR_DISTANCES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "euclidean": euclidean,
    "squared_euclidean": squared_euclidean,
    "l1": l1,
    "cosine": cosine,
}

# One distance per pair of rows: a, b [B, D] -> [B].
batch_euclidean = jax.vmap(euclidean)
batch_squared_euclidean = jax.vmap(squared_euclidean)
batch_l1 = jax.vmap(l1)
batch_cosine = jax.vmap(cosine)

BATCH_DISTANCES = {
    "euclidean": batch_euclidean,
    "squared_euclidean": batch_squared_euclidean,
    "l1": batch_l1,
    "cosine": batch_cosine,
}


def _check_name(name: str) -> None:
  if name not in PAIR_DISTANCES:
    raise ValueError(f"unknown distance {name!r}; choose one of {sorted(PAIR_DISTANCES)}")


def get_pair_distance(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The per-pair distance ``fn(a [D], b [D]) -> []`` called ``name``."""
  _check_name(name)
  return PAIR_DISTANCES[name]


def get_batch_distance(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The vmapped distance ``fn(a [B, D], b [B, D]) -> [B]`` called ``name``."""
  _check_name(name)
  return BATCH_DISTANCES[name]


def pairwise_squared_euclidean(x: jax.Array, y: jax.Array) -> jax.Array:
  """All ``|x_i - y_j|^2``: x [N, D], y [M, D] -> [N, M], >= 0, exactly 0 where x_i == y_j.

  Uses ``|x|^2 + |y|^2 - 2 x.y`` so the cost is one matmul (what mining and retrieval need),
  reduced in at least float32 (bfloat16 would cancel at the 1 % level) and cast back. That form
  cancels: for x_i == y_j float32 leaves a few ulps of ``|x_i|^2 + |y_j|^2`` (1e-6, hence a
  distance of 1e-3, for unit-scale rows), of either sign. The rounding error of the three
  reductions and two additions is at most ``(D + 2) eps (|x_i|^2 + |y_j|^2)`` (Higham's
  gamma_D bound for a dot product, eps the float32 machine epsilon), so any value at or below
  that tolerance is indistinguishable from 0 in this form and is set to 0: identical rows give
  exactly 0 and no value is negative. The price is a dead zone: distances below about
  ``sqrt(2 (D + 2) eps) max(|x_i|, |y_j|)`` (0.6 % of the norm for D = 128) read as 0, where
  the unguarded form gave rounding noise of about 0.1 % of the norm (a few eps, measured). The
  tolerance carries no gradient, so entries set to 0 have gradient 0.
  """
  dtype, compute = x.dtype, jnp.promote_types(x.dtype, jnp.float32)
  x, y = x.astype(compute), y.astype(compute)
  x_sq = jnp.sum(jnp.square(x), axis=-1)[:, None]
  y_sq = jnp.sum(jnp.square(y), axis=-1)[None, :]
  cross = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
  sq = x_sq + y_sq - 2.0 * cross
  tolerance = (x.shape[-1] + 2) * jnp.finfo(compute).eps * (x_sq + y_sq)
  return jnp.where(sq > tolerance, sq, 0.0).astype(dtype)


def pairwise_euclidean(x: jax.Array, y: jax.Array) -> jax.Array:
  """All ``|x_i - y_j|``: x [N, D], y [M, D] -> [N, M]; safe where the distance is 0."""
  return safe_sqrt(pairwise_squared_euclidean(x, y))


def pairwise_l1(x: jax.Array, y: jax.Array) -> jax.Array:
  """All ``sum_d |x_id - y_jd|``: x [N, D], y [M, D] -> [N, M] (builds [N, M, D]: small batches)."""
  return jax.vmap(lambda row: jax.vmap(lambda col: l1(row, col))(y))(x)


def _unit_rows(x: jax.Array) -> jax.Array:
  # Same clipping as optax.losses.cosine_similarity, so pairwise and per-pair values agree.
  norm_sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x / jnp.sqrt(jnp.clip(norm_sq, COSINE_EPSILON))


def pairwise_cosine(x: jax.Array, y: jax.Array) -> jax.Array:
  """All ``1 - cos(x_i, y_j)``: x [N, D], y [M, D] -> [N, M], as one matmul of unit rows."""
  compute = jnp.promote_types(x.dtype, jnp.float32)
  cosines = jnp.matmul(_unit_rows(x.astype(compute)), _unit_rows(y.astype(compute)).T,
                       precision=jax.lax.Precision.HIGHEST)
  return (1.0 - cosines).astype(x.dtype)


PAIRWISE_DISTANCES = {
    "euclidean": pairwise_euclidean,
    "squared_euclidean": pairwise_squared_euclidean,
    "l1": pairwise_l1,
    "cosine": pairwise_cosine,
}


def get_pairwise_distance(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The matrix distance ``fn(x [N, D], y [M, D]) -> [N, M]`` called ``name``."""
  _check_name(name)
  return PAIRWISE_DISTANCES[name]
