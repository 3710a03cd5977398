"""experiments/cars196.py: the config validates as it is and as its tiny variant, and (slow) it
trains end to end on a tiny folder of colour JPEGs (the tfds data is not on this machine)."""

import json

import numpy as np
import PIL.Image
import pytest

from experiments import cars196, default
from siamese_jax import config_checks, experiment, normalization


@pytest.mark.parametrize("variant", [None, "tiny"])
def test_the_config_validates(variant):
  config = cars196.get_config(variant)
  config_checks.validate(config)
  assert config.data.name == "cars196" and config.data.channels == 3
  assert config.model.encoder == "resnet18" and config.model.input_normalization == "per_channel"
  assert config.train.augment_crop == (0.35, 1.0) and config.train.augment_flip
  assert not config_checks.unused_keys(config)
  if variant == "tiny":
    assert config.train.steps_per_epoch == default.TINY["train.steps_per_epoch"]


def _write_colour_folder(root, classes=12, per_class=8, size=20):
  """``root/<class>/<i>.jpg``: each class a hue with noise, so classes can be told apart."""
  rng = np.random.default_rng(0)
  for c in range(classes):
    colour = rng.integers(30, 226, 3)
    folder = root / f"model_{c:02d}"
    folder.mkdir(parents=True)
    for i in range(per_class):
      pixels = np.clip(colour + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
      PIL.Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=95)


@pytest.mark.slow
def test_trains_on_a_tiny_colour_folder(tmp_path):
  """cars196:tiny on 12 classes of 8 JPEGs, half the classes held out as test, a small ResNet:
  the run finishes with finite metrics and its params carry the training part's channel stats."""
  _write_colour_folder(tmp_path / "images")
  config = cars196.get_config("tiny")
  default.override(config, {
      "data.name": "folder", "data.dir": str(tmp_path / "images"), "data.image_size": 16,
      "data.tfds_data_dir": str(tmp_path / "tfds"), "model.encoder": "resnet_small",
      "model.resnet_stage_sizes": (1, 1), "model.filters": 8, "model.norm_groups": 4,
      "model.embedding_dim": 16, "train.classes_per_batch": 4, "train.samples_per_class": 4,
      "train.steps_per_epoch": 4, "train.steps_per_call": 2, "plots.latent": False,
      "eval.pairs": 100})
  summary = experiment.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["splits"]["train"]["shape"][1:] == [16, 16, 3]
  assert np.isfinite(summary["final"]["train_loss"])
  assert 0.0 <= summary["test"]["roc_auc"] <= 1.0
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["model"]["input_normalization"] == "per_channel"
  from siamese_jax import checkpoints
  _, state = checkpoints.load_trained(tmp_path / "run")
  mean = np.asarray(state.params["encoder"][normalization.MEAN])
  assert mean.shape == (3,) and np.all(mean > 0.05) and np.all(mean < 0.95)
