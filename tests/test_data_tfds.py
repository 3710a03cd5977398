"""Tests for siamese_jax.data's route to any tfds image dataset by name, offline.

``tfds.testing.mock_data`` (tfds's own way to test without downloads) makes ``download_and_prepare``
a no-op and ``as_dataset`` yield deterministic random examples built from the builder's real
features, so the route runs whole: feature discovery, preparation call, reading, labels, channels.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from siamese_jax import data
from siamese_jax.data import files, pixels, tfds_images
from siamese_jax.idx import DataFileError

N = 64


def _assert_one_line(error, *parts):
  message = str(error.value)
  assert "\n" not in message, message
  for part in parts:
    assert str(part) in message, message


def _mocked_examples(name, split="train"):
  """The examples mock_data yields for ``name`` (call inside the mock): images and labels."""
  examples = list(tfds.as_numpy(tfds.load(name, split=split)))  # (batch_size=-1 aborts here)
  return (np.stack([ex["image"] for ex in examples]),
          np.asarray([ex["label"] for ex in examples]))


@pytest.mark.parametrize("name,shape,names", [
    ("emnist/balanced", (28, 28, 1), [str(i) for i in range(47)]),  # grey
    ("kmnist", (28, 28, 1), ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]),  # grey
    ("cifar10", (32, 32, 3), [str(i) for i in range(10)]),  # colour; names come with the data
])
def test_a_tfds_dataset_by_name(tmp_path, name, shape, names):
  with tfds.testing.mock_data(num_examples=N):
    got = data.load(name, "train", data_dir=tmp_path, download=True)
    images, labels = _mocked_examples(name)
  assert got.images.shape == (N, *shape) and got.images.dtype == np.uint8
  assert got.labels.shape == (N,) and got.labels.dtype == np.int32
  assert got.labels.min() == 0 and got.labels.max() == got.num_classes - 1
  assert got.num_classes == len(got.class_names) == len(np.unique(labels))
  # The classes present, in ClassLabel order, named by the ClassLabel; the examples in file order.
  assert got.class_names == [n for i, n in enumerate(names) if i in set(labels)]
  assert [got.class_names[i] for i in got.labels] == [names[i] for i in labels]
  np.testing.assert_array_equal(got.images, images)
  assert f"tfds {name.split('/')[0]}" in got.source


@pytest.mark.parametrize("name,channels,shape", [("cifar10", 1, (32, 32, 1)),
                                                 ("kmnist", 3, (28, 28, 3)),
                                                 ("cifar10", None, (32, 32, 3))])
def test_channels_convert(tmp_path, name, channels, shape):
  with tfds.testing.mock_data(num_examples=8):
    got = data.load(name, "test", data_dir=tmp_path, download=True, channels=channels)
    images, _ = _mocked_examples(name, "test")
  assert got.images.shape == (8, *shape)
  np.testing.assert_array_equal(got.images, pixels.to_channels(images, channels))


def test_image_size_resizes_by_area(tmp_path):
  with tfds.testing.mock_data(num_examples=8):
    got = data.load("cifar10", "train", data_dir=tmp_path, download=True, image_size=16)
    images, _ = _mocked_examples("cifar10")
  assert got.images.shape == (8, 16, 16, 3)
  # Area resizing by 2 is the mean of each 2x2 block, rounded.
  blocks = images.reshape(8, 16, 2, 16, 2, 3).astype(np.float32).mean(axis=(2, 4))
  np.testing.assert_array_equal(got.images, np.round(blocks).astype(np.uint8))


def test_images_of_varying_sizes_need_image_size(tmp_path):
  with tfds.testing.mock_data(num_examples=6):  # cars196: Image(shape=(None, None, 3)), random
    with pytest.raises(DataFileError, match="differ in size") as error:
      data.load("cars196", "train", data_dir=tmp_path, download=True)
    got = data.load("cars196", "train", data_dir=tmp_path, download=True, image_size=24)
  _assert_one_line(error, "image_size")
  assert got.images.shape == (6, 24, 24, 3) and got.num_classes == len(got.class_names)


def _fixed_examples(labels, size=12):
  """A stand-in for tfds's reader: ``labels`` with size x size images, under cars196's keys."""

  def as_dataset(self, *args, **kwargs):
    n = len(labels)
    return tf.data.Dataset.from_tensor_slices({
        "image": np.tile(np.arange(size * size, dtype=np.uint8).reshape(1, size, size, 1),
                         (n, 1, 1, 3)),
        "label": np.asarray(labels, np.int64), "bbox": np.zeros((n, 4), np.float32),
        "id": np.asarray(["x"] * n)})

  return as_dataset


def test_varying_sizes_that_turn_out_equal_need_no_image_size(tmp_path):
  with tfds.testing.mock_data(as_dataset_fn=_fixed_examples([5, 7, 5])):
    got = data.load("cars196", "test", data_dir=tmp_path, download=True)
  assert got.images.shape == (3, 12, 12, 3)
  np.testing.assert_array_equal(got.labels, [0, 1, 0])
  assert got.num_classes == 2 and len(got.class_names) == 2


def test_labels_out_of_range(tmp_path):
  with tfds.testing.mock_data(as_dataset_fn=_fixed_examples([3, 196])):
    with pytest.raises(DataFileError, match=r"label 196 is out of range \[0, 196\)") as error:
      data.load("cars196", "train", data_dir=tmp_path, download=True)
  _assert_one_line(error, "cars196", "'label'")


# ----------------------------------------------------------------------- which features are read


def _features(**kinds):
  made = {"image": lambda: tfds.features.Image(shape=(8, 8, 1)),
          "image16": lambda: tfds.features.Image(shape=(8, 8, 1), dtype=np.uint16),
          "class": lambda: tfds.features.ClassLabel(num_classes=3),
          "text": tfds.features.Text}
  return tfds.features.FeaturesDict({key: made[kind]() for key, kind in kinds.items()})


@pytest.mark.parametrize("features,supervised,kwargs,expected", [
    (dict(photo="image", kind="class", id="text"), None, {}, ("photo", "kind")),  # the only pair
    (dict(a="image", image="image", b="class", label="class"), None, {}, ("image", "label")),
    (dict(a="image", b="image", x="class", y="class"), ("b", "y"), {}, ("b", "y")),  # supervised
    (dict(a="image", b="image", x="class", y="class"), None, dict(image_key="a", label_key="x"),
     ("a", "x")),
])
def test_image_and_label_found(features, supervised, kwargs, expected):
  assert tfds_images.image_and_label_keys("ds", _features(**features), supervised,
                                          **kwargs) == expected


@pytest.mark.parametrize("features,kwargs,expected", [
    (dict(photo="image", id="text"), {}, "needs one ClassLabel"),  # no label at all
    (dict(a="image", b="image", y="class"), {}, r"several \(a, b\)"),
    (dict(photo="image", y="class"), dict(image_key="picture"), "image_key='picture' names no"),
    (dict(photo="image", y="class"), dict(label_key="photo"), "is a Image, not a ClassLabel"),
    (dict(photo="image16", y="class"), {}, "uint16, not uint8"),
])
def test_no_suitable_pair_is_one_line_naming_the_features(features, kwargs, expected):
  with pytest.raises(DataFileError, match=expected) as error:
    tfds_images.image_and_label_keys("ds", _features(**features), None, **kwargs)
  _assert_one_line(error, "ds:", *features)


def test_real_builders_features(tmp_path):
  """celeb_a has images but no ClassLabel; cifar10's image_key must name one of its features."""
  with pytest.raises(DataFileError, match="needs one ClassLabel") as error:
    data.load("celeb_a", "train", data_dir=tmp_path, download=False)
  _assert_one_line(error, "attributes: FeaturesDict", "image: Image")
  with pytest.raises(DataFileError, match="image_key='photo' names no feature") as error:
    data.load("cifar10", "train", data_dir=tmp_path, image_key="photo", download=False)
  _assert_one_line(error, "id: Text, image: Image, label: ClassLabel")
  assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ offline, names


def test_offline_fails_fast_with_what_to_do(tmp_path, monkeypatch):
  with pytest.raises(DataFileError, match="download=False") as error:
    data.load("cifar10", "train", data_dir=tmp_path / "tfds", download=False)
  _assert_one_line(error, tmp_path / "tfds", "tfds build cifar10")
  probed = []
  monkeypatch.setattr(files, "network_reachable", lambda url: probed.append(url) or False)
  with pytest.raises(DataFileError, match="www.cs.toronto.edu does not answer") as error:
    data.load("cifar10", "train", data_dir=tmp_path / "tfds")
  _assert_one_line(error, tmp_path / "tfds")
  assert probed == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
  assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("name", ["cifar", "emnist/no_such_config", "cifar10:9.9.9"])
def test_unknown_names_are_one_line(tmp_path, name):
  with pytest.raises(ValueError, match="data.load: unknown dataset") as error:
    data.load(name, "train", data_dir=tmp_path, download=False)
  _assert_one_line(error, repr(name), "tfds.list_builders()")


def test_unknown_split_of_a_prepared_dataset(tmp_path, monkeypatch):
  builder = tfds_images.builder("kmnist", tmp_path)
  monkeypatch.setattr(type(builder), "is_prepared", lambda self: True)
  monkeypatch.setattr(type(builder.info), "splits", property(lambda self: {"train": 1, "test": 2}))
  with pytest.raises(ValueError, match="no split 'validation'; use one of train, test") as error:
    data.load("kmnist", "validation", data_dir=tmp_path)
  _assert_one_line(error)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(name="mnist", image_key="image"), "image_key='image' is not read by mnist"),
    (dict(name="uci_digits", skip_bad_images=True), "skip_bad_images=True is not read by uci"),
    (dict(name="cifar10", channels=2), "channels=2"),
    (dict(name="folder"), "'folder' needs data.dir"),
    (dict(name="folder", source_dir=".", split_by="pixels"), "split_by='pixels'"),
    (dict(name="folder", source_dir=".", test_fraction=1.0), "test_fraction=1.0"),
])
def test_bad_arguments_are_one_line(kwargs, expected):
  with pytest.raises(ValueError, match=expected) as error:
    data.load(split="train", **kwargs)
  _assert_one_line(error, "data.load")


@pytest.mark.parametrize("name,split,known", [
    ("mnist", "train", True), ("mnist", "small1", False), ("omniglot", "small2", True),
    ("folder", "all", True), ("folder", "", False), ("cifar10", "train[:90%]", True),
    ("emnist/balanced", "test", True), ("cifar", "train", False)])
def test_is_known(name, split, known):
  assert data.is_known(name, split) is known


# ------------------------------------------------------------- a run under tfds's test double


def test_a_run_under_mock_data_with_data_download(tmp_path, monkeypatch):
  # a user's test of their pipeline: mock_data makes tfds's download a no-op, but the run asked
  # the network first (offline: "www.cs.toronto.edu does not answer"); data.download=True lets
  # tfds's (mocked) download_and_prepare answer instead
  from siamese_jax import config_keys, experiment
  monkeypatch.setattr(files, "network_reachable", lambda url: False)  # offline, as in CI
  config = config_keys.override(config_keys.get_config("tiny"), {
      "data.name": "cifar10", "data.tfds_data_dir": str(tmp_path / "tfds"),
      "data.image_size": (16, 12), "eval.pairs": 50, "plots.latent": False,
      "plots.animation": False})
  with tfds.testing.mock_data(num_examples=200):
    with pytest.raises(DataFileError, match="www.cs.toronto.edu does not answer"):
      experiment.train_and_evaluate(config, str(tmp_path / "offline"))
    config.data.download = True
    summary = experiment.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["splits"]["train"]["shape"][1:] == [16, 12, 3]
  assert summary["splits"]["test"]["classes"] == [str(i) for i in range(10)]
  assert np.isfinite(summary["test"]["roc_auc"])
