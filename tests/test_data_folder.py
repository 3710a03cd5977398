"""Tests for siamese_jax.data's image-folder route (``load("folder", split, source_dir=PATH)``):
layouts, formats, the errors, the decoded cache, and Omniglot unzipped into a folder giving the
same dataset as the Omniglot route. Images are made from the embedded MNIST sample's digits."""

import collections
import io
import logging
import os
import zipfile

import numpy as np
import PIL.Image
import pytest

from siamese_jax import data, splits
from siamese_jax.data import files, folders, pixels
from siamese_jax.idx import DataFileError

DIGIT_NAMES = ["zero", "one", "two", "three", "four"]


@pytest.fixture(scope="module")
def digits():
  """The first 4 digits of each class 0..4 of MNIST's official test set: [5, 4, 28, 28] uint8."""
  images, labels = files.read_idx_pair(files.SAMPLE_DIR, *files.MNIST.parts["test"], 10)
  return np.stack([images[np.flatnonzero(labels == d)[:4]] for d in range(5)])


def _save(path, array, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  PIL.Image.fromarray(array).save(path, **kwargs)
  return path


def _tinted(digit, size):
  """A colour version of a [28, 28] digit, resized to size x size: orange strokes on black."""
  grey = np.asarray(PIL.Image.fromarray(digit).resize((size, size), PIL.Image.BILINEAR))
  return np.stack([grey, grey * 0.6, grey * 0.2], axis=-1).astype(np.uint8)


def _digit_folder(root, digits, sizes=(28, 36, 44)):
  """root/<digit name>/<i>.jpg: colour JPEGs of mixed sizes; also .DS_Store and notes.txt."""
  for d, name in enumerate(DIGIT_NAMES):
    for i, digit in enumerate(digits[d]):
      _save(root / name / f"{i}.jpg", _tinted(digit, sizes[(d + i) % len(sizes)]), quality=95)
  (root / "one" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
  (root / "notes.txt").write_text("where these came from")
  (root / "two" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
  return root


def _grey_folder(root, digits, classes=3, per_class=3):
  """root/<digit name>/<i>.png: grey 28 x 28 PNGs."""
  for d in range(classes):
    for i in range(per_class):
      _save(root / DIGIT_NAMES[d] / f"{i}.png", digits[d, i])
  return root


def _assert_one_line(error, *parts):
  message = str(error.value)
  assert "\n" not in message, message
  for part in parts:
    assert str(part) in message, message


def _load(root, tmp_path, split="all", **kwargs):
  return data.load("folder", split, source_dir=root, data_dir=tmp_path / "tfds", **kwargs)


def _by_class(dataset):
  """class name -> sorted list of image bytes: a dataset as a multiset of images per class."""
  groups = collections.defaultdict(list)
  for image, label in zip(dataset.images, dataset.labels):
    groups[dataset.class_names[label]].append(image.tobytes())
  return {name: sorted(images) for name, images in groups.items()}


# ----------------------------------------------------------------------- colour JPEGs from MNIST


def test_colour_jpegs_of_mixed_sizes(tmp_path, digits, caplog):
  root = _digit_folder(tmp_path / "digits", digits)
  with pytest.raises(DataFileError, match="images of 3 sizes") as error:
    _load(root, tmp_path)
  _assert_one_line(error, root, "28x28", "image_size")
  with caplog.at_level(logging.INFO):
    got = _load(root, tmp_path, image_size=28)
  assert got.images.shape == (20, 28, 28, 3) and got.images.dtype == np.uint8
  assert got.class_names == sorted(DIGIT_NAMES) and got.num_classes == 5
  assert got.labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(got.labels), [4] * 5)
  skipped = [r.message for r in caplog.records if "skipped" in r.message]
  assert len(skipped) == 1, skipped  # one line for everything skipped
  assert "1 hidden (one/.DS_Store)" in skipped[0]
  assert "2 not images by extension (notes.txt, two/Thumbs.db)" in skipped[0]
  # Each image is its digit again: rows are in sorted file order within sorted class names.
  grey = _load(root, tmp_path, image_size=28, channels=1)
  assert grey.images.shape == (20, 28, 28, 1)
  for k, (image, label) in enumerate(zip(grey.images[..., 0], grey.labels)):
    digit = digits[DIGIT_NAMES.index(grey.class_names[label]), k % 4]
    assert np.corrcoef(image.ravel(), digit.ravel())[0, 1] > 0.95
  np.testing.assert_array_equal(grey.labels, got.labels)


def test_corrupt_image_is_an_error_or_skipped(tmp_path, digits, caplog):
  root = _digit_folder(tmp_path / "digits", digits)
  (root / "three" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  with pytest.raises(DataFileError, match="not a readable image") as error:
    _load(root, tmp_path, image_size=32)
  _assert_one_line(error, root / "three" / "broken.png", "skip_bad_images=True")
  for attempt in range(2):  # the second load reads the cache, and warns again
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      got = _load(root, tmp_path, image_size=32, skip_bad_images=True)
    assert got.images.shape == (20, 32, 32, 3)
    assert "left out 1 bad images" in caplog.text and "three/broken.png" in caplog.text
    assert ("decoded once" if attempt == 0 else "decoded earlier") in got.source


def test_truncated_image_is_caught_at_decoding(tmp_path, digits):
  root = _grey_folder(tmp_path / "digits", digits)
  raw = (root / "one" / "0.png").read_bytes()
  (root / "one" / "0.png").write_bytes(raw[:len(raw) // 2])  # header fine, data cut
  with pytest.raises(DataFileError, match="one/0.png: (does not decode|not a readable)") as error:
    _load(root, tmp_path)
  _assert_one_line(error)
  got = _load(root, tmp_path, skip_bad_images=True)
  assert len(got.labels) == 8


def test_grey_folder_keeps_one_channel_unless_asked(tmp_path, digits):
  root = _grey_folder(tmp_path / "digits", digits)
  got = _load(root, tmp_path)
  assert got.images.shape == (9, 28, 28, 1)
  by_name = _by_class(got)
  for d in range(3):  # PNG is lossless: exactly the digits
    assert by_name[DIGIT_NAMES[d]] == sorted(digits[d, i].tobytes() for i in range(3))
  colour = _load(root, tmp_path, channels=3)
  assert colour.images.shape == (9, 28, 28, 3)
  np.testing.assert_array_equal(colour.images, np.repeat(got.images, 3, axis=-1))


def test_formats_pillow_reads(tmp_path, digits):
  """BMP, WebP (lossless), GIF, TIFF, palette, RGBA and 16-bit PNG, mixed grey and colour."""
  root = tmp_path / "formats"
  d = digits[1, 0]
  rgb = _tinted(d, 28)
  _save(root / "a" / "1.bmp", rgb)
  _save(root / "a" / "2.webp", rgb, lossless=True)
  _save(root / "a" / "3.PNG", np.dstack([rgb, np.full((28, 28), 7, np.uint8)]))  # RGBA
  _save(root / "b" / "1.gif", d)
  _save(root / "b" / "2.tif", d)
  _save(root / "b" / "3.png", d.astype(np.uint16) * 257)  # 16-bit grey
  PIL.Image.fromarray(rgb).convert("P").save(root / "b" / "4.png")  # palette
  got = _load(root, tmp_path)
  assert got.images.shape == (7, 28, 28, 3) and got.class_names == ["a", "b"]
  a, b = got.images[got.labels == 0], got.images[got.labels == 1]
  for image in a:  # lossless: the colour image exactly, alpha dropped
    np.testing.assert_array_equal(image, rgb)
  for image in b[:3]:  # grey (GIF and TIFF of a grey image, and 16-bit scaled down) repeated
    np.testing.assert_array_equal(image, np.repeat(d[..., None], 3, axis=-1))
  assert np.abs(b[3].astype(int) - rgb).mean() < 8  # palette: quantised colours


def test_nothing_decoded_twice_and_a_change_is_seen(tmp_path, digits, monkeypatch):
  root = _grey_folder(tmp_path / "digits", digits)
  first = _load(root, tmp_path)
  caches = list((tmp_path / "tfds" / folders.CACHE_FOLDER).iterdir())
  assert [c.name.split("-")[0] for c in caches] == ["digits"]
  assert {p.name for p in caches[0].iterdir()} == {"images.npy", "labels.npy", "meta.json"}

  def no_decoding(*args, **kwargs):
    raise AssertionError("decoded again")

  monkeypatch.setattr(PIL.Image, "open", no_decoding)
  again = _load(root, tmp_path)
  np.testing.assert_array_equal(again.images, first.images)
  np.testing.assert_array_equal(again.labels, first.labels)
  assert again.class_names == first.class_names and "decoded earlier" in again.source
  monkeypatch.undo()
  _save(root / "two" / "0.png", digits[3, 0])  # an image replaced: a new key, decoded again
  changed = _load(root, tmp_path)
  assert len(list((tmp_path / "tfds" / folders.CACHE_FOLDER).iterdir())) == 2
  assert not np.array_equal(changed.images, first.images)


# ------------------------------------------------------------------------------------- splits


def test_train_and_test_subfolders_are_the_splits(tmp_path, digits):
  root = tmp_path / "split"
  _grey_folder(root / "train", digits, classes=3)
  _grey_folder(root / "test", digits[2:], classes=3)  # other classes: two, three, four
  _grey_folder(root / "val", digits, classes=2)
  train, test = _load(root, tmp_path, "train"), _load(root, tmp_path, "test")
  assert train.class_names == ["one", "two", "zero"] and len(train.labels) == 9
  assert test.class_names == ["one", "two", "zero"]  # folder names, numbered within the split
  assert _by_class(test)["zero"] == sorted(digits[2, i].tobytes() for i in range(3))
  assert _load(root, tmp_path, "val").num_classes == 2
  with pytest.raises(DataFileError, match="no split 'all'; its splits are test, train, val") as e:
    _load(root, tmp_path, "all")
  _assert_one_line(e, root)


@pytest.mark.parametrize("split_by", ["images", "classes"])
def test_train_and_test_carved_from_one_folder(tmp_path, digits, split_by):
  root = tmp_path / "digits"
  for d in range(5):
    for i in range(4):
      for copy in range(2):  # 8 images a class
        _save(root / DIGIT_NAMES[d] / f"{i}_{copy}.png", np.roll(digits[d, i], copy, axis=1))
  whole = _load(root, tmp_path)
  kwargs = dict(split_by=split_by, test_fraction=0.4, seed=3)
  train, test = _load(root, tmp_path, "train", **kwargs), _load(root, tmp_path, "test", **kwargs)
  assert len(train.labels) + len(test.labels) == len(whole.labels) == 40
  together = collections.Counter(i.tobytes() for i in np.concatenate([train.images, test.images]))
  assert together == collections.Counter(i.tobytes() for i in whole.images)
  if split_by == "classes":  # whole classes held out
    assert not set(train.class_names) & set(test.class_names) and test.num_classes == 2
  else:  # some of every class
    assert train.class_names == test.class_names == whole.class_names
  assert f"test part by split(test_fraction=0.4, by={split_by!r}, seed=3)" in test.source
  again = _load(root, tmp_path, "test", **kwargs)
  np.testing.assert_array_equal(again.images, test.images)  # same seed, same split
  others = {_load(root, tmp_path, "test", **{**kwargs, "seed": seed}).images.tobytes()
            for seed in range(4, 8)}
  assert len(others | {test.images.tobytes()}) > 1  # the seed decides


def test_split_by_names_match_the_splits_module():
  # a folder's test part is held out by images or classes; "groups" (and its alias "alphabets",
  # Omniglot's validation part) need groups of classes, which a folder of classes does not have
  assert folders.SPLIT_BY == tuple(by for by in splits.BY if by not in splits.GROUPS)


# --------------------------------------------------------------------------------- bad folders


def _make(tmp_path, digits, layout):
  """A folder from {relative path: digit index or bytes}."""
  root = tmp_path / "bad"
  root.mkdir()
  for rel, what in layout.items():
    if isinstance(what, bytes):
      (root / rel).parent.mkdir(parents=True, exist_ok=True)
      (root / rel).write_bytes(what)
    else:
      _save(root / rel, digits[what % 5, what // 5] if isinstance(what, int) else what)
  return root


@pytest.mark.parametrize("layout,expected,culprit", [
    ({}, "no images found", ""),
    ({"a/notes.txt": b"x", "b/.DS_Store": b"x"}, "no images found", ""),
    ({"a/1.png": 0, "a/2.png": 1}, r"one class \(a\)", ""),
    ({"a/1.png": 0, "a/2.png": 1, "b/1.png": 2, "c/1.png": 3, "d/1.png": 4},
     r"3 of 4 classes have a single image \(e.g. b\)", ""),
    ({"a/1.png": 0, "a/2.png": 1, "b/1.png": 2, "b/2.png": 3, "3.png": 4},
     r"image outside a class folder \(1 such\)", "3.png"),
    ({"a/1.png": 0, "a/2.png": 1, "b/1.png": 2, "b/2.png": np.zeros((1, 5), np.uint8)},
     "1x5? is smaller than 2x2|5x1 is smaller than 2x2", "b/2.png"),
    ({"a/1.png": 0, "a/2.png": 1, "b/1.png": 2, "b/2.png": np.zeros((40, 40), np.uint8)},
     "1600 pixels|megapixel limit", "b/2.png"),
])
def test_bad_folders_are_one_line_errors(tmp_path, digits, monkeypatch, layout, expected, culprit):
  monkeypatch.setattr(folders, "MAX_PIXELS", 1000)  # so a 40 x 40 image stands in for a bomb
  root = _make(tmp_path, digits, layout)
  with pytest.raises(DataFileError, match=expected) as error:
    _load(root, tmp_path)
  _assert_one_line(error, root / culprit)


def test_missing_folder_and_unknown_split(tmp_path, digits):
  with pytest.raises(DataFileError, match="folder not found") as error:
    _load(tmp_path / "nope", tmp_path)
  _assert_one_line(error, tmp_path / "nope", "source_dir")
  root = _grey_folder(tmp_path / "digits", digits)
  with pytest.raises(DataFileError, match="no split 'validation'; its splits are all, train, test"):
    _load(root, tmp_path, "validation")


def test_too_many_pixels_refused_by_default_skipped_on_request(tmp_path, digits, monkeypatch):
  monkeypatch.setattr(folders, "MAX_PIXELS", 28 * 28)
  root = _grey_folder(tmp_path / "digits", digits)
  _save(root / "one" / "big.png", np.zeros((30, 30), np.uint8))
  with pytest.raises(DataFileError, match="over the 0-megapixel limit") as error:
    _load(root, tmp_path, image_size=28)
  _assert_one_line(error, root / "one" / "big.png")
  assert len(_load(root, tmp_path, image_size=28, skip_bad_images=True).labels) == 9


def test_symlinks_out_of_the_folder_and_loops_are_not_followed(tmp_path, digits, caplog):
  root = _grey_folder(tmp_path / "digits", digits)
  outside = _grey_folder(tmp_path / "elsewhere", digits[3:], classes=2)
  os.symlink(outside / "zero", root / "stolen")  # a class folder outside PATH
  os.symlink(outside / "one" / "0.png", root / "one" / "9.png")  # a file outside PATH
  os.symlink(root, root / "zero" / "loop")  # back up: a loop
  os.symlink(root / "two", root / "twin")  # inside, a folder visited already
  os.symlink(root / "one" / "0.png", root / "two" / "copy.png")  # a file inside: followed
  os.symlink(root / "gone.png", root / "two" / "dangling.png")
  with caplog.at_level(logging.INFO):
    got = _load(root, tmp_path)
  assert got.class_names == ["one", "two", "zero"] and len(got.labels) == 10
  assert _by_class(got)["two"].count(digits[1, 0].tobytes()) == 1
  (line,) = [r for r in caplog.records if "skipped" in r.message]
  assert line.levelno == logging.WARNING
  assert "2 symlinks leading outside (one/9.png, stolen)" in line.message
  assert "2 folders already visited (symlink loops) (twin, zero/loop)" in line.message
  assert "1 neither file nor folder (broken symlinks) (two/dangling.png)" in line.message


# ------------------------------------------------------------------- Omniglot, zip vs folder


@pytest.fixture(scope="module")
def omniglot_folder(tmp_path_factory):
  zip_path = files.known_places("omniglot")[-1] / "images_background_small1.zip"
  if not zip_path.is_file():
    pytest.skip(f"{zip_path} not found (see ../shared/data/README.md)")
  target = tmp_path_factory.mktemp("unzipped")
  with zipfile.ZipFile(zip_path) as archive:
    archive.extractall(target)
  return target / "images_background_small1", zip_path.parent  # <alphabet>/<character>/*.png


@pytest.mark.parametrize("image_size", [None, 28])
def test_omniglot_unzipped_is_the_omniglot_route(tmp_path_factory, omniglot_folder, image_size):
  folder, zips = omniglot_folder
  tfds_dir = tmp_path_factory.getbasetemp() / "tfds-omniglot"
  route = data.load("omniglot", "small1", data_dir=tfds_dir, source_dir=zips, download=False,
                    image_size=image_size)
  mine = data.load("folder", "all", data_dir=tfds_dir, source_dir=folder, image_size=image_size,
                   nested_classes=True)  # <alphabet>/<character>/: declared
  assert mine.images.shape == route.images.shape and mine.images.dtype == np.uint8
  assert mine.num_classes == route.num_classes == 136
  assert mine.class_names == sorted(route.class_names)  # "Greek/character01", ...
  np.testing.assert_array_equal(np.bincount(mine.labels), np.bincount(route.labels))
  assert _by_class(mine) == _by_class(route)


# ---------------------------------------------------------------------------------- pixels


def test_to_channels_matches_pillow_and_drops_alpha():
  rgb = np.random.default_rng(0).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
  grey = pixels.to_channels(rgb, 1)
  pillow = np.stack([np.asarray(PIL.Image.fromarray(i).convert("L")) for i in rgb])[..., None]
  assert grey.shape == (2, 9, 7, 1) and np.abs(grey.astype(int) - pillow).max() <= 1
  rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=-1)
  np.testing.assert_array_equal(pixels.to_channels(rgba, 3), rgb)
  np.testing.assert_array_equal(pixels.to_channels(grey, 3), np.repeat(grey, 3, axis=-1))
  assert pixels.to_channels(rgba, None) is rgba


def test_decode_reads_a_file_header_first(tmp_path, digits):
  path = _save(tmp_path / "x.png", digits[0, 0])
  assert folders.header(path) == (28, 28, True)
  np.testing.assert_array_equal(folders.decode(path, None, 1)[..., 0], digits[0, 0])
  assert folders.decode(path, 14, 3).shape == (14, 14, 3)
  buffer = io.BytesIO()
  PIL.Image.fromarray(_tinted(digits[0, 0], 30)).save(buffer, format="JPEG")
  (tmp_path / "y.jpg").write_bytes(buffer.getvalue())
  assert folders.header(tmp_path / "y.jpg") == (30, 30, False)


# ---------------------------------------------------------------- layouts (issue 27, problem 2)


@pytest.mark.parametrize("train,test", [("train", "test"), ("training", "testing"),
                                        ("Train", "Test")])
def test_spellings_of_split_folders_are_the_splits(tmp_path, digits, train, test):
  # training/ + testing/ was read as one split of classes "training/zero", ... and pooled: the
  # test classes were trained on, without a word
  root = tmp_path / "faces"
  _grey_folder(root / train, digits, classes=3)
  _grey_folder(root / test, digits[2:], classes=2)
  got = _load(root, tmp_path, "train"), _load(root, tmp_path, "test")
  assert [part.class_names for part in got] == [["one", "two", "zero"], ["one", "zero"]]
  assert [len(part.labels) for part in got] == [9, 6]
  with pytest.raises(DataFileError, match="no split 'all'; its splits are test, train"):
    _load(root, tmp_path, "all")


@pytest.mark.parametrize("tops", [("a", "b"), ("traning", "tesing"), ("people",)])
def test_folders_of_class_folders_are_refused_in_one_line(tmp_path, digits, tops):
  root = tmp_path / "nested"
  for top in tops:
    _grey_folder(root / top, digits, classes=2)
  with pytest.raises(DataFileError, match="hold class folders") as error:
    _load(root, tmp_path)
  _assert_one_line(error, root, *(f"{top}/" for top in tops), "train/", "training/",
                   "<dir>/<class>/<image>", "data.nested_classes")
  declared = _load(root, tmp_path, nested_classes=True)  # on purpose: classes named by path
  assert declared.class_names == sorted(f"{t}/{n}" for t in tops for n in ("one", "zero"))


def test_nested_classes_inside_a_split_folder_are_refused_too(tmp_path, digits):
  root = tmp_path / "split"
  _grey_folder(root / "train" / "group", digits, classes=2)
  _grey_folder(root / "test", digits, classes=2)
  with pytest.raises(DataFileError, match="group/ hold class folders") as error:
    _load(root, tmp_path, "train")
  _assert_one_line(error, root / "train")


def test_two_spellings_of_one_split_are_refused(tmp_path, digits):
  root = tmp_path / "both"
  for name in ("train", "training", "test"):
    _grey_folder(root / name, digits, classes=2)
  with pytest.raises(DataFileError, match="both train/ and training/ are its train split") as e:
    _load(root, tmp_path, "train")
  _assert_one_line(e, root)


@pytest.mark.bad_input
def test_class_folders_without_images_are_refused_in_one_line(tmp_path, digits):
  root = _grey_folder(tmp_path / "digits", digits)
  (root / "five").mkdir()
  (root / "six").mkdir()
  (root / "six" / "notes.txt").write_text("to do")
  with pytest.raises(DataFileError, match=r"five: a class folder without images \(2 such\); "
                     "add its images or remove the folder") as error:
    _load(root, tmp_path)
  assert "\n" not in str(error.value)


def test_class_folders_without_images_are_named_in_one_warning_when_skipped(tmp_path, digits,
                                                                              caplog):
  root = _grey_folder(tmp_path / "digits", digits)
  (root / "five").mkdir()
  (root / "six").mkdir()
  (root / "six" / "notes.txt").write_text("to do")
  with caplog.at_level(logging.INFO):
    got = _load(root, tmp_path, skip_bad_images=True)
  assert got.class_names == ["one", "two", "zero"]
  (line,) = [r for r in caplog.records if "skipped" in r.message]
  assert line.levelno == logging.WARNING and "\n" not in line.message
  assert "2 folders without images (no class) (five/, six/)" in line.message


def test_file_and_folder_names_that_are_not_utf8(tmp_path, digits):
  root = tmp_path / "latin1"
  for d, name in enumerate([b"caf\xe9", b"zero"]):
    for i in range(2):
      path = os.fsencode(root) + b"/" + name + b"/x\xff%d.png" % i
      os.makedirs(os.path.dirname(path), exist_ok=True)
      PIL.Image.fromarray(digits[d, i]).save(path)
  got = _load(root, tmp_path)
  assert got.class_names == ["caf\\xe9", "zero"] and len(got.labels) == 4
  assert _load(root, tmp_path).class_names == got.class_names  # and from the cache
  (root / "caf\udce9" / "x\udcff0.png").write_bytes(b"not a png")
  with pytest.raises(DataFileError, match="not a readable image") as error:
    _load(root, tmp_path)
  _assert_one_line(error, "caf\\xe9/x\\xff0.png")
  str(error.value).encode("utf-8")  # printable
