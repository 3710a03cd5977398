"""Input normalisation fixed from the training data and carried by the model.

``model.input_normalization="per_channel"`` wraps the encoder in ``NormalizedEncoder``, which
computes ``(x - mean) / std`` per channel on the [0, 1] images before the encoder sees them.
``mean`` and ``std`` are computed once from the training part (``channel_stats``) and written into
the model's params (``with_stats``), as Keras' ``Normalization.adapt`` keeps them in the model's
weights. So a checkpoint carries them: evaluation, ``checkpoints.load_trained`` and any exported
model apply exactly the training-time normalisation with nothing to recompute or pass along, and
the data pipeline stays one uint8 path for every model.

They live in ``params`` (not a separate flax collection) so that every ``apply({"params": ...})``
of the project works unchanged; the module stops their gradient, so the optimisers of
``train.OPTIMIZERS`` leave them as they are (a decoupled weight decay would have to mask them).
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MODES = ("none", "per_channel")
MEAN, STD = "input_mean", "input_std"
MIN_STD = 1e-3  # a constant channel (e.g. a grey image stored as RGB) is not blown up


class NormalizedEncoder(nn.Module):
  """``encoder((x - mean) / std)``: x [B, H, W, C] float in [0, 1] -> the encoder's [B, D].

  params: ``input_mean`` and ``input_std`` [C] (initialised to 0 and 1: the identity until
  ``with_stats`` sets them; no gradient flows to them) and ``encoder``, the wrapped encoder's.
  """
  encoder: nn.Module

  @nn.compact
  def __call__(self, x, train: bool = False):
    channels = x.shape[-1]
    mean = jax.lax.stop_gradient(self.param(MEAN, nn.initializers.zeros, (channels,)))
    std = jax.lax.stop_gradient(self.param(STD, nn.initializers.ones, (channels,)))
    return self.encoder((x - mean) / std, train=train)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """(mean [C], std [C]) float32 of uint8 images [N, H, W, C] scaled to [0, 1], per channel.

  Accumulated in float64 over chunks of ``chunk`` images, so no float copy of the whole set is
  made; ``std`` is at least MIN_STD.
  """
  images = np.asarray(images)
  if images.ndim != 4 or not len(images):
    raise ValueError(f"channel_stats: images must be [N, H, W, C] with N >= 1, got {images.shape}")
  total = np.zeros(images.shape[-1])
  squares = np.zeros(images.shape[-1])
  for start in range(0, len(images), chunk):
    block = images[start:start + chunk].astype(np.float64) / 255.0
    total += block.sum(axis=(0, 1, 2))
    squares += np.square(block).sum(axis=(0, 1, 2))
  count = images.shape[0] * images.shape[1] * images.shape[2]
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  return mean.astype(np.float32), np.maximum(std, MIN_STD).astype(np.float32)


def with_stats(params: Any, mean: np.ndarray, std: np.ndarray) -> Any:
  """``params`` with every NormalizedEncoder's ``input_mean`` / ``input_std`` set to ``mean``,
  ``std`` [C] (both towers of a model with separate weights). A ValueError if there is none or
  the channels differ."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  found = [path for path in flat if path[-1] in (MEAN, STD)]
  if not found:
    raise ValueError("with_stats: these params have no input normalisation; build the model with "
                     "model.input_normalization='per_channel'")
  for path in found:
    value = np.asarray(mean if path[-1] == MEAN else std, np.float32)
    if value.shape != flat[path].shape:
      raise ValueError(f"with_stats: {'/'.join(path)} has shape {flat[path].shape} but the stats "
                       f"have {value.shape}; compute them from images of the model's channels")
    flat[path] = jnp.asarray(value)
  return flax.traverse_util.unflatten_dict(flat)


def adapt(params: Any, mode: str, images: np.ndarray) -> Any:
  """``params`` with the stats of ``images`` (the training part) if ``mode`` is "per_channel";
  unchanged for "none". Deterministic, so adapting a restored state again changes nothing."""
  if mode == "none":
    return params
  if mode not in MODES:
    raise ValueError(f"model.input_normalization={mode!r} is not known; choose one of "
                     f"{', '.join(MODES)}")
  return with_stats(params, *channel_stats(images))
