"""How a pair is scored: the one rule, used by training metrics, evaluation, one-shot and the report.

A model with a logit head (``models.LOGIT_HEADS``: ``abs_diff``, ``concat``, ``subtract``) scores a
pair by its head's output, a logit: higher means "same". Every other model (the distance head,
triplet-trained encoders, classifiers) scores a pair by ``model.distance`` between the two
embeddings: lower means "same". The rule depends on the model's head only, never on the loss.
A pair is called "same" at ``threshold`` (the logit's 0 or ``eval.threshold`` on the distance)
until a threshold tuned on validation pairs replaces it.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax import distances, models


class PairScoring(NamedTuple):
  """What ``score_pairs`` needs of a config: the model's ``head`` and ``distance``, and the
  ``threshold`` at which a score is called "same" before any tuning. Hashable (static in jit)."""
  head: str
  distance: str
  threshold: float

  @property
  def higher_means_same(self) -> bool:
    return self.head in models.LOGIT_HEADS


def pair_scoring_from_config(config) -> PairScoring:
  """The scoring of ``config``'s model: a logit head's 0, else eval.threshold on the distance."""
  head = config.model.head
  threshold = 0.0 if head in models.LOGIT_HEADS else float(config.eval.threshold)
  return PairScoring(head, config.model.distance, threshold)


def to_float_images(images: jax.Array) -> jax.Array:
  """uint8 [..., H, W, C] in [0, 255] -> float32 in [0, 1] (floats pass through)."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def embed(apply_fn: Callable, params, images: jax.Array, tower: int = 0,
          views: bool = True) -> jax.Array:
  """Embeddings [B, D] of images [B, H, W, C] (uint8 or float) in eval mode; ``tower`` 1 is the
  second tower of a model with separate weights (the same as 0 otherwise). A model with
  ``model.test_time_shift`` averages its shifted views unless ``views`` is False (the cheaper
  per-epoch monitoring)."""
  x = to_float_images(images)
  kwargs = {} if views else {"views": False}
  if tower:
    return apply_fn({"params": params}, x, tower=tower, method="embed", **kwargs)
  return apply_fn({"params": params}, x, method="embed", **kwargs)



_embed_batch = jax.jit(embed, static_argnames=("apply_fn", "tower", "views"))


def embed_in_batches(apply_fn: Callable, params, images, batch_size: int = 1000, tower: int = 0,
                     views: bool = True) -> np.ndarray:
  """``embed`` of images [N, H, W, C] in batches of ``batch_size`` (the last one padded), as
  host embeddings [N, D]: one compiled program per model and image shape, reused by every call
  until ``jax.clear_caches`` (the end of a run) releases it."""
  batch_size = max(1, min(batch_size, len(images)))
  found = []
  for first in range(0, len(images), batch_size):
    batch = np.asarray(images[first:first + batch_size])
    padding = batch_size - len(batch)
    if padding:
      batch = np.concatenate([batch, np.zeros((padding,) + batch.shape[1:], batch.dtype)])
    found.append(np.asarray(_embed_batch(apply_fn, params, batch, tower=tower,
                                         views=views))[:batch_size - padding])
  return np.concatenate(found)

def score_embeddings(apply_fn: Callable, params, emb_a: jax.Array, emb_b: jax.Array,
                     scoring: PairScoring) -> jax.Array:
  """Scores [B] of embedding pairs emb_a, emb_b [B, D] (see the module docstring)."""
  if scoring.higher_means_same:
    return apply_fn({"params": params}, emb_a, emb_b, method=lambda m, a, b: m.head(a, b))
  return distances.get_batch_distance(scoring.distance)(emb_a, emb_b)


def score_pairs(apply_fn: Callable, params, x_a: jax.Array, x_b: jax.Array,
                scoring: PairScoring, views: bool = True) -> tuple[jax.Array, bool]:
  """(scores [B], higher_means_same) of image pairs x_a, x_b [B, H, W, C] in eval mode.

  x_a goes through the first tower and x_b through the second (the same one unless the model
  has separate weights); ``views`` as ``embed``'s. Jit it with ``scoring`` static, or call it
  inside a jitted function.
  """
  emb_a = embed(apply_fn, params, x_a, tower=0, views=views)
  emb_b = embed(apply_fn, params, x_b, tower=1, views=views)
  return score_embeddings(apply_fn, params, emb_a, emb_b, scoring), scoring.higher_means_same


def predict_same(scores: jax.Array, higher_means_same: bool, threshold: float) -> jax.Array:
  """bool [B]: whether each score calls its pair "same" at ``threshold``."""
  return scores > threshold if higher_means_same else scores < threshold
