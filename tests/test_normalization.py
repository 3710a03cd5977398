"""siamese_jax.normalization: per-channel stats against NumPy, the fixed layer, stats in params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import default
from siamese_jax import models, normalization

KEY = jax.random.key(0)


def _images(n=20, size=6, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 3), np.uint8)
  images[..., 1] //= 4  # channels of different means and spreads
  return images


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_channel_stats_match_numpy(chunk):
  images = _images()
  mean, std = normalization.channel_stats(images, chunk=chunk)
  reference = images.astype(np.float64) / 255.0
  np.testing.assert_allclose(mean, reference.mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, reference.std(axis=(0, 1, 2)), rtol=1e-5)
  assert mean.dtype == std.dtype == np.float32 and mean.shape == (3,)


def test_channel_stats_floor_a_constant_channel_and_refuse_empty_sets():
  images = np.full((4, 3, 3, 1), 7, np.uint8)
  assert normalization.channel_stats(images)[1][0] == pytest.approx(normalization.MIN_STD)
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    normalization.channel_stats(np.zeros((0, 3, 3, 1), np.uint8))


def _model(**overrides):
  config = default.get_config().model
  config.update(dict(encoder="mlp", features=(8, 4), dropout_rates=(0.0, 0.0),
                     input_normalization="per_channel", **overrides))
  return models.build_model(config)


def test_normalized_encoder_applies_the_stats_set_in_params():
  model = _model()
  x = jnp.asarray(_images(n=4) / 255.0, jnp.float32)
  params = model.init(KEY, x, x, train=False)["params"]
  assert isinstance(model.encoder, normalization.NormalizedEncoder)
  mean, std = np.array([0.5, 0.1, 0.4], np.float32), np.array([0.2, 0.05, 0.3], np.float32)
  adapted = normalization.with_stats(params, mean, std)
  inner = model.encoder.encoder
  expected = inner.apply({"params": params["encoder"]["encoder"]}, (x - mean) / std)
  _, emb_a, _ = model.apply({"params": adapted}, x, x, train=False)
  np.testing.assert_allclose(emb_a, expected, rtol=1e-5, atol=1e-6)
  identity = inner.apply({"params": params["encoder"]["encoder"]}, x)  # 0 and 1 before stats
  np.testing.assert_allclose(model.apply({"params": params}, x, x, train=False)[1], identity,
                             rtol=1e-6)


def test_stats_get_no_gradient_and_both_towers_get_them():
  model = _model(shared_weights=False)
  x = jnp.asarray(_images(n=4) / 255.0, jnp.float32)
  params = normalization.adapt(model.init(KEY, x, x, train=False)["params"], "per_channel",
                               _images())
  mean, _ = normalization.channel_stats(_images())
  for tower in ("encoder", "encoder_b"):
    np.testing.assert_array_equal(params[tower][normalization.MEAN], mean)
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, x, train=False)[1]))(params)
  assert not np.any(grads["encoder"][normalization.MEAN])
  assert not np.any(grads["encoder"][normalization.STD])
  assert np.any(grads["encoder"]["encoder"]["Dense_0"]["kernel"])


def test_adapt_none_is_the_identity_and_bad_inputs_are_refused():
  plain = {"encoder": {"Dense_0": {"kernel": jnp.ones((2, 2))}}}
  assert normalization.adapt(plain, "none", _images()) is plain
  with pytest.raises(ValueError, match="input_normalization='per_channel'"):
    normalization.adapt(plain, "per_channel", _images())
  with pytest.raises(ValueError, match="input_normalization='zca'"):
    normalization.adapt(plain, "zca", _images())
  model = _model()
  x = jnp.zeros((1, 6, 6, 3))
  params = model.init(KEY, x, x, train=False)["params"]
  with pytest.raises(ValueError, match="channels"):
    normalization.adapt(params, "per_channel", _images()[..., :1])
