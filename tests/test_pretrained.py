"""siamese_jax.pretrained: parity with timm / Hugging Face on weights made by
tests/fixtures/make_pretrained_reference.py (reduced-size networks with every key name and code
path of the full ones), the full architectures' key maps from their key lists, one-line errors,
and (slow) a fine-tune of a loaded ResNet-50-style backbone through main.py, then predict and
export."""

import json
import os
import pathlib
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from siamese_jax import config_keys, models, pretrained
from siamese_jax.pretrained import keymaps, tower, vit
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "pretrained"
SMALL_RESNET = {"stage_sizes": (2, 1, 1, 1), "widths": (8, 16, 32, 64)}
SMALL_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "pos_grid": (4, 4)}
# fixture -> (architecture whose code and key map it exercises, its reduced sizes, .npz)
CASES = {
    "resnet_basic": ("resnet18", SMALL_RESNET, "resnet_basic"),
    "resnet_bottleneck": ("resnet50", SMALL_RESNET, "resnet_bottleneck"),
    "vit": ("vit_small_patch16_224", SMALL_VIT, "vit"),
    "dinov2": ("vit_small_patch14_dinov2", SMALL_VIT, "dinov2"),
    "dinov2_hf": ("vit_base_patch14_dinov2", SMALL_VIT, "dinov2_hf"),  # the hub's names
    "dinov2_hf5": ("vit_base_patch14_dinov2", SMALL_VIT, "dinov2_hf"),  # transformers 5's
    "convnext": ("convnext_tiny", {"depths": (2, 1, 1, 1), "dims": (8, 16, 24, 32)}, "convnext"),
}
# Hugging Face's full DINOv2 key lists -> the architecture they load into.
HF_ARCH = {"facebook/dinov2-small": "vit_small_patch14_dinov2",
           "facebook/dinov2-base": "vit_base_patch14_dinov2"}


def _relative_error(got, want) -> float:
  return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("case", list(CASES))
def test_features_match_the_pytorch_networks(case):
  """At the checkpoint's own input size and at others (position embeddings resampled up and
  down, timm's antialiased bicubic or Hugging Face's plain one): within 1e-5 of the features'
  scale (measured: <= 4e-7)."""
  arch, fields, reference = CASES[case]
  module, variables = pretrained.load(arch, FIXTURES / f"{case}.safetensors", **fields)
  expected = np.load(FIXTURES / f"{reference}.npz")
  sizes = [name[1:] for name in expected.files if name.startswith("x")]
  assert len(sizes) >= 2
  for size in sizes:
    got = module.apply(variables, expected[f"x{size}"])
    assert got.shape == expected[f"features{size}"].shape
    assert _relative_error(got, expected[f"features{size}"]) < 1e-5, (case, size)


def test_hf_weights_resample_as_hugging_face_and_timm_weights_as_timm():
  """The two resamplings differ (else the HF case above would not test the choice)."""
  module, _ = pretrained.load("vit_small_patch14_dinov2", FIXTURES / "dinov2_hf.safetensors",
                              **SMALL_VIT)
  assert module.pos_interpolation == "hf"
  assert not np.allclose(vit.resize_matrix(4, 6, True), vit.resize_matrix(4, 6, False))
  for antialias in (True, False):
    for n_in, n_out in ((37, 16), (4, 6), (5, 5)):
      m = vit.resize_matrix(n_in, n_out, antialias)
      np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)  # a constant stays constant
    np.testing.assert_allclose(vit.resize_matrix(5, 5, antialias), np.eye(5), atol=1e-12)


def _zeros(shape):
  return np.broadcast_to(np.float32(0), tuple(shape))  # no memory for a 350 MB checkpoint


@pytest.mark.parametrize("name", list(json.loads((FIXTURES / "keys.json").read_text())))
def test_full_size_key_maps(name):
  """Every parameter of the full architecture comes from a key of timm's (or Hugging Face's)
  state dict with the right shape, and every key but the classifier's is used."""
  keys = json.loads((FIXTURES / "keys.json").read_text())[name]
  arch = HF_ARCH.get(name, name)
  module = pretrained.build(arch)
  shapes = pretrained.param_shapes(module)
  flat = keymaps.convert({k: _zeros(s) for k, s in keys.items()}, shapes, arch)
  assert set(flat) == set(shapes)
  assert sum(int(np.prod(s)) for s in shapes.values()) > 10_000_000


@pytest.mark.skipif(not os.environ.get("SIAMESE_JAX_PRETRAINED_FULL"),
                    reason="set SIAMESE_JAX_PRETRAINED_FULL to the --full folder of "
                           "make_pretrained_reference.py")
@pytest.mark.parametrize("name", [*pretrained.ARCHITECTURES, *HF_ARCH])
def test_full_size_features(name):
  folder = pathlib.Path(os.environ["SIAMESE_JAX_PRETRAINED_FULL"])
  module, variables = pretrained.load(HF_ARCH.get(name, name),
                                      folder / f"{name.replace('/', '_')}.safetensors")
  expected = np.load(folder / f"{name.replace('/', '_')}.npz")
  # measured: 1.4e-5 convnext_tiny (18 blocks of depthwise convs), <= 1.1e-6 the others
  assert _relative_error(module.apply(variables, expected["x224"]),
                         expected["features224"]) < 1e-4


@pytest.fixture(scope="module")
def resnet_state():
  return load_file(str(FIXTURES / "resnet_bottleneck.safetensors"))


def _one_line_error(tmp_path, state, match):
  save_file(state, str(tmp_path / "w.safetensors"))
  with pytest.raises(pretrained.WeightsError, match=match) as error:
    pretrained.load("resnet50", tmp_path / "w.safetensors", **SMALL_RESNET)
  assert "\n" not in str(error.value) and "resnet50" in str(error.value)


def test_a_missing_key_is_named(tmp_path, resnet_state):
  state = {k: v for k, v in resnet_state.items() if k != "layer2.0.downsample.1.running_var"}
  _one_line_error(tmp_path, state, r"lacks key 'layer2\.0\.downsample\.1\.running_var'")


def test_an_extra_key_is_named_and_the_classifier_is_not(tmp_path, resnet_state):
  assert "fc.weight" in resnet_state and "bn1.num_batches_tracked" in resnet_state  # ignored
  extra = {**resnet_state, "layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)}
  _one_line_error(tmp_path, extra, r"has key 'layer5\.0\.conv1\.weight' that the architecture")


def test_a_misshaped_key_is_named(tmp_path, resnet_state):
  state = {**resnet_state, "layer3.0.conv2.weight": np.zeros((32, 32, 1, 3), np.float32)}
  _one_line_error(tmp_path, state, r"key layer3\.0\.conv2\.weight \(32, 32, 1, 3\) does not fit")


def test_other_files_and_names(tmp_path):
  with pytest.raises(pretrained.WeightsError, match="unknown pretrained architecture 'resnet51'"):
    pretrained.load("resnet51", FIXTURES / "vit.safetensors")
  _one_line_error(tmp_path, {"w": np.zeros(3, np.float32)}, "no known layout")
  (tmp_path / "w.npy").write_bytes(b"x")
  with pytest.raises(pretrained.WeightsError, match=r"expected \.safetensors"):
    pretrained.load("resnet50", tmp_path / "w.npy")
  (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(pretrained.WeightsError, match="not a readable safetensors"):
    pretrained.load("resnet50", tmp_path / "bad.safetensors")


def test_a_pytorch_state_dict_loads_where_torch_is_installed(tmp_path, resnet_state):
  torch = pytest.importorskip("torch")
  torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in resnet_state.items()}},
             tmp_path / "w.pth")
  module, variables = pretrained.load("resnet50", tmp_path / "w.pth", **SMALL_RESNET)
  expected = np.load(FIXTURES / "resnet_bottleneck.npz")
  assert _relative_error(module.apply(variables, expected["x64"]), expected["features64"]) < 1e-5


def _tower_config(**changes):
  config = config_keys.get_config()
  config_keys.override(config, {"model.encoder": "resnet50", "model.embedding_dim": 8,
                                "model.backbone_args": "stage_sizes=(2, 1, 1, 1), "
                                                       "widths=(8, 16, 32, 64)", **changes})
  return config


def test_the_tower_normalises_repeats_grey_and_loads_the_backbone():
  """The tower's backbone gets (x - ImageNet mean) / std of the [0, 1] images (a grey image as
  three equal channels), with the checkpoint's weights (the embedding layer stays random)."""
  config = _tower_config()
  encoder = models.build_encoder(config.model)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
  params = encoder.init(jax.random.key(0), images)["params"]
  params = models.ENCODERS["resnet50"].load_weights(
      str(FIXTURES / "resnet_bottleneck.safetensors"), params)
  module, variables = pretrained.load("resnet50", FIXTURES / "resnet_bottleneck.safetensors",
                                      **SMALL_RESNET)
  normalised = (jnp.repeat(images, 3, -1) - jnp.asarray(tower.IMAGENET_MEAN)) / jnp.asarray(
      tower.IMAGENET_STD)
  features = module.apply(variables, normalised)
  dense = params["embedding"]
  np.testing.assert_allclose(encoder.apply({"params": params}, images),
                             features @ dense["kernel"] + dense["bias"], rtol=2e-5, atol=2e-5)
  np.testing.assert_array_equal(encoder.apply({"params": params}, images),
                                encoder.apply({"params": params}, jnp.repeat(images, 3, -1)))


def test_bfloat16_computes_in_bfloat16_with_float32_params():
  config = _tower_config(**{"model.dtype": "bfloat16", "model.pooling": "gem"})
  encoder = models.build_encoder(config.model)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  params = encoder.init(jax.random.key(0), images)["params"]
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  assert "gem_p" in params["backbone"]
  full = models.build_encoder(_tower_config(**{"model.pooling": "gem"}).model)
  low, high = encoder.apply({"params": params}, images), full.apply({"params": params}, images)
  assert low.dtype == jnp.float32 and not np.array_equal(low, high)
  assert _relative_error(low, np.asarray(high)) < 0.1


def test_freeze_stage_labels():
  """'stage2' freezes the stem and stages 1-2 of a ResNet; a ViT's 12 blocks are 4 stages of 3;
  the embedding layer is always the head; an encoder without stages refuses 'stageN'."""
  def labels(config):
    model = models.build_model(config.model)
    x = jnp.zeros((1, 32, 32, 3))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, x, train=False))["params"]
    return flax.traverse_util.flatten_dict(models.param_labels(config.model, params), sep="/")

  flat = labels(_tower_config(**{"model.freeze": "stage2"}))
  assert flat["encoder/backbone/conv1/kernel"] == "frozen"
  assert flat["encoder/backbone/layer2_0/conv2/kernel"] == "frozen"
  assert flat["encoder/backbone/layer3_0/conv2/kernel"] == "backbone"
  assert flat["encoder/embedding/kernel"] == "head"
  flat = labels(_tower_config(**{"model.freeze": "stage1", "model.encoder": "vit_small_patch16_224",
                                 "model.backbone_args": None}))
  assert flat["encoder/backbone/blocks_2/attn/qkv/kernel"] == "frozen"
  assert flat["encoder/backbone/blocks_3/attn/qkv/kernel"] == "backbone"
  assert flat["encoder/backbone/norm/scale"] == "backbone"
  config = config_keys.get_config()
  config_keys.override(config, {"model.encoder": "convnet4", "model.freeze": "stage1"})
  with pytest.raises(ValueError, match="needs an encoder with stages"):
    labels(config)


@pytest.mark.slow
def test_fine_tune_through_main_then_predict_and_export(tmp_path):
  """cars196_pretrained:tiny from the reduced ResNet-50 checkpoint on a tiny colour folder:
  finite, falling training loss; with model.freeze='backbone' the backbone is bit-identical to
  the checkpoint after training; predict embeds and export writes the model."""
  import PIL.Image
  rng = np.random.default_rng(0)
  for c in range(24):
    colour = rng.integers(30, 226, 3)
    (tmp_path / "images" / f"c{c}").mkdir(parents=True)
    for i in range(5):
      pixels = np.clip(colour + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
      PIL.Image.fromarray(pixels).save(tmp_path / "images" / f"c{c}" / f"{i}.png")
  flags = ["--config", "experiments/cars196_pretrained.py:tiny", "--config.data.name=folder",
           f"--config.data.dir={tmp_path / 'images'}", "--config.plots.latent=False",
           "--config.eval.pairs=100", "--config.train.epochs=4", "--config.train.steps_per_call=6",
           "--config.optimizer.learning_rate=1e-3", "--config.optimizer.schedule=constant",
           f"--config.data.tfds_data_dir={tmp_path / 'tfds'}", "--config.train.unroll=never",
           f"--config.model.pretrained={FIXTURES / 'resnet_bottleneck.safetensors'}",
           "--config.model.backbone_args=stage_sizes=(2,1,1,1),widths=(8,16,32,64)"]
  def start(workdir, *extra):
    with open(tmp_path / f"{workdir.name}.log", "w") as log:  # the child keeps its own copy
      return subprocess.Popen(
          [sys.executable, "main.py", *flags, "--workdir", str(workdir), *extra],
          cwd=helpers.REPO_ROOT, env=helpers.repo_env(), stdout=subprocess.DEVNULL, stderr=log)
  # Both runs at once: much of each is XLA compiling, on one core.
  children = [start(tmp_path / "run"), start(tmp_path / "frozen", "--config.model.freeze=backbone",
                                              "--config.train.epochs=1")]
  try:
    for child, name in zip(children, ("run", "frozen")):
      assert child.wait(timeout=900) == 0, (tmp_path / f"{name}.log").read_text()[-2000:]
  finally:
    for child in children:
      child.kill()  # one still running after the other failed
      child.wait()
  losses = [json.loads(line)["train_loss"]
            for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert len(losses) == 4 and np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses

  from siamese_jax import checkpoints, export, predict
  assert predict.main(["embed", "--workdir", str(tmp_path / "run"), "--out",
                       str(tmp_path / "emb.npz"), str(tmp_path / "images" / "c0")]) == 0
  with np.load(tmp_path / "emb.npz") as saved:
    embeddings = saved["embeddings"]
  assert embeddings.shape == (5, 16) and np.all(np.isfinite(embeddings))
  assert export.main(["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "export"),
                      "--no_saved_model"]) == 0
  assert (tmp_path / "export" / "embed.jax").exists()

  _, state = checkpoints.load_trained(tmp_path / "frozen")
  module, loaded = pretrained.load("resnet50", FIXTURES / "resnet_bottleneck.safetensors",
                                   **SMALL_RESNET)
  trained = state.params["encoder"]["backbone"]
  for got, want in zip(jax.tree.leaves(trained), jax.tree.leaves(loaded["params"])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("name", ["cub200", "cars196_pretrained", "sop"])
@pytest.mark.parametrize("variant", [None, "tiny"])
def test_the_reality_check_configs_validate(name, variant):
  import importlib

  from siamese_jax import config_checks
  config = importlib.import_module(f"experiments.{name}").get_config(variant)
  config_checks.validate(config)
  assert not config_checks.unused_keys(config)
  assert config.model.encoder == "resnet50"
  if variant == "tiny":
    assert config.data.image_size == 32 and config.model.backbone_args
  else:
    assert config.model.embedding_dim == 128 and config.model.backbone_args is None


def test_batchnorm_statistics_get_no_gradient_and_train_mode_changes_nothing():
  """Frozen BatchNorm: the running statistics' gradient is zero (so no optimiser of
  train.OPTIMIZERS moves them) while the weights' is not; train=True gives eval's output."""
  encoder = models.build_encoder(_tower_config().model)
  images = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  params = models.ENCODERS["resnet50"].load_weights(
      str(FIXTURES / "resnet_bottleneck.safetensors"),
      encoder.init(jax.random.key(0), images)["params"])
  np.testing.assert_array_equal(encoder.apply({"params": params}, images, train=True),
                                encoder.apply({"params": params}, images, train=False))
  grads = jax.grad(lambda p: jnp.sum(encoder.apply({"params": p}, images, train=True) ** 2))(params)
  flat = flax.traverse_util.flatten_dict(grads["backbone"], sep="/")
  stats = [name for name in flat if name.endswith(("/mean", "/var"))]
  assert len(stats) == 2 * sum(name.endswith("/scale") for name in flat) > 0
  assert all(not np.any(flat[name]) for name in stats)
  assert np.any(flat["layer1_0/conv1/kernel"]) and np.any(flat["bn1/scale"])


def test_training_configs_name_a_checkpoint_that_does_not_fit(tmp_path):
  """A PyTorch checkpoint for an encoder that is not a pretrained backbone is refused by the
  config check; a checkpoint of another architecture is a one-line CheckpointError naming it."""
  from siamese_jax import checkpoints, config_checks
  config = config_keys.get_config()
  config_keys.override(config, {"model.encoder": "convnet4",
                                "model.pretrained": str(FIXTURES / "vit.safetensors")})
  with pytest.raises(config_checks.ConfigError, match="loads into a pretrained backbone"):
    config_checks.validate(config)
  config = _tower_config(**{"model.backbone_args": "widths=(8, 16)x"})
  with pytest.raises(config_checks.ConfigError, match="model.backbone_args="):
    config_checks.validate(config)
  encoder = models.build_encoder(_tower_config().model)
  params = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  with pytest.raises(checkpoints.CheckpointError, match=r"model.pretrained=.*vit.safetensors.*"
                     r"resnet50: the checkpoint's keys are in the timm ViT/DINOv2 layout") as error:
    models.ENCODERS["resnet50"].load_weights(str(FIXTURES / "vit.safetensors"), params["params"])
  assert "\n" not in str(error.value)
