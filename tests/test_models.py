"""Tests for siamese_jax.models: shapes, parameter counts, sharing, dropout, heads, factories."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from experiments import default
from siamese_jax import models

KEY = jax.random.key(0)


def _images(size=28, batch=2, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 1))


def _count(params):
  return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))


def _config(**overrides):
  """The declared model defaults (experiments/default.py) with a tiny MLP and ``overrides``."""
  config = default.get_config().model
  base = dict(encoder="mlp", features=(16, 8), dropout_rates=(0.0, 0.0), head="abs_diff",
              num_classes=10)
  base.update(overrides)
  config.update(base)
  return config


def _tiny_mlp(**kw):
  return models.MLPEncoder(features=(16, 8), **kw)


ENCODERS_28 = {
    "keras_mlp": (models.keras_mnist_mlp(), 128),
    "mlp_2d": (models.mlp_2d(), 2),
    "mlp": (models.MLPEncoder((32, 6), (0.1, 0.0), input_dropout=0.2), 6),
    "embedding_net": (models.EmbeddingNet(), 2),
    "koch28": (models.KochConvNet(variant="28", embedding_dim=64), 64),
    "convnet4": (models.ConvNet4(filters=16, embedding_dim=32), 32),
}


@pytest.mark.parametrize("name", sorted(ENCODERS_28))
def test_encoder_output_shape_28(name):
  encoder, dim = ENCODERS_28[name]
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  out = jax.eval_shape(lambda key, x: encoder.apply(encoder.init(key, x), x), KEY, x)
  assert out.shape == (2, dim) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", ["keras_mlp", "mlp_2d", "convnet4"])
def test_encoder_values_28(name):
  # A real forward only where it is cheap or the default encoder: XLA's CPU conv compiles are slow.
  encoder, dim = ENCODERS_28[name]
  out = jax.jit(lambda key, x: encoder.apply(encoder.init(key, x), x))(KEY, _images())
  assert out.shape == (2, dim) and np.all(np.isfinite(out))
  if name == "keras_mlp":  # its last Dense has a relu
    assert np.all(out >= 0)


@pytest.mark.parametrize("encoder, expected", [
    # conv 5*5*1*32+32 = 832, conv 5*5*32*64+64 = 51,264, dense 4*4*64*256+256 = 262,400,
    # dense 256*256+256 = 65,792, dense 256*2+2 = 514, four scalar PReLU slopes = 4.
    (models.EmbeddingNet(), 832 + 51_264 + 262_400 + 65_792 + 514 + 4),
    # conv 5*5*1*64+64 = 1,664, conv 3*3*64*128+128 = 73,856, conv 3*3*128*128+128 = 147,584,
    # conv 2*2*128*256+256 = 131,328, dense 2*2*256*64+64 = 65,600 (final map 2x2x256).
    (models.KochConvNet(variant="28", embedding_dim=64),
     1_664 + 73_856 + 147_584 + 131_328 + 65_600),
    # conv 3*3*1*64+64 = 640, three conv 3*3*64*64+64 = 36,928, four GroupNorm 2*64 = 128,
    # dense 1*1*64*64+64 = 4,160 (28 -> 14 -> 7 -> 3 -> 1).
    (models.ConvNet4(), 640 + 3 * 36_928 + 4 * 128 + 4_160),
    # without the last pool the dense layer reads the 3x3x64 map: 576*64+64 = 36,928.
    (models.ConvNet4(final_pool=False), 640 + 3 * 36_928 + 4 * 128 + 36_928),
    # filter_growth 2 from 32: convs 1*32 (+32), 32*64, 64*128, 128*256 (3 x 3, with biases),
    # GroupNorm 2 * (32 + 64 + 128 + 256), dense 3*3*256*64+64 (no final pool).
    (models.ConvNet4(filters=32, filter_growth=2, final_pool=False),
     (9 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 128 + 128) + (9 * 128 * 256 + 256)
     + 2 * (32 + 64 + 128 + 256) + (9 * 256 * 64 + 64)),
])
def test_conv_encoder_parameter_count_28(encoder, expected):
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  assert _count(jax.eval_shape(encoder.init, KEY, x)["params"]) == expected


def test_embedding_net_has_four_scalar_prelus():
  x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
  params = jax.eval_shape(models.EmbeddingNet().init, KEY, x)["params"]
  prelus = {k: v["negative_slope"].shape for k, v in params.items() if k.startswith("PReLU")}
  assert prelus == {f"PReLU_{i}": () for i in range(4)}


def test_koch_105_shape_and_parameter_count():
  # Koch et al. (2015), VALID convs, 105x105x1 input:
  #   conv1 10x10x1 -> 64:    10*10*1*64    + 64   =      6,464   (105 -> 96, pool -> 48)
  #   conv2 7x7x64 -> 128:    7*7*64*128    + 128  =    401,536   (48 -> 42, pool -> 21)
  #   conv3 4x4x128 -> 128:   4*4*128*128   + 128  =    262,272   (21 -> 18, pool -> 9)
  #   conv4 4x4x128 -> 256:   4*4*128*256   + 256  =    524,544   (9 -> 6)
  #   dense 6*6*256 -> 4096:  9216*4096     + 4096 = 37,752,832
  #   tower total                                  = 38,947,648
  #   plus the L1 head Dense(4096 -> 1): 4096 + 1  = 38,951,745 for the whole Siamese net.
  encoder = models.KochConvNet(variant="105")
  x = jax.ShapeDtypeStruct((2, 105, 105, 1), jnp.float32)
  variables = jax.eval_shape(encoder.init, KEY, x)
  assert _count(variables["params"]) == 38_947_648
  assert jax.eval_shape(encoder.apply, variables, x).shape == (2, 4096)
  siamese = models.SiameseModel(encoder, models.AbsDiffHead())
  variables = jax.eval_shape(lambda k, a: siamese.init(k, a, a, train=False), KEY, x)
  assert _count(variables["params"]) == 38_951_745


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 4),
       features=st.lists(st.integers(1, 8), min_size=1, max_size=3),
       final_activation=st.booleans())
def test_mlp_encoder_shape_property(batch, features, final_activation):
  encoder = models.MLPEncoder(tuple(features), final_activation=final_activation)
  x = jax.ShapeDtypeStruct((batch, 4, 4, 1), jnp.float32)
  out = jax.eval_shape(lambda key, x: encoder.apply(encoder.init(key, x), x), KEY, x)
  assert out.shape == (batch, features[-1])


def test_shared_weights_one_encoder_and_equal_embeddings():
  model = models.SiameseModel(_tiny_mlp(), models.AbsDiffHead(), shared_weights=True)
  x = _images()
  variables = model.init(KEY, x, x, train=False)
  assert set(variables["params"]) == {"encoder", "head"}
  assert _count(variables["params"]["encoder"]) == _count(_tiny_mlp().init(KEY, x)["params"])
  _, emb_a, emb_b = model.apply(variables, x, x, train=False)
  np.testing.assert_array_equal(emb_a, emb_b)


def test_unshared_weights_two_encoders_and_different_embeddings():
  model = models.SiameseModel(_tiny_mlp(), models.AbsDiffHead(), shared_weights=False)
  x = _images()
  params = model.init(KEY, x, x, train=False)["params"]
  assert set(params) == {"encoder", "encoder_b", "head"}
  assert (jax.tree_util.tree_structure(params["encoder"]) ==
          jax.tree_util.tree_structure(params["encoder_b"]))
  _, emb_a, emb_b = model.apply({"params": params}, x, x, train=False)
  assert not np.allclose(emb_a, emb_b)


@pytest.mark.parametrize("shared", [True, False])
def test_embed_method_matches_call(shared):
  model = models.SiameseModel(_tiny_mlp(), models.AbsDiffHead(), shared_weights=shared)
  x_a, x_b = _images(seed=1), _images(seed=2)
  variables = model.init(KEY, x_a, x_b, train=False)
  _, emb_a, emb_b = model.apply(variables, x_a, x_b, train=False)
  np.testing.assert_allclose(model.apply(variables, x_a, method=models.SiameseModel.embed), emb_a)
  np.testing.assert_allclose(
      model.apply(variables, x_b, tower=1, method=models.SiameseModel.embed), emb_b)


def test_dropout_only_in_train_mode():
  model = models.SiameseModel(models.keras_mnist_mlp(), models.DistanceHead())
  x = _images()
  variables = model.init(KEY, x, x, train=False)
  eval_1 = model.apply(variables, x, x, train=False)
  eval_2 = model.apply(variables, x, x, train=False)
  for a, b in zip(eval_1, eval_2):
    np.testing.assert_array_equal(a, b)
  train = [model.apply(variables, x, x, train=True, rngs={"dropout": jax.random.key(s)})
           for s in (1, 2)]
  assert not np.allclose(train[0][1], train[1][1])
  assert not np.allclose(train[0][1], eval_1[1])


def _dropout_outputs(encoder, x, key):
  """Output and the captured outputs of every Dropout submodule in train mode."""
  variables = encoder.init(KEY, x)
  out, state = encoder.apply(variables, x, train=True, rngs={"dropout": key},
                             capture_intermediates=True, mutable=["intermediates"])
  captured = state["intermediates"]
  drops = {name: v["__call__"][0] for name, v in captured.items() if name.startswith("Dropout")}
  return out, encoder.apply(variables, x, train=False), drops


def test_input_dropout_acts_on_the_input():
  x = _images() + 0.1  # no zero pixels, so zeros after dropout are dropped pixels
  out, eval_out, drops = _dropout_outputs(
      models.MLPEncoder((16, 8, 4), input_dropout=0.5), x, jax.random.key(3))
  assert list(drops) == ["Dropout_0"] and drops["Dropout_0"].shape == (2, 28 * 28)
  assert 0.3 < np.mean(drops["Dropout_0"] == 0) < 0.7
  assert not np.allclose(out, eval_out)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_dropout_rates_act_after_their_layer(layer):
  features = (16, 8, 4)
  rates = tuple(0.5 if i == layer else 0.0 for i in range(3))
  x = _images()
  out, eval_out, drops = _dropout_outputs(
      models.MLPEncoder(features, rates, final_activation=True), x, jax.random.key(4))
  assert list(drops) == ["Dropout_0"] and drops["Dropout_0"].shape == (2, features[layer])
  assert not np.allclose(out, eval_out)


def test_no_dropout_means_train_equals_eval():
  x = _images()
  out, eval_out, drops = _dropout_outputs(models.mlp_2d(hidden=16), x, jax.random.key(5))
  assert not drops
  np.testing.assert_array_equal(out, eval_out)


def test_mismatched_dropout_rates_raise():
  with pytest.raises(ValueError, match="dropout_rates"):
    models.MLPEncoder((4, 2), (0.1,)).init(KEY, jnp.ones((1, 3)))


HEADS = {
    "distance_euclidean": models.DistanceHead("euclidean"),
    "distance_squared_euclidean": models.DistanceHead("squared_euclidean"),
    "distance_l1": models.DistanceHead("l1"),
    "distance_cosine": models.DistanceHead("cosine"),
    "abs_diff": models.AbsDiffHead(),
    "abs_diff_missing_abs": models.AbsDiffHead(use_abs=False),
    "subtract": models.SubtractHead(),
    "concat": models.ConcatHead(),
}


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("shared", [True, False])
def test_head_shape_and_finite_gradient_at_identical_inputs(name, shared):
  model = models.SiameseModel(_tiny_mlp(), HEADS[name], shared_weights=shared)
  x = _images(batch=3)
  params = model.init(KEY, x, x, train=False)["params"]

  def loss(params):
    out, _, _ = model.apply({"params": params}, x, x, train=False)
    # Contrastive-like: differentiates through the distance itself at distance 0.
    return jnp.mean(out) + jnp.mean(jnp.maximum(1.0 - out, 0.0) ** 2)

  out, _, _ = model.apply({"params": params}, x, x, train=False)
  assert out.shape == (3,)
  grads = jax.grad(loss)(params)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
  for leaf in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(leaf))


def test_distance_head_has_no_params_and_is_zero_for_identical_inputs():
  model = models.SiameseModel(_tiny_mlp(), models.DistanceHead())
  x = _images()
  variables = model.init(KEY, x, x, train=False)
  assert set(variables["params"]) == {"encoder"}
  np.testing.assert_array_equal(model.apply(variables, x, x, train=False)[0], 0.0)


_emb = hnp.arrays(np.float32, (3, 5), elements=st.floats(-10, 10, width=32))


@settings(max_examples=20, deadline=None)
@given(a=_emb, b=_emb)
def test_head_symmetry_properties(a, b):
  abs_head, sub_head = models.AbsDiffHead(), models.SubtractHead()
  abs_vars = abs_head.init(KEY, a, b)
  np.testing.assert_allclose(abs_head.apply(abs_vars, a, b), abs_head.apply(abs_vars, b, a),
                             rtol=1e-5, atol=1e-5)
  # Without the abs the score is odd in the pair order around its bias (seed 000's bug).
  sub_vars = sub_head.init(KEY, a, b)
  bias = sub_vars["params"]["Dense_0"]["bias"][0]
  np.testing.assert_allclose(sub_head.apply(sub_vars, a, b) + sub_head.apply(sub_vars, b, a),
                             2 * bias, atol=1e-3)
  dist = models.DistanceHead()
  np.testing.assert_allclose(dist.apply({}, a, b), dist.apply({}, b, a), rtol=1e-6)


def test_classifier_shapes_and_embed():
  model = models.Classifier(_tiny_mlp(), num_classes=10)
  x = _images()
  variables = model.init(KEY, x, train=False)
  assert set(variables["params"]) == {"encoder", "classifier"}
  logits, embedding = model.apply(variables, x, train=False)
  assert logits.shape == (2, 10) and embedding.shape == (2, 8)
  np.testing.assert_allclose(model.apply(variables, x, method=models.Classifier.embed), embedding)


def test_cosine_dense_is_cosine_to_each_class_weight():
  layer = models.CosineDense(features=5)
  x = jax.random.normal(KEY, (3, 4))
  variables = layer.init(KEY, x)
  kernel = np.asarray(variables["params"]["kernel"], np.float64)
  xs = np.asarray(x, np.float64)
  want = (xs / np.linalg.norm(xs, axis=1, keepdims=True)) @ (
      kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
  got = layer.apply(variables, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(got))) <= 1.0 + 1e-6


def test_cosine_dense_gradient_finite_at_a_zero_embedding():
  layer = models.CosineDense(features=3)
  zero = jnp.zeros((2, 4))
  variables = layer.init(KEY, jnp.ones((2, 4)))
  grads = jax.grad(lambda v, x: jnp.sum(layer.apply(v, x)), argnums=(0, 1))(variables, zero)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


def test_cosine_classifier_keeps_the_classifier_param_layout():
  model = models.build_model(_config(head="cosine_classifier"))
  variables = model.init(KEY, _images(), train=False)
  assert set(variables["params"]) == {"encoder", "classifier"}
  assert variables["params"]["classifier"]["kernel"].shape == (8, 10)


def _input_for(encoder):
  size = 105 if encoder == "koch" else 28
  return jax.ShapeDtypeStruct((2, size, size, 1), jnp.float32)


@pytest.mark.parametrize("encoder", models.ENCODERS)
def test_build_model_every_encoder(encoder):
  model = models.build_model(_config(encoder=encoder, embedding_dim=8))
  x = _input_for(encoder)
  variables = jax.eval_shape(lambda k, a: model.init(k, a, a, train=False), KEY, x)
  out, emb_a, emb_b = jax.eval_shape(lambda v, a: model.apply(v, a, a, train=False), variables, x)
  assert out.shape == (2,) and emb_a.shape == emb_b.shape == (2, 8)


@pytest.mark.parametrize("head", models.HEADS)
@pytest.mark.parametrize("shared", [True, False])
def test_build_model_every_head(head, shared):
  model = models.build_model(_config(head=head, shared_weights=shared))
  x = _images()
  if head in models.CLASSIFIER_HEADS:
    assert isinstance(model, models.Classifier)
    logits, emb = model.apply(model.init(KEY, x, train=False), x, train=False)
    assert logits.shape == (2, 10) and emb.shape == (2, 8)
    return
  assert isinstance(model, models.SiameseModel) and model.shared_weights == shared
  out, emb_a, _ = model.apply(model.init(KEY, x, x, train=False), x, x, train=False)
  assert out.shape == (2,) and emb_a.shape == (2, 8)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "l1", "cosine"])
def test_build_model_every_distance(distance):
  model = models.build_model(_config(head="distance", distance=distance))
  assert model.head.distance == distance


def test_build_encoder_from_declared_defaults():
  encoder = models.build_encoder(_config(encoder="embedding_net", embedding_dim=None))
  assert isinstance(encoder, models.EmbeddingNet) and encoder.embedding_dim == 2
  assert models.build_encoder(_config(encoder="koch", embedding_dim=None)).embedding_dim == 4096
  keras = models.build_encoder(_config(encoder="keras_mlp", input_dropout=0.2))
  assert keras.input_dropout == 0.2 and keras.features == (128, 128, 128)
  assert models.build_encoder(_config(encoder="convnet4")).filters == 64
  mlp = models.build_encoder(_config(activation="gelu", final_activation=True))
  assert mlp.activation == "gelu" and mlp.final_activation
  model = models.build_model(default.get_config().model)
  assert model.shared_weights and model.head.distance == "euclidean"


def test_keys_read_follow_the_chosen_encoder_and_head():
  assert "activation" in models.keys_read(_config(encoder="mlp"))
  assert "activation" not in models.keys_read(_config(encoder="keras_mlp"))
  assert "distance" not in models.keys_read(_config(head="abs_diff"))
  assert "filters" in models.keys_read(_config(encoder="convnet4", head="distance"))


@pytest.mark.parametrize("overrides, match", [
    (dict(encoder="resnet"), "model.encoder='resnet'.*convnet4"),
    (dict(head="cosine_head"), "model.head='cosine_head'.*abs_diff"),
    (dict(head="distance", distance="chebyshev"), "model.distance.*euclidean"),
    (dict(features=()), "model.features"),
    (dict(head="classifier", num_classes=None), "model.num_classes"),
])
def test_build_model_rejects_unknown_names(overrides, match):
  with pytest.raises(ValueError, match=match):
    models.build_model(_config(**overrides))


def test_shifted_views_are_edge_padded_shifts():
  x = jnp.arange(2 * 4 * 5, dtype=jnp.float32).reshape(2, 4, 5, 1)
  views = models.shifted_views(x, 1)
  assert views.shape == (9, 2, 4, 5, 1)
  np.testing.assert_array_equal(views[4], x)  # the middle view is the image itself
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  np.testing.assert_array_equal(views[0], padded[:, 0:4, 0:5])  # content moved down and right
  np.testing.assert_array_equal(views[8], padded[:, 2:6, 2:7])


@pytest.mark.parametrize("head", ["distance", "cosine_classifier"])
def test_test_time_shift_averages_views_in_eval_only(head):
  from experiments import default
  config = default.override(default.get_config(), {
      "model.encoder": "convnet4", "model.filters": 8, "model.embedding_dim": 6,
      "model.head": head, "model.num_classes": 3, "model.test_time_shift": 1})
  model = models.build_model(config.model)
  plain = models.build_model(default.override(config, {"model.test_time_shift": 0}).model)
  x = jax.random.uniform(KEY, (3, 28, 28, 1))
  args = (x,) if head == "cosine_classifier" else (x, x)
  params = plain.init(KEY, *args, train=False)
  expected = np.mean([plain.apply(params, v, method="embed") for v in models.shifted_views(x, 1)],
                     axis=0)
  np.testing.assert_allclose(model.apply(params, x, method="embed"), expected, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(model.apply(params, x, method="embed", views=False),
                             plain.apply(params, x, method="embed"), rtol=1e-6)
  np.testing.assert_allclose(model.apply(params, x, train=True, method="embed"),
                             plain.apply(params, x, train=True, method="embed"), rtol=1e-6)
