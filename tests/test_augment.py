"""siamese_jax.augment: crops and flips keep shape and dtype, are a function of the key, and do
what they say (a full-image crop is the image, a flip is the mirror or the image)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import augment, batches, sharding

KEY = jax.random.key(0)


def _colour_images(batch=6, size=16, dtype=jnp.uint8):
  x = jax.random.randint(jax.random.key(1), (batch, size, size, 3), 0, 256)
  return x.astype(dtype) if dtype == jnp.uint8 else (x / 255.0).astype(dtype)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.float32])
@pytest.mark.parametrize("fn", [lambda k, x: augment.random_resized_crop(k, x, (0.3, 1.0)),
                                augment.random_flip], ids=["crop", "flip"])
def test_keeps_shape_and_dtype_and_is_a_function_of_the_key(fn, dtype, variant):
  x = _colour_images(dtype=dtype)
  run = variant(fn)
  out = run(KEY, x)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_array_equal(out, run(KEY, x))
  others = [run(jax.random.key(seed), x) for seed in range(2, 6)]
  assert any(not np.array_equal(out, other) for other in others)


def test_crop_of_the_whole_image_is_the_image():
  x = _colour_images()
  out = augment.random_resized_crop(KEY, x, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  np.testing.assert_array_equal(out, x)


def test_crop_boxes_lie_inside_the_image_with_the_asked_area():
  top, left, box_h, box_w = augment.crop_boxes(KEY, 500, 20, 30, scale=(0.2, 0.6), ratio=(0.5, 2))
  assert np.all(top >= 0) and np.all(left >= 0)
  assert np.all(top + box_h <= 20 + 1e-4) and np.all(left + box_w <= 30 + 1e-4)
  area = np.asarray(box_h * box_w) / (20 * 30)
  assert area.max() <= 0.6 + 1e-5 and area.min() >= 0.2 * 0.5  # clipped sides only shrink it
  assert np.median(area) > 0.3


@pytest.mark.parametrize("seed", range(4))
def test_crop_shows_its_box_resized(seed):
  """On a ramp (pixel value 10 x column), an 8-wide box from column ``left`` resized to 16 shows
  a rising ramp that averages 10 x (left + 3.5), the box's own mean."""
  ramp = jnp.broadcast_to(jnp.arange(16, dtype=jnp.float32) * 10, (1, 16, 16))[..., None]
  key = jax.random.key(seed)
  _, left, _, box_w = augment.crop_boxes(key, 1, 16, 16, (0.25, 0.25), (1.0, 1.0))
  out = np.asarray(augment.random_resized_crop(key, ramp, (0.25, 0.25), (1.0, 1.0)))[0, :, :, 0]
  assert float(box_w[0]) == pytest.approx(8.0)
  assert np.all(np.diff(out, axis=1) >= -1e-4) and np.ptp(out, axis=0).max() < 1e-4
  assert out.mean() == pytest.approx(10 * (float(left[0]) + 3.5), abs=0.5)


def test_flip_gives_each_image_or_its_mirror():
  x = _colour_images(batch=32)
  out = np.asarray(augment.random_flip(KEY, x))
  mirrored = [np.array_equal(o, np.asarray(i)[:, ::-1]) for o, i in zip(out, x)]
  same = [np.array_equal(o, np.asarray(i)) for o, i in zip(out, x)]
  assert all(m or s for m, s in zip(mirrored, same))
  assert 4 <= sum(mirrored) <= 28


def test_batch_spec_augmentation_is_applied_to_sampled_batches():
  images = np.asarray(_colour_images(batch=40, size=12))
  labels = np.repeat(np.arange(4), 10).astype(np.int32)
  data = sharding.device_data(images, labels, 4, sharding.make_mesh(jax.devices()[:1]))
  plain = batches.BatchSpec(kind="pairs", batch_size=8)
  spec = batches.BatchSpec(kind="pairs", batch_size=8, crop_scale=(0.3, 0.8), flip=True)
  a = batches.sample_batch(KEY, data, plain)
  b = jax.jit(batches.sample_batch, static_argnums=2)(KEY, data, spec)
  np.testing.assert_array_equal(a["same"], b["same"])  # the same pairs, other views
  assert b["x_a"].dtype == jnp.uint8 and b["x_a"].shape == a["x_a"].shape
  assert not np.array_equal(a["x_a"], b["x_a"])


@pytest.mark.parametrize("changes, match", [
    ({"train.augment_crop": (0.5,)}, r"train.augment_crop=\(0.5,\) must be \(low, high\)"),
    ({"train.augment_crop": (0.6, 0.3)}, "train.augment_crop"),
    ({"train.augment_crop": (0.3, 1.5)}, "<= 1"),
    ({"train.augment_crop_ratio": (0.0, 1.0)}, "train.augment_crop_ratio"),
    ({"train.augment_scale": 1.5}, r"train.augment_scale=1.5 must be a number in \[0, 1\)"),
    ({"train.augment_shear": -0.1}, "train.augment_shear"),
    ({"train.augment_elastic": 9.0},
     r"train.augment_elastic=9.0 must be a number in \[0, 8\), e.g. 2.5 \(pixels\)"),
    ({"model.filter_growth": 0}, "model.filter_growth=0 must be a positive number"),
])
def test_bad_augmentation_keys_are_refused_naming_the_key(changes, match):
  from experiments import default
  from siamese_jax import config_checks
  config = default.override(default.get_config(), changes)
  with pytest.raises(config_checks.ConfigError, match=match):
    config_checks.validate(config)


def test_batch_spec_from_config_reads_the_augmentation_keys():
  from experiments import default
  config = default.override(default.get_config(), {"train.augment_crop": (0.35, 1.0),
                                                   "train.augment_flip": True})
  spec = batches.batch_spec_from_config(config, "pairs")
  assert spec.crop_scale == (0.35, 1.0) and spec.flip and spec.crop_ratio == (0.75, 4 / 3)
  assert batches.batch_spec_from_config(default.get_config(), "pairs").crop_scale is None
