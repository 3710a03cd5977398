"""The data protocol on an image folder of each accepted layout (siamese_jax.data.protocol): which
split is the validation part, the line about test classes never trained on, and what a run prints
and records of each part. Images are the embedded MNIST sample's digits, written as PNGs."""

import logging

import numpy as np
import PIL.Image
import pytest

from siamese_jax import config_keys
from siamese_jax.data import files, protocol

NAMES = ["zero", "one", "two", "three", "four", "five"]


@pytest.fixture(scope="module")
def digits():
  """6 images of each digit 0..5 from MNIST's official test set: [6, 6, 28, 28] uint8."""
  images, labels = files.read_idx_pair(files.SAMPLE_DIR, *files.MNIST.parts["test"], 200)
  return np.stack([images[np.flatnonzero(labels == d)[:6]] for d in range(6)])


def _classes(root, digits, classes, per_class=6):
  for d in classes:
    (root / NAMES[d]).mkdir(parents=True)
    for i in range(per_class):
      PIL.Image.fromarray(digits[d, i]).save(root / NAMES[d] / f"{i}.png")


def _config(root, tmp_path, **changes):
  config = config_keys.get_config()
  return config_keys.override(config, {"data.name": "folder", "data.dir": str(root),
                                       "data.tfds_data_dir": str(tmp_path / "tfds"), **changes})


def test_a_val_folder_is_the_validation_part(tmp_path, digits):
  root = tmp_path / "faces"
  _classes(root / "train", digits, range(4))
  _classes(root / "val", digits, [4], per_class=3)
  _classes(root / "val", digits, [5], per_class=2)
  _classes(root / "test", digits, range(4), per_class=2)
  datasets = protocol.load_datasets(_config(root, tmp_path))
  assert len(datasets.train.labels) == 24  # the whole train/: nothing carved out of it
  assert datasets.validation.class_names == ["five", "four"] and len(datasets.validation.labels) == 5
  assert datasets.split == {"by": "classes", "split": "val", "seed": 0,
                            "validation_classes": ["five", "four"], "test": {"split": "test"}}
  described = protocol.describe(_config(root, tmp_path), datasets)
  assert described["validation"]["split"] == "val" and "held_out_of" not in described["validation"]
  assert described["validation"]["classes"] == ["five", "four"]
  assert described["train"]["classes"] == ["one", "three", "two", "zero"]
  assert described["test"]["shape"] == [8, 28, 28, 1]


def test_without_val_the_validation_part_is_held_out_of_train(tmp_path, digits):
  root = tmp_path / "faces"
  _classes(root / "training", digits, range(4))
  _classes(root / "testing", digits, range(4), per_class=2)
  config = _config(root, tmp_path, **{"data.validation_fraction": 0.4})
  datasets = protocol.load_datasets(config)
  assert datasets.split["by"] == "images" and "split" not in datasets.split
  assert len(datasets.train.labels) + len(datasets.validation.labels) == 24
  described = protocol.describe(config, datasets)
  assert described["validation"]["held_out_of"] == "train"
  assert described["validation"]["classes"] == ["one", "three", "two", "zero"]


@pytest.mark.parametrize("split_by,test_classes,expected", [
    ("images", [0, 1, 5], "1 of the 3 classes of the test split (five) have no training images"),
    ("images", [4, 5], "all of the 2 classes of the test split (five, four) have no training "),
    ("images", [0, 1], None),
    ("classes", [4, 5], None),
    ("classes", [0, 1, 5], "2 of the 3 classes of the test split (one, zero) are also training")])
def test_test_classes_that_break_split_by_are_one_warning(tmp_path, digits, caplog, split_by,
                                                          test_classes, expected):
  # a folder's test/ class missing from train/: said (it may be a misspelt class folder), and the
  # run goes on (a test/ of classes never trained on is sound; split_by='classes' declares it)
  root = tmp_path / "faces"
  _classes(root / "train", digits, range(4))
  _classes(root / "test", digits, test_classes, per_class=2)
  with caplog.at_level(logging.WARNING):
    protocol.load_datasets(_config(root, tmp_path, **{"data.split_by": split_by}))
  lines = [r.message for r in caplog.records if "split_by=" in r.message]
  if expected is None:
    assert not lines
  else:
    (line,) = lines
    assert expected in line and "\n" not in line


def test_counts_lines_give_classes_and_images_of_each_part(tmp_path, digits):
  root = tmp_path / "faces"
  _classes(root / "train", digits, range(4))
  _classes(root / "val", digits, [4, 5], per_class=3)
  _classes(root / "test", digits, [2, 3], per_class=2)
  lines = protocol.counts_lines(protocol.load_datasets(_config(root, tmp_path)))
  assert lines == ["training part: 4 classes, 24 images (one, three, two, zero)",
                   "validation part: 2 classes, 6 images (five, four)",
                   "test part: 2 classes, 4 images (three, two)"]
