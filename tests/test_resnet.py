"""siamese_jax.resnet: shapes of every layout and stem, GroupNorm and no batch statistics, blocks
that start as the identity, the config route, and a tiny ResNet that learns colour pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import default
from siamese_jax import batches, config_checks, models, resnet, sharding, train

KEY = jax.random.key(0)


def _colour(batch=2, size=32, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3))


@pytest.mark.parametrize("encoder, size, dim", [
    (resnet.resnet18(embedding_dim=16), 64, 16),
    (resnet.resnet34(filters=8, embedding_dim=8), 32, 8),
    (resnet.ResNet(stage_sizes=(1, 1, 1), stem="small", filters=8), 28, 128),
    (resnet.ResNet(stage_sizes=(1,), stem="small", filters=8, embedding_dim=4), 5, 4),
])
def test_shapes(encoder, size, dim):
  x = jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32)
  variables = jax.eval_shape(encoder.init, KEY, x)
  assert set(variables) == {"params"}  # no batch_stats collection
  assert jax.eval_shape(encoder.apply, variables, x).shape == (3, dim)


def test_stage_widths_double_and_resolution_halves():
  encoder = resnet.ResNet(stage_sizes=(1, 2, 1), stem="small", filters=8, embedding_dim=4)
  params = jax.eval_shape(encoder.init, KEY, jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))
  params = params["params"]
  widths = [params[f"ResidualBlock_{i}"]["Conv_1"]["kernel"].shape[-1] for i in range(4)]
  assert widths == [8, 16, 16, 32]
  assert "shortcut_conv" in params["ResidualBlock_1"]
  assert "shortcut_conv" not in params["ResidualBlock_2"]
  _, intermediates = encoder.apply(
      {"params": jax.tree_util.tree_map(jnp.zeros_like, params)}, _colour(1, 16),
      capture_intermediates=lambda module, _: isinstance(module, resnet.ResidualBlock),
      mutable=["intermediates"])
  shapes = [v["__call__"][0].shape[1:3] for k, v in sorted(intermediates["intermediates"].items())
            if k.startswith("ResidualBlock")]
  assert shapes == [(16, 16), (8, 8), (8, 8), (4, 4)]


def test_groupnorm_everywhere_and_examples_independent_of_their_batch():
  encoder = resnet.ResNet(stage_sizes=(1, 1), stem="imagenet", filters=8, embedding_dim=6)
  x = _colour(4, 32)
  variables = jax.jit(encoder.init)(KEY, x)
  norms = [path for path, _ in jax.tree_util.tree_leaves_with_path(variables["params"])
           if "norm" in jax.tree_util.keystr(path).lower()]
  assert norms and not any("BatchNorm" in jax.tree_util.keystr(p) for p in norms)
  apply = jax.jit(encoder.apply)
  full = apply(variables, x)
  alone = jnp.concatenate([apply(variables, x[i:i + 1]) for i in range(4)])
  np.testing.assert_allclose(full, alone, rtol=1e-5, atol=1e-5)


def test_a_block_starts_as_the_identity():
  block = resnet.ResidualBlock(filters=8, norm_groups=4)
  x = jax.nn.relu(jax.random.normal(KEY, (2, 6, 6, 8)))
  np.testing.assert_allclose(block.apply(block.init(KEY, x), x), x, atol=1e-6)


def test_groups_that_do_not_divide_the_width_are_refused():
  encoder = resnet.ResNet(stage_sizes=(1,), filters=12, norm_groups=8)
  with pytest.raises(ValueError, match="model.norm_groups"):
    encoder.init(KEY, _colour(1, 16))
  config = default.get_config()
  config.model.encoder, config.model.filters, config.model.norm_groups = "resnet_small", 12, 8
  with pytest.raises(config_checks.ConfigError, match="model.norm_groups=8 does not divide"):
    config_checks.validate(config)
  config.model.norm_groups, config.model.resnet_stage_sizes = 4, ()
  with pytest.raises(config_checks.ConfigError, match="model.resnet_stage_sizes"):
    config_checks.validate(config)


@pytest.mark.parametrize("name, stages", [("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3)),
                                          ("resnet_small", (1, 2))])
def test_built_from_the_config(name, stages):
  config = default.get_config().model
  config.update(encoder=name, filters=16, norm_groups=4, embedding_dim=32,
                resnet_stage_sizes=(1, 2))
  encoder = models.build_encoder(config)
  assert (tuple(encoder.stage_sizes), encoder.filters, encoder.norm_groups,
          encoder.embedding_dim) == (stages, 16, 4, 32)
  assert models.is_convolutional(name)
  assert ("resnet_stage_sizes" in models.keys_read(config)) == (name == "resnet_small")


def test_a_tiny_resnet_learns_colour_pairs():
  """Pairs of noisy images of 4 colours: a tiny ResNet's contrastive loss falls in 15 steps."""
  rng = np.random.default_rng(0)
  colours = rng.integers(0, 256, (4, 3))
  labels = np.repeat(np.arange(4), 16).astype(np.int32)
  noise = rng.normal(0, 40, (64, 12, 12, 3))
  images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
  mesh = sharding.make_mesh(jax.devices()[:1])
  data = sharding.device_data(images, labels, 4, mesh)
  config = default.get_config()
  config.model.update(encoder="resnet_small", resnet_stage_sizes=(1, 1), filters=8,
                      norm_groups=4, embedding_dim=8)
  model = models.build_model(config.model)
  state = jax.jit(lambda key: train.create_train_state(key, model, (12, 12, 3),
                                                     optax.adam(3e-3)))(KEY)
  spec = train.loss_spec_from_config(config)
  batch_spec = batches.BatchSpec(kind="pairs", batch_size=16, flip=True)
  # Single jitted steps: XLA:CPU runs conv gradients inside a scan on a slow path (jax#12868).
  step = train.make_train_step(spec, mesh)
  draw = jax.jit(lambda key: batches.sample_batch(key, data, batch_spec))
  losses = []
  for i in range(15):
    batch_key, dropout_key = train.step_keys(KEY, i)
    state, metrics = step(state, draw(batch_key), dropout_key)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
