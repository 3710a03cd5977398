"""Tests for siamese_jax.data: real official files (../shared/data, Debian's Fashion-MNIST) and
tiny generated fixtures for every error path. tfds always prepares into a pytest tmp folder, never
~/tensorflow_datasets, and ``download=False`` keeps the tests offline even with a network."""

import gzip
import io
import logging
import pathlib
import shutil
import time
import zipfile

import numpy as np
import PIL.Image
import pytest

from siamese_jax import data, splits
from siamese_jax.data import files, official
from siamese_jax.idx import DataFileError
from tests.helpers import SHARED_DATA

FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _no_user_places(monkeypatch):
  for var in ("SIAMESE_JAX_MNIST_DIR", "SIAMESE_JAX_FASHION_MNIST_DIR", "SIAMESE_JAX_OMNIGLOT_DIR"):
    monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def shared_tfds_dir(tmp_path_factory) -> pathlib.Path:
  """One tfds data_dir for the tests that prepare real data (each dataset is prepared once)."""
  return tmp_path_factory.mktemp("tfds")


def _require(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    pytest.skip(f"{path} not found (see ../shared/data/README.md; "
                "apt-get install dataset-fashion-mnist)")
  return path


def _sorted_by_bytes(images, labels):
  """Images [N, ...] and labels in a canonical order, to compare sets of examples."""
  keys = [img.tobytes() for img in images]
  order = sorted(range(len(keys)), key=keys.__getitem__)
  return images[order], labels[order]


def _write_idx(path: pathlib.Path, array: np.ndarray, gz: bool = True, magic: bytes | None = None):
  header = (magic or bytes([0, 0, 0x08, array.ndim])) + b"".join(
      int(n).to_bytes(4, "big") for n in array.shape)
  raw = header + array.astype(np.uint8).tobytes()
  path.write_bytes(gzip.compress(raw, 1) if gz else raw)
  return path


def _idx_folder(folder: pathlib.Path, n_train=5, n_test=3, size=28, n_train_labels=None):
  """A folder with the four MNIST file names holding tiny (non-official) arrays."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, size, size)))
    n_labels = n_train_labels if prefix == "train" and n_train_labels is not None else n
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n_labels,)))
  return folder


def _png(size=105) -> bytes:
  buf = io.BytesIO()
  PIL.Image.fromarray(np.full((size, size), 255, np.uint8)).convert("1").save(buf, format="PNG")
  return buf.getvalue()


def _omniglot_zip(path: pathlib.Path, members: dict[str, bytes]) -> pathlib.Path:
  with zipfile.ZipFile(path, "w") as archive:
    for name, content in members.items():
      archive.writestr(name, content)
  return path


def _assert_one_line_naming(error, path):
  message = str(error.value)
  assert "\n" not in message and str(path) in message, message


# ---------------------------------------------------------------------------------- real data


def test_mnist_falls_back_to_the_embedded_sample(shared_tfds_dir, caplog, monkeypatch):
  monkeypatch.setattr(official, "_NOTICES_GIVEN", set())
  with caplog.at_level(logging.WARNING):
    train = data.load("mnist", "train", data_dir=shared_tfds_dir, download=False)
    test = data.load("mnist", "test", data_dir=shared_tfds_dir, download=False)
  assert "embedded MNIST sample" in train.source and "source_dir" in caplog.text
  assert caplog.text.count("Using the embedded MNIST sample") == 1  # once, not once per split
  assert train.images.shape == (8000, 28, 28, 1) and test.images.shape == (2000, 28, 28, 1)
  assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
  assert train.num_classes == 10
  # The documented rule: first 8,000 of the official test files are train, the last 2,000 test.
  images, labels = files.read_idx_pair(files.SAMPLE_DIR, *files.MNIST.parts["test"], 10)
  for part, lo, hi in ((train, 0, 8000), (test, 8000, 10000)):
    got = _sorted_by_bytes(part.images[..., 0], part.labels)
    want = _sorted_by_bytes(images[lo:hi], labels[lo:hi])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_embedded_sample_is_the_official_mnist_test_set():
  for spec in files.MNIST.parts["test"]:
    assert files.sha256((files.SAMPLE_DIR / (spec.stem + ".gz")).read_bytes()) == spec.gz_sha256


def test_second_load_reads_the_prepared_tfds_dataset(shared_tfds_dir):
  data.load("mnist", "test", data_dir=shared_tfds_dir, download=False)
  again = data.load("mnist", "test", data_dir=shared_tfds_dir, download=False)
  assert "siamese_jax_idx/mnist_sample" in again.source
  prepared = shared_tfds_dir / "siamese_jax_idx" / "mnist_sample" / "1.0.0"
  assert (prepared / "dataset_info.json").is_file()


@pytest.mark.slow  # prepares all 70,000 images
def test_fashion_mnist_found_in_debian_folder_and_exact(shared_tfds_dir):
  _require(FASHION_DIR)
  test = data.load("fashion_mnist", "test", data_dir=shared_tfds_dir, download=False)
  assert str(FASHION_DIR) in test.source
  assert test.images.shape == (10000, 28, 28, 1) and test.class_names[0] == "T-shirt/top"
  images, labels = files.read_idx_pair(FASHION_DIR, *files.FASHION_MNIST.parts["test"], 10)
  got, want = _sorted_by_bytes(test.images[..., 0], test.labels), _sorted_by_bytes(images, labels)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  train = data.load("fashion_mnist", "train", data_dir=shared_tfds_dir, download=False)
  assert "prepared in" in train.source
  assert train.images.shape == (60000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))


def test_debian_fashion_mnist_verifies_on_decompressed_bytes():
  _require(FASHION_DIR)
  spec = files.FASHION_MNIST.parts["test"][1]
  raw = (FASHION_DIR / (spec.stem + ".gz")).read_bytes()
  assert files.sha256(raw) != spec.gz_sha256  # Debian re-compressed the archive ...
  assert files.sha256(gzip.decompress(raw)) == spec.sha256  # ... but not its content.


def test_plain_and_gzipped_idx_both_verify(tmp_path):
  folder = _require(SHARED_DATA / "mnist")
  for spec in files.MNIST.parts["test"]:
    (tmp_path / spec.stem).write_bytes(gzip.decompress((folder / (spec.stem + ".gz")).read_bytes()))
  plain = files.read_idx_pair(tmp_path, *files.MNIST.parts["test"], 10)
  gzipped = files.read_idx_pair(folder, *files.MNIST.parts["test"], 10)
  np.testing.assert_array_equal(plain[0], gzipped[0])
  assert plain[0].shape == (10000, 28, 28) and plain[1].dtype == np.int32


@pytest.mark.parametrize("split,n,n_classes,alphabets", [
    ("small1", 2720, 136, ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]),
    ("small2", 3120, 156, ["Greek", "Japanese_(katakana)", "Latin", "Sanskrit", "Tagalog"]),
])
def test_omniglot_small_splits(shared_tfds_dir, split, n, n_classes, alphabets):
  folder = _require(SHARED_DATA / "omniglot")
  full = data.load("omniglot", split, data_dir=shared_tfds_dir, source_dir=folder, download=False)
  assert full.images.shape == (n, 105, 105, 1) and set(np.unique(full.images)) == {0, 255}
  assert full.num_classes == n_classes and full.group_names == alphabets  # groups: alphabets
  np.testing.assert_array_equal(np.bincount(full.labels), np.full(n_classes, 20))
  # A character belongs to one alphabet, and its name says which.
  for c in range(n_classes):
    (alphabet,) = np.unique(full.groups[full.labels == c])
    assert full.class_names[c].startswith(alphabets[alphabet] + "/character")
  small = data.load("omniglot", split, data_dir=shared_tfds_dir, image_size=28, download=False)
  assert small.images.shape == (n, 28, 28, 1) and small.images.dtype == np.uint8
  np.testing.assert_array_equal(small.labels, full.labels)
  assert "prepared in" in small.source


def test_omniglot_unseen_alphabets_of_small2(shared_tfds_dir):
  _require(SHARED_DATA / "omniglot")
  small1 = data.load("omniglot", "small1", data_dir=shared_tfds_dir, image_size=28, download=False)
  small2 = data.load("omniglot", "small2", data_dir=shared_tfds_dir, image_size=28, download=False)
  unseen = splits.without_groups(small2, small1.group_names)
  assert unseen.group_names == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
  assert not set(unseen.group_names) & set(small1.group_names)
  assert unseen.num_classes == len(np.unique(unseen.labels)) == unseen.labels.max() + 1
  assert len(unseen.labels) == 20 * unseen.num_classes == len(unseen.images)
  for c in range(unseen.num_classes):  # class names and alphabets still agree after renumbering
    (alphabet,) = np.unique(unseen.groups[unseen.labels == c])
    assert unseen.class_names[c].startswith(unseen.group_names[alphabet] + "/")
  with pytest.raises(data.DataFileError, match="also in the training split"):
    splits.without_groups(small1, small1.group_names)


def test_batched_reader_matches_tfds_as_dataset(shared_tfds_dir):
  import tensorflow_datasets as tfds
  from siamese_jax.data import builders
  data.load("mnist", "test", data_dir=shared_tfds_dir, download=False)
  builder = builders.tfds_builder("siamese_jax_idx", str(shared_tfds_dir), "mnist_sample")
  ours = builders.read_split(builder, "test")
  theirs = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1, shuffle_files=False))
  np.testing.assert_array_equal(ours["image"], theirs["image"])
  np.testing.assert_array_equal(ours["label"], theirs["label"])


def test_encode_png_round_trips():
  from siamese_jax.data import builders
  image = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
  decoded = PIL.Image.open(io.BytesIO(builders.encode_png(image)))
  np.testing.assert_array_equal(np.asarray(decoded), image)


# ------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("name,split,size", [("cifar", "train", None), ("mnist", "small1", None),
                                             ("mnist", "train", 0)])
def test_bad_arguments(name, split, size):
  with pytest.raises(ValueError, match="data.load"):
    data.load(name, split, image_size=size)


def test_network_check_gives_up_within_its_timeout():
  start = time.monotonic()
  assert not files.network_reachable("https://10.255.255.1/", timeout=0.2)  # never answers
  assert time.monotonic() - start < 1.0


# --------------------------------------------------------------------------------- error paths


def test_missing_source_folder(tmp_path):
  with pytest.raises(DataFileError) as error:
    data.load("fashion_mnist", "train", data_dir=tmp_path / "tfds", source_dir=tmp_path / "nope")
  _assert_one_line_naming(error, tmp_path / "nope")
  assert not (tmp_path / "tfds").exists()


def test_missing_files_in_source_folder(tmp_path):
  folder = _idx_folder(tmp_path / "src")
  (folder / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(DataFileError, match="t10k-labels-idx1-ubyte") as error:
    data.load("mnist", "train", data_dir=tmp_path / "tfds", source_dir=folder)
  _assert_one_line_naming(error, folder)


def test_nothing_found_names_the_files_and_places(tmp_path, monkeypatch):
  monkeypatch.setenv("SIAMESE_JAX_OMNIGLOT_DIR", str(tmp_path))
  with pytest.raises(DataFileError, match="images_evaluation.zip") as error:
    data.load("omniglot", "test", data_dir=tmp_path / "tfds", download=False)
  _assert_one_line_naming(error, tmp_path)


@pytest.mark.parametrize("break_file,expected", [
    (lambda p: p.write_bytes(p.read_bytes()[:40]), "decompress"),  # truncated archive
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-7])), "truncated"),
    (lambda p: _write_idx(p, np.zeros((5, 28, 28)), magic=b"\x12\x34\x08\x03"), "magic"),
])
def test_broken_idx_file(tmp_path, break_file, expected):
  folder = _idx_folder(tmp_path / "src")
  path = folder / "train-images-idx3-ubyte.gz"
  break_file(path)
  with pytest.raises(DataFileError, match=expected) as error:
    files.read_idx_pair(folder, *files.MNIST.parts["train"], 10)
  _assert_one_line_naming(error, path)


@pytest.mark.parametrize("kwargs,culprit,expected", [
    (dict(size=32), "train-images-idx3-ubyte.gz", "shape"),
    (dict(n_train_labels=4), "train-labels-idx1-ubyte.gz", "4 labels"),
    (dict(), "train-images-idx3-ubyte.gz", "official file has 60000"),
])
def test_wrong_idx_content(tmp_path, kwargs, culprit, expected):
  folder = _idx_folder(tmp_path / "src", **kwargs)
  with pytest.raises(DataFileError, match=expected) as error:
    files.read_idx_pair(folder, *files.MNIST.parts["train"], 10)
  _assert_one_line_naming(error, folder / culprit)


def test_label_out_of_range(tmp_path):
  folder = _idx_folder(tmp_path / "src")
  _write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(5, 10))
  with pytest.raises(DataFileError, match="out of range") as error:
    files.read_idx_pair(folder, *files.MNIST.parts["train"], 10)
  _assert_one_line_naming(error, folder / "train-labels-idx1-ubyte.gz")


def test_checksum_mismatch(tmp_path):
  source = _require(SHARED_DATA / "mnist")
  for spec in files.MNIST.parts["test"]:
    shutil.copy(source / (spec.stem + ".gz"), tmp_path)
  path = tmp_path / "t10k-images-idx3-ubyte.gz"
  raw = bytearray(gzip.decompress(path.read_bytes()))
  raw[1000] ^= 0xFF  # one pixel changed: same size, same shape
  path.write_bytes(gzip.compress(bytes(raw), 1))
  with pytest.raises(DataFileError, match="sha256") as error:
    files.read_idx_pair(tmp_path, *files.MNIST.parts["test"], 10)
  _assert_one_line_naming(error, path)


def test_failed_preparation_leaves_nothing_behind(tmp_path):
  folder = _idx_folder(tmp_path / "src")  # all files present, but not the official ones
  tfds_dir = tmp_path / "tfds"
  with pytest.raises(DataFileError, match="official file has 60000"):
    data.load("fashion_mnist", "train", data_dir=tfds_dir, source_dir=folder, download=False)
  assert not tfds_dir.exists() or not any(tfds_dir.rglob("*")), list(tfds_dir.rglob("*"))
  (tfds_dir / "other").mkdir(parents=True)  # an existing data_dir keeps what was there before
  with pytest.raises(DataFileError):
    data.load("fashion_mnist", "train", data_dir=tfds_dir, source_dir=folder, download=False)
  assert sorted(tfds_dir.rglob("*")) == [tfds_dir / "other"]


_OK = "images_background_small1/Latin/character01/0001_01.png"


@pytest.mark.parametrize("members,expected", [
    ({"images_background_small1/Latin/0001_01.png": _png()}, "is not"),  # layout
    ({"images_background_small1/Klingon/character01/0001_01.png": _png()}, "is not"),
    ({_OK: _png(28)}, r"\(28, 28\)"),  # wrong image shape
    ({_OK: b"not a png"}, "not a PNG"),
    ({_OK: _png()}, "sha256"),  # well formed, not official
    ({"readme.txt": b"hello"}, "no PNG"),
])
def test_broken_omniglot_zip(tmp_path, members, expected):
  path = _omniglot_zip(tmp_path / "images_background_small1.zip", members)
  with pytest.raises(DataFileError, match=expected) as error:
    files.read_omniglot_zip(path)
  _assert_one_line_naming(error, path)


def test_truncated_omniglot_zip_fails_load_cleanly(tmp_path):
  official = _require(SHARED_DATA / "omniglot" / "images_background_small1.zip")
  path = tmp_path / "src" / official.name
  path.parent.mkdir()
  path.write_bytes(official.read_bytes()[:50000])
  with pytest.raises(DataFileError, match="zip") as error:
    data.load("omniglot", "small1", data_dir=tmp_path / "tfds", source_dir=path.parent,
              download=False)
  _assert_one_line_naming(error, path)
  assert not (tmp_path / "tfds").exists()


def test_failed_preparation_keeps_other_configs(tmp_path):
  tfds_dir = tmp_path / "tfds"
  data.load("mnist", "test", data_dir=tfds_dir, download=False)  # siamese_jax_idx/mnist_sample
  before = sorted(tfds_dir.rglob("*"))
  with pytest.raises(DataFileError):
    data.load("fashion_mnist", "train", data_dir=tfds_dir, source_dir=_idx_folder(tmp_path / "src"))
  assert sorted(tfds_dir.rglob("*")) == before


def test_fresh_offline_prepare_prints_no_tfds_notices(tmp_path, capfd, caplog, monkeypatch):
  """What main.py does on a fresh offline machine (train then test of the embedded sample): no
  "Variant folder ... has no dataset_info.json", no "Downloading and preparing dataset" (issue 18)."""
  monkeypatch.setattr(official, "_NOTICES_GIVEN", set())
  with caplog.at_level(logging.INFO):
    data.load("mnist", "train", data_dir=tmp_path / "tfds", download=False)
    data.load("mnist", "test", data_dir=tmp_path / "tfds", download=False)
  captured = capfd.readouterr()
  for text in (captured.out, captured.err, caplog.text):
    assert "has no dataset_info.json" not in text
    assert "Downloading and preparing dataset" not in text
    assert "Subsequent calls will reuse this data" not in text
  assert "Using the embedded MNIST sample" in caplog.text  # the project's own notice stays
