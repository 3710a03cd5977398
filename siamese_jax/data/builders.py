"""The project's own tfds builders over local official files, preparation without leftovers, and a
fast reader from a prepared tfds dataset to NumPy.

The builders yield the same features as tfds's own ``mnist``/``fashion_mnist``/``omniglot``
builders, so every route gives the same kind of tfds dataset. They are not registered in tfds's
registry (``skip_registration``) and read their files from ``DownloadConfig(manual_dir=...)``,
never from the network.
"""

import contextlib
import logging
import os
import pathlib
import shutil
import struct
import zlib

import numpy as np
import tensorflow_datasets as tfds  # TensorFlow itself only where a split is decoded

from siamese_jax import caches
from siamese_jax.data import files, pixels


def encode_png(image: np.ndarray) -> bytes:
  """Lossless 8-bit grayscale PNG of ``image`` [H, W] uint8 (zlib only, ~10x faster than tfds's)."""
  h, w = image.shape
  rows = np.concatenate([np.zeros((h, 1), np.uint8), image], axis=1)  # filter byte 0 per row

  def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


class _NoVariantFolderWarning(logging.Filter):
  """Drops tfds's absl warning "Variant folder <dir> has no dataset_info.json": what tfds says
  when it looks for a config never prepared in data_dir, the usual case for our builders (one
  folder per config, prepared on first use)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.msg != "Variant folder %s has no %s"


@contextlib.contextmanager
def _without_variant_folder_warnings():
  absl_logger, quiet = logging.getLogger("absl"), _NoVariantFolderWarning()
  absl_logger.addFilter(quiet)
  try:
    yield
  finally:
    absl_logger.removeFilter(quiet)


class _QuietLocalBuilder:
  """What a user of an offline run should not see from our builders: tfds's "Variant folder ...
  has no dataset_info.json" while looking for a prepared copy, and its bold stdout lines
  "Downloading and preparing dataset Unknown size ..." / "... downloaded and prepared to ...
  Subsequent calls will reuse this data." (they download nothing; the data source is in the
  run's own messages). Both go to the ``siamese_jax.data`` logger at INFO instead."""

  def is_prepared(self) -> bool:
    with _without_variant_folder_warnings():
      return super().is_prepared()

  def _log_download_bytes(self) -> None:
    logging.getLogger("siamese_jax.data").info("preparing tfds %s in %s from local files",
                                               self.info.full_name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.getLogger("siamese_jax.data").info("prepared tfds %s in %s", self.info.full_name,
                                               self.data_dir)


class SiameseJaxIdx(_QuietLocalBuilder, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MNIST / Fashion-MNIST from a folder of the four official IDX files, and the embedded sample.

  Configs: ``mnist``, ``fashion_mnist`` (manual_dir: the folder), ``mnist_sample`` (manual_dir:
  siamese_jax/sample_data; the official test files split first 8,000 / last 2,000 into train/test).
  """
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="mnist", description="MNIST from local official IDX files."),
      tfds.core.BuilderConfig(name="fashion_mnist",
                              description="Fashion-MNIST from local official IDX files."),
      tfds.core.BuilderConfig(name="mnist_sample", description=(
          f"MNIST's official test set split into train (first {files.SAMPLE_TRAIN_SIZE}) and test "
          "(the rest).")),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = "A folder with the four official IDX files, gzipped or not."

  def _dataset(self) -> files.IdxDataset:
    return files.IDX_DATASETS[self.builder_config.name.removesuffix("_sample")]

  def _info(self):
    dataset = self._dataset()
    if dataset.class_names:
      label = tfds.features.ClassLabel(names=list(dataset.class_names))
    else:
      label = tfds.features.ClassLabel(num_classes=dataset.num_classes)
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)), "label": label}),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    folder = pathlib.Path(dl_manager.manual_dir)
    dataset = self._dataset()
    if self.builder_config.name == "mnist_sample":
      images, labels = files.read_idx_pair(folder, *dataset.parts["test"], dataset.num_classes)
      cut = files.SAMPLE_TRAIN_SIZE
      return {"train": self._generate_examples(images[:cut], labels[:cut]),
              "test": self._generate_examples(images[cut:], labels[cut:])}
    # Read (and verify) every file before the first example is written.
    parts = {split: files.read_idx_pair(folder, *specs, dataset.num_classes)
             for split, specs in dataset.parts.items()}
    return {split: self._generate_examples(*arrays) for split, arrays in parts.items()}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": encode_png(image), "label": int(label)}


class SiameseJaxOmniglot(_QuietLocalBuilder, tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
  """Omniglot from whichever official zips are in a folder: one config (and split) per zip.

  Config ``small1`` has the one split ``small1`` from images_background_small1.zip, ``train``
  from images_background.zip, ``test`` from images_evaluation.zip; features as tfds's omniglot.
  """
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=split, description=f"Omniglot {z.filename}.")
                     for split, z in files.OMNIGLOT_ZIPS.items()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = "A folder with official Omniglot zips (images_background.zip...)."

  def _info(self):
    size = files.OMNIGLOT_IMAGE_SIZE
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "alphabet": tfds.features.ClassLabel(names=list(files.OMNIGLOT_ALPHABETS)),
            "alphabet_char_id": np.int64,
            "label": tfds.features.ClassLabel(num_classes=files.OMNIGLOT_NUM_CLASSES),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    split = self.builder_config.name
    path = pathlib.Path(dl_manager.manual_dir) / files.OMNIGLOT_ZIPS[split].filename
    drawings = files.read_omniglot_zip(path)  # checked before the first example is written
    return {split: self._generate_examples(drawings)}

  def _generate_examples(self, drawings):
    for d in drawings:
      yield d.key, {"image": d.png, "alphabet": d.alphabet, "alphabet_char_id": d.alphabet_char_id,
                    "label": d.label}


def tfds_builder(name: str, data_dir: str, config: str | None = None) -> tfds.core.DatasetBuilder:
  """tfds's own builder ``name``, or ours for ``siamese_jax_idx`` / ``siamese_jax_omniglot``."""
  ours = {"siamese_jax_idx": SiameseJaxIdx, "siamese_jax_omniglot": SiameseJaxOmniglot}
  if name in ours:
    with _without_variant_folder_warnings():
      return ours[name](config=config, data_dir=data_dir)
  return tfds.builder(name if config is None else f"{name}/{config}", data_dir=data_dir)


def prepare(builder, data_dir: str, manual_dir: str | os.PathLike | None = None,
            try_gcs: bool = False) -> None:
  """Runs ``builder.download_and_prepare``; on any failure removes what it wrote.

  tfds writes into ``<version>.incomplete*`` and renames at the end (and removes that folder on
  failure), but it also leaves ``<name>/.config/metadata.json`` and empty folders: the dataset's
  folder is removed if this call created it, and empty ``downloads`` / ``data_dir`` folders too.
  try_gcs: let tfds fetch its prepared copy from its GCS bucket first (what ``tfds.load`` does).
  """
  root = pathlib.Path(data_dir)
  version_dir = pathlib.Path(builder.data_dir)  # <data_dir>/<name>[/<config>]/<version>
  owned = None
  if version_dir.is_relative_to(root):  # not so only where tfds is mocked (tfds.testing)
    made = [p for p in reversed(version_dir.relative_to(root).parents) if p != pathlib.Path(".")]
    owned = next((root / p for p in made if not (root / p).exists()), None)  # top folder made here
  shared = [p for p in (root / "downloads", root) if not p.exists()]
  manual_dir = None if manual_dir is None else os.fspath(manual_dir)
  config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=try_gcs)
  try:
    builder.download_and_prepare(download_config=config)
  except BaseException:
    if owned is not None:
      shutil.rmtree(owned, ignore_errors=True)
    for path in shared:
      _remove_if_only_empty_dirs(path)
    raise


def _remove_if_only_empty_dirs(path: pathlib.Path) -> None:
  """Removes ``path`` if it holds nothing but (nested) empty folders."""
  if not path.is_dir():
    return
  for child in path.iterdir():
    _remove_if_only_empty_dirs(child)
  with contextlib.suppress(OSError):
    path.rmdir()


# The tf.Example keys of the features read: how tfds serializes Image, ClassLabel and int64.
_KEYS = ("image", "label")
_OMNIGLOT_KEYS = (*_KEYS, "alphabet", "alphabet_char_id")


def read_split(builder, split: str, image_size=None,
               batch_size: int = 2048) -> dict[str, np.ndarray]:
  """The whole ``split`` of a prepared ``builder`` as NumPy arrays, images decoded to one channel.

  Returns {"image": [N, H, W, 1] uint8 (``image_size``: S or (H, W); None: the native size),
  "label": [N] int64, ...} (omniglot also "alphabet",
  "alphabet_char_id"). The arrays are kept in the user cache (``siamese_jax.caches``, keyed by the
  split's files), so only the first read of a split imports TensorFlow and decodes its PNGs.
  """
  keys = _OMNIGLOT_KEYS if "alphabet" in builder.info.features else _KEYS
  native = builder.info.features["image"].shape[0]
  size = image_size or native  # an int S or (H, W), as data.image_size says
  filepaths = [os.fspath(p) for p in builder.info.splits[split].filepaths]
  key = caches.files_key(filepaths, "read_split", keys, size)
  arrays = caches.load_arrays(key)
  if arrays is None or set(arrays) != set(keys):
    arrays = _decode_split(filepaths, keys, native, size, batch_size)
    caches.save_arrays(key, arrays)
  return arrays


def _decode_split(filepaths, keys, native: int, size: int, batch_size: int) -> dict:
  """TFRecord files of tf.Examples -> {key: array} (read_split's contract). Parses batches of
  records at once (tfds's per-record parsing is ~3x slower); with ``size`` != ``native`` the
  images are area-resized to ``size`` (S: S x S, or (H, W)) and rounded back to uint8."""
  import tensorflow as tf
  spec = {key: tf.io.FixedLenFeature([], tf.string if key == "image" else tf.int64)
          for key in keys}

  def decode(image_bytes):
    images = tf.map_fn(lambda s: tf.io.decode_png(s, channels=1), image_bytes,
                       fn_output_signature=tf.TensorSpec([native, native, 1], tf.uint8))
    return (pixels.resize_area_tf(images, size)
            if pixels.height_width(size) != (native, native) else images)

  def parse(records):
    example = tf.io.parse_example(records, spec)
    example["image"] = decode(example["image"])
    return example

  ds = tf.data.TFRecordDataset(filepaths).batch(batch_size)
  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  batches = list(tfds.as_numpy(ds.prefetch(2)))
  if not batches:
    return {key: np.zeros((0, *pixels.height_width(size), 1) if key == "image" else (0,),
                          np.uint8 if key == "image"
                          else np.int64) for key in spec}
  return {key: np.concatenate([b[key] for b in batches]) for key in spec}
