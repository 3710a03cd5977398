"""On-device augmentation of colour (or any) image batches: random resized crops and flips.

Both are pure functions of a ``jax.random`` key and a batch ``images: [B, H, W, C]`` (uint8 or
float) that return the same shape and dtype, so they run inside the compiled train call (see
``siamese_jax.batches``) with no host round trip. Koch et al.'s affine distortions for strokes
(rotation and shift) are ``samplers.transform_view``.
"""

import jax
import jax.numpy as jnp


def _as_input_dtype(out, images):
  """float32 ``out`` back to ``images``'s dtype (integers rounded and clipped to [0, 255])."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    out = jnp.clip(jnp.round(out), 0, 255)
  return out.astype(images.dtype)


def crop_boxes(key, batch: int, height: int, width: int, scale=(0.08, 1.0),
               ratio=(3 / 4, 4 / 3)):
  """Random boxes (top, left, box_height, box_width), each [B] float32, in pixels.

  Inception's sampling (Szegedy et al. 2015, torchvision's RandomResizedCrop): an area uniform in
  ``scale`` (fractions of H * W), an aspect ratio w / h log-uniform in ``ratio``, a position
  uniform among those that keep the box inside the image. Where the box would leave the image
  its side is clipped to the image's (torchvision retries instead), which keeps the draw one
  fixed-shape computation.
  """
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = jax.random.uniform(k_area, (batch,), minval=scale[0], maxval=scale[1]) * height * width
  log_ratio = jax.random.uniform(k_ratio, (batch,), minval=jnp.log(ratio[0]),
                                 maxval=jnp.log(ratio[1]))
  box_w = jnp.minimum(jnp.sqrt(area * jnp.exp(log_ratio)), width)
  box_h = jnp.minimum(jnp.sqrt(area / jnp.exp(log_ratio)), height)
  top = jax.random.uniform(k_top, (batch,)) * (height - box_h)
  left = jax.random.uniform(k_left, (batch,)) * (width - box_w)
  return top, left, box_h, box_w


def random_resized_crop(key, images, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """Each image's random box (``crop_boxes``) resized back to H x W, bilinearly.

  images: [B, H, W, C] uint8 or float -> the same shape and dtype. The resampling is
  ``jax.image.scale_and_translate`` with the box's scale and offset as traced values, so one
  compiled program serves every box.
  """
  b, h, w, c = images.shape
  top, left, box_h, box_w = crop_boxes(key, b, h, w, scale, ratio)

  def one(image, top, left, box_h, box_w):
    scale_yx = jnp.stack([h / box_h, w / box_w])
    return jax.image.scale_and_translate(
        image.astype(jnp.float32), (h, w, c), (0, 1), scale_yx,
        -jnp.stack([top, left]) * scale_yx, method="linear", antialias=False)

  return _as_input_dtype(jax.vmap(one)(images, top, left, box_h, box_w), images)


def random_flip(key, images):
  """Each image mirrored left-right with probability 1/2: [B, H, W, C] -> same shape, dtype."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)
