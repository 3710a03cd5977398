"""Tests for siamese_jax.conv: convolutions as patches times a matrix equal XLA's (outputs and
gradients, float32), and the encoders built either way have one parameter tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from experiments import default
from siamese_jax import conv, models, resnet, train

DIMS = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("size,channels,kernel,stride,padding,out", [
    (28, 1, 3, 1, "SAME", 8), (7, 3, 3, 1, "SAME", 4), (64, 3, 7, 2, "SAME", 8),
    (17, 4, 3, 2, "SAME", 8), (9, 5, 1, 2, "SAME", 6), (28, 1, 5, 1, "VALID", 4),
    (10, 2, 3, 2, ((1, 2), (0, 1)), 3)])
def test_matmul_equals_xla_convolution_and_its_gradients(size, channels, kernel, stride, padding,
                                                         out):
  kx, kw, kg = jax.random.split(jax.random.key(size * kernel + stride), 3)
  x = jax.random.normal(kx, (2, size, size, channels))
  w = jax.random.normal(kw, (kernel, kernel, channels, out)) / kernel
  args = dict(window_strides=(stride, stride), padding=padding, dimension_numbers=DIMS)
  cotangent = jax.random.normal(kg, lax.conv_general_dilated(x, w, **args).shape)

  @jax.jit
  def output_and_grads(x, w):  # one program per convolution: op by op is slow to compile
    both = []
    for f in (conv.conv_as_matmul, lax.conv_general_dilated):
      loss = lambda x, w, f=f: jnp.sum(f(x, w, **args) * cotangent)
      both.append((f(x, w, **args), *jax.grad(loss, (0, 1))(x, w)))
    return both

  (got, *got_grads), (expected, *expected_grads) = output_and_grads(x, w)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  for a, b in zip(got_grads, expected_grads):  # d/dx, d/dw
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unsupported_convolutions_are_refused_by_name():
  x, w = jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 2, 4))
  with pytest.raises(NotImplementedError, match="conv_impl='xla'"):
    conv.conv_as_matmul(x, w, (1, 1), "SAME", feature_group_count=2)
  with pytest.raises(NotImplementedError, match="conv_impl='xla'"):
    conv.conv_as_matmul(x, w[:, :, :1].repeat(4, 2), (1, 1), "SAME", rhs_dilation=(2, 2))


def test_resolve_picks_matmul_on_cpu_only_and_names_the_key():
  assert conv.resolve("auto", "cpu") == "matmul"
  assert conv.resolve("auto", "gpu") == conv.resolve("auto", "tpu") == "xla"
  assert conv.resolve("xla", "cpu") == "xla" and conv.resolve("matmul", "gpu") == "matmul"
  with pytest.raises(ValueError, match="model.conv_impl='fft'.*auto, xla, matmul"):
    conv.resolve("fft")


def _encoder(name, impl, **model):
  config = default.get_config().model
  config.update(encoder=name, conv_impl=impl, **model)
  return models.build_encoder(config)


@pytest.mark.parametrize("name,model,shape", [
    ("convnet4", dict(filters=8, filter_growth=2, final_pool=False, embedding_dim=16,
                      input_normalization="per_channel"), (28, 28, 1)),
    ("resnet18", dict(filters=8, norm_groups=4, embedding_dim=16), (32, 32, 3)),
    ("koch28", dict(embedding_dim=16), (28, 28, 1)),
    ("embedding_net", dict(embedding_dim=4), (28, 28, 1))])
def test_encoders_have_one_param_tree_and_the_same_outputs_and_gradients(name, model, shape):
  x = jax.random.uniform(jax.random.key(1), (3, *shape))
  xla, matmul = _encoder(name, "xla", **model), _encoder(name, "matmul", **model)
  params = jax.jit(xla.init)(jax.random.key(0), x)
  other = jax.jit(matmul.init)(jax.random.key(0), x)
  assert jax.tree.structure(params) == jax.tree.structure(other)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other)):
    np.testing.assert_array_equal(a, b)  # a checkpoint of one loads into the other
  outputs_and_grads = jax.jit(lambda p: [
      (module.apply(p, x), jax.grad(lambda p: jnp.sum(jnp.sin(module.apply(p, x))))(p))
      for module in (matmul, xla)])
  (got, got_grads), (expected, expected_grads) = outputs_and_grads(params)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)
  for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(expected_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_resnet_passes_the_choice_to_every_block():
  module = resnet.resnet18(filters=8, norm_groups=4, conv_impl="matmul")
  x = jnp.zeros((1, 16, 16, 3))
  params = jax.eval_shape(module.init, jax.random.key(0), x)
  jaxpr = str(jax.make_jaxpr(lambda p: module.apply(p, x))(params))
  assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr


@pytest.mark.parametrize("impl,backend,expected", [
    ("auto", "cpu", False), ("matmul", "cpu", False), ("xla", "cpu", True),
    ("auto", "gpu", False), ("xla", "gpu", False)])
def test_auto_unrolls_only_xla_convolutions_on_cpu(impl, backend, expected):
  assert train.unroll_steps("auto", "convnet4", backend, conv_impl=impl) is expected
