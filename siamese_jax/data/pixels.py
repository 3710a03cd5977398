"""Pixel conversions shared by every route of siamese_jax.data: channel count and area resizing.

A size (``data.image_size``) is an int S (S x S) or a pair (H, W): ``height_width`` reads both.

Both take and return uint8 images, so a tfds dataset, the official files and an image folder give
the same pixels for the same image and settings.
"""

import numpy as np

# ITU-R BT.601 luma, the weights of PIL's convert("L") and tf.image.rgb_to_grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_CHUNK = 4096  # images converted at a time: bounds the float32 copy


def to_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
  """uint8 images [..., H, W, C], C in {1, 2, 3, 4} -> [..., H, W, channels]; None: unchanged.

  An alpha channel (C = 2 or 4) is dropped first; colour -> grey is BT.601 luma rounded to the
  nearest integer; grey -> colour repeats the one channel.
  """
  if channels is None:
    return images
  if channels not in (1, 3):
    raise ValueError(f"channels={channels!r} must be 1, 3 or None")
  if images.shape[-1] in (2, 4):
    images = images[..., :-1]
  if images.shape[-1] == channels:
    return images
  if channels == 3:
    return np.repeat(images, 3, axis=-1)
  flat = images.reshape(-1, *images.shape[-3:])
  grey = np.empty(flat.shape[:-1] + (1,), np.uint8)
  for start in range(0, len(flat), _CHUNK):
    luma = flat[start:start + _CHUNK].astype(np.float32) @ _LUMA
    grey[start:start + _CHUNK, ..., 0] = np.clip(np.round(luma), 0, 255)
  return grey.reshape(images.shape[:-1] + (1,))


def height_width(size) -> tuple[int, int] | None:
  """(H, W) of a size: an int S is (S, S), a pair (H, W) (a tuple or a JSON list) is itself;
  None (keep the images' own size) is None. Checked by config_checks, not here."""
  if size is None:
    return None
  if isinstance(size, (tuple, list)):
    height, width = size
    return int(height), int(width)
  return int(size), int(size)


def size_words(size) -> str:
  """"H x W" of a size (see ``height_width``), for messages and sources."""
  height, width = height_width(size)
  return f"{height} x {width}"


def resize_area_tf(images, size):
  """tf uint8 images [..., h, w, C] -> [..., H, W, C] of ``size`` (an int S: S x S, or (H, W)):
  area interpolation, rounded.

  For use inside tf.data (graph) code; `resize_area` is the NumPy front.
  """
  import tensorflow as tf  # only where something is resized
  resized = tf.image.resize(tf.cast(images, tf.float32), list(height_width(size)), method="area")
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _area_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.float32]:
  """(first source cell [target] int, weights [target, K] float32, scale) of an area resize of
  one axis, with TensorFlow's ResizeArea weights (the part of each cell inside the output cell)."""
  scale = np.float32(source / target)
  start = np.arange(target, dtype=np.float32) * scale
  end = (np.arange(target, dtype=np.float32) + 1) * scale
  first = np.floor(start).astype(np.int64)
  taps = int(np.max(np.ceil(end).astype(np.int64) - first))
  cell = (first[:, None] + np.arange(taps)[None, :]).astype(np.float32)
  a, b = start[:, None], end[:, None]
  weight = np.where(cell < a, np.where(cell + 1 > b, scale, cell + 1 - a),
                    np.where(cell + 1 > b, b - cell, np.float32(1)))
  return first, np.where(cell < np.ceil(b), weight, np.float32(0)).astype(np.float32), scale


def resize_area(images: np.ndarray, size) -> np.ndarray:
  """uint8 images [..., h, w, C] -> [..., H, W, C] of ``size`` (an int S: S x S, or (H, W)):
  area interpolation, aspect not kept. NumPy, without TensorFlow (seconds to import): the pixels
  of ``resize_area_tf``, as its float32 sums are taken in the same order (tests/test_data.py)."""
  if images.shape[-3:-1] == height_width(size):
    return images
  (height, width), (h, w) = height_width(size), images.shape[-3:-1]
  first_y, weight_y, scale_y = _area_taps(h, height)
  first_x, weight_x, scale_x = _area_taps(w, width)
  pixels = images.astype(np.float32)
  rows = sum(np.take(pixels, np.minimum(first_x + k, w - 1), axis=-2) * weight_x[:, k, None]
             for k in range(weight_x.shape[1]))
  out = sum(np.take(rows, np.minimum(first_y + k, h - 1), axis=-3) * weight_y[:, k, None, None]
            for k in range(weight_y.shape[1]))
  out = out * (np.float32(1) / (scale_y * scale_x))
  return np.clip(np.round(out), 0, 255).astype(np.uint8)
