"""Any tfds image-classification dataset by name: "cifar10", "emnist/balanced", "cars196"...

``tfds.builder(name, data_dir=...)`` is prepared once in data_dir by tfds's own
``download_and_prepare`` (tfds's prepared copy on GCS first, as ``tfds.load`` does), and only when
the dataset's host answers (or ``download=True``); offline, an unprepared dataset is a one-line
DataFileError saying what to do. The split is then read whole into NumPy through
``builder.as_dataset``, so ``tfds.testing.mock_data`` can stand in for the data in tests.

Which features are the image and the label: one top-level ``tfds.features.Image`` (uint8) and one
top-level ``tfds.features.ClassLabel`` -- the dataset's ``supervised_keys`` when they are such a
pair, else the only Image and the only ClassLabel, else the ones named "image" and "label";
``image_key`` / ``label_key`` choose others. Class names come from the ClassLabel; classes absent
from the split are dropped and the rest renumbered in ClassLabel order (every class present: the
labels are the ClassLabel's own).
"""

import logging
import os
import pathlib

import numpy as np

from siamese_jax.data import files, pixels
from siamese_jax.data.labelled import LabelledImages
from siamese_jax.data.source import DataSource, tfds_folder
from siamese_jax.idx import DataFileError

_BATCH = 1024
_FALLBACK_PROBE = "https://storage.googleapis.com/tfds-data/"  # tfds's bucket: builders sans URLs


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def builder(name: str, data_dir: pathlib.Path):
  """tfds's builder ``name`` ("cifar10", "emnist/balanced", "mnist:3.0.1") over ``data_dir``."""
  import tensorflow_datasets as tfds  # (this module's imports stay light: see SOURCE)
  try:
    return tfds.builder(name, data_dir=os.fspath(data_dir))
  except (ValueError, AssertionError) as e:  # DatasetNotFoundError, unknown config or version
    raise ValueError(f"data.load: unknown dataset {name!r}: not mnist, fashion_mnist, omniglot, "
                     f"folder, nor a tfds dataset ({_first_line(e)}); see tfds.list_builders()"
                     ) from None


def is_tfds_name(name: str) -> bool:
  """Whether ``name`` ("cifar10", "emnist/balanced", "cifar10:3.0.2") names a tfds builder."""
  import tensorflow_datasets as tfds
  return name.split(":")[0].split("/")[0] in tfds.list_builders()


def _describe(features) -> str:
  return ", ".join(f"{key}: {type(feature).__name__}" for key, feature in features.items())


def image_and_label_keys(name: str, features, supervised_keys=None, image_key: str | None = None,
                         label_key: str | None = None) -> tuple[str, str]:
  """The top-level (Image, ClassLabel) feature keys of a tfds ``features`` FeaturesDict.

  image_key / label_key: chosen by the caller (checked); otherwise the supervised_keys pair, the
  only feature of its kind, or the one named "image" / "label", in that order.
  """
  import tensorflow_datasets as tfds
  kinds = {"image_key": (image_key, tfds.features.Image, "image"),
           "label_key": (label_key, tfds.features.ClassLabel, "label")}
  keys = []
  for position, (arg, (given, kind, usual)) in enumerate(kinds.items()):
    if given is not None:
      if given not in features:
        raise DataFileError(f"{name}: {arg}={given!r} names no feature; its features are "
                            f"{_describe(features)}")
      if not isinstance(features[given], kind):
        raise DataFileError(f"{name}: {arg}={given!r} is a {type(features[given]).__name__}, not "
                            f"a {kind.__name__}; its features are {_describe(features)}")
      keys.append(given)
      continue
    candidates = [k for k, f in features.items() if isinstance(f, kind)]
    preferred = supervised_keys[position] if isinstance(supervised_keys, (tuple, list)) else None
    if preferred in candidates:
      keys.append(preferred)
    elif len(candidates) == 1 or usual in candidates:
      keys.append(candidates[0] if len(candidates) == 1 else usual)
    else:
      what = "none" if not candidates else f"several ({', '.join(candidates)})"
      raise DataFileError(f"{name}: needs one {kind.__name__} feature as its "
                          f"{usual}, found {what} among {_describe(features)}; pass {arg}")
  image = features[keys[0]]
  if np.dtype(image.np_dtype) != np.uint8:
    raise DataFileError(f"{name}: image feature {keys[0]!r} holds {np.dtype(image.np_dtype)}, "
                        "not uint8; choose another image_key or dataset")
  return keys[0], keys[1]


def _probe_url(builder_) -> str:
  urls = list(getattr(builder_, "url_infos", None) or {})
  return urls[0] if urls else _FALLBACK_PROBE


def ensure_prepared(builder_, name: str, data_dir: pathlib.Path, source_dir, download) -> str:
  """Prepares ``builder_`` in ``data_dir`` unless it is; returns a line saying where it came from.

  download: False never downloads; None downloads only if the dataset's host answers a HEAD
  request within 2 s; True always tries. source_dir: the manual_dir of datasets that need one.
  """
  if builder_.is_prepared():
    return f"tfds {builder_.info.full_name}, prepared in {data_dir}"
  if builder_.MANUAL_DOWNLOAD_INSTRUCTIONS and source_dir is None:
    raise DataFileError(f"{name}: tfds cannot download it; put its files in a folder and pass "
                        "source_dir (--config.data.dir), as tfds's catalog page for it says")
  url = _probe_url(builder_)
  if download is False or (download is None and not files.network_reachable(url)):
    why = "download=False" if download is False else f"{url.split('/')[2]} does not answer"
    raise DataFileError(f"{name}: not prepared in {data_dir} and {why}; run once where tfds can "
                        f"download it into that data_dir (or `tfds build {name} --data_dir "
                        f"{data_dir}`), or copy a prepared {data_dir}/{name.split(':')[0]} here")
  from siamese_jax.data import builders  # imports tensorflow
  manual = None if source_dir is None else pathlib.Path(source_dir).expanduser()
  logging.info("siamese_jax.data: preparing tfds %s in %s", name, data_dir)
  try:
    builders.prepare(builder_, os.fspath(data_dir), manual_dir=manual, try_gcs=True)
  except Exception as e:  # tfds's own messages run to many lines
    raise DataFileError(f"{name}: tfds could not download and prepare it in {data_dir} "
                        f"({_first_line(e)}); see the error above this one") from e
  return f"tfds {builder_.info.full_name} (downloaded and prepared in {data_dir})"


def _check_split(builder_, name: str, split: str) -> None:
  known = list(builder_.info.splits)
  if not known:  # metadata not there (tfds mocked): tfds accepts any split
    return
  asked = {part.split("[")[0].strip() for part in split.split("+")}
  unknown = sorted(asked - set(known))
  if unknown:
    raise ValueError(f"data.load: {name} has no split {unknown[0]!r}; use one of "
                     f"{', '.join(known)} (tfds slices such as train[:80%] work too)")


def read(builder_, split: str, image_key: str, label_key: str, image_size=None,
         channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """images [N, H, W, C] uint8 and labels [N] int64 of ``split`` (tfds split syntax), in file order.

  Images of one fixed size are read in batches; datasets of varying sizes (cars196) need
  ``image_size`` (S or (H, W)) unless every image of the split turns out to be the same size.
  """
  import tensorflow as tf
  import tensorflow_datasets as tfds
  height, width, depth = builder_.info.features[image_key].shape
  ds = builder_.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda ex: (ex[image_key], ex[label_key]), num_parallel_calls=tf.data.AUTOTUNE)
  if image_size:
    ds = ds.map(lambda image, label: (pixels.resize_area_tf(image, image_size), label),
                num_parallel_calls=tf.data.AUTOTUNE)
  if depth is not None and (image_size or (height is not None and width is not None)):
    batches = list(tfds.as_numpy(ds.batch(_BATCH).prefetch(2)))
    if not batches:
      raise DataFileError(f"{builder_.info.full_name} {split}: no examples; choose another split")
    images = np.concatenate([b[0] for b in batches])
    return pixels.to_channels(images, channels), np.concatenate([b[1] for b in batches])
  examples = [(pixels.to_channels(image, channels), label) for image, label in tfds.as_numpy(ds)]
  shapes = sorted({image.shape for image, _ in examples})
  if len(shapes) > 1:
    sizes = " and ".join("x".join(map(str, s)) for s in shapes[:2])
    raise DataFileError(f"{builder_.info.full_name} {split}: images differ in size ({sizes}, "
                        f"{len(shapes)} shapes); set image_size (--config.data.image_size)"
                        + ("" if channels else " and channels (--config.data.channels)"))
  if not examples:
    raise DataFileError(f"{builder_.info.full_name} {split}: no examples; choose another split")
  return (np.stack([image for image, _ in examples]),
          np.asarray([label for _, label in examples], np.int64))


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
  """DataFileError naming ``where`` if a label of [N] is outside [0, num_classes)."""
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise DataFileError(f"{where}: label {int(bad[0])} is out of range [0, {num_classes}) "
                        f"({bad.size} such); prepare the dataset again or choose another label_key")


def load(name: str, split: str, *, data_dir: pathlib.Path, image_size=None, source_dir=None,
         download=None, channels=None, image_key=None, label_key=None) -> LabelledImages:
  """``split`` of tfds dataset ``name`` as LabelledImages (see the module docstring)."""
  builder_ = builder(name, data_dir)
  info = builder_.info
  image_key, label_key = image_and_label_keys(name, info.features, info.supervised_keys,
                                              image_key, label_key)
  source = ensure_prepared(builder_, name, data_dir, source_dir, download)
  _check_split(builder_, name, split)
  images, labels = read(builder_, split, image_key, label_key, image_size, channels)
  class_label = info.features[label_key]
  check_labels(labels, class_label.num_classes,
               f"{info.full_name} {split} feature {label_key!r} in {data_dir}")
  present, labels = np.unique(labels, return_inverse=True)
  class_names = [class_label.names[c] for c in present]
  if image_key != "image" or label_key != "label":
    source += f"; image {image_key!r}, label {label_key!r}"
  logging.info("siamese_jax.data.load(%r, %r): %s", name, split, source)
  return LabelledImages(images, labels.astype(np.int32).reshape(-1), len(present), source,
                        class_names=class_names)


def _accepts(data) -> bool:
  return isinstance(data.name, str) and data.name != "" and is_tfds_name(data.name)


def _load(data, split: str, seed: int = 0, download: bool | None = None) -> LabelledImages:
  del seed  # tfds's splits are the dataset's own
  return load(data.name, split, data_dir=tfds_folder(data), image_size=data.image_size,
              source_dir=data.dir, download=download, channels=data.channels,
              image_key=data.image_key, label_key=data.label_key)


# Any tfds image dataset by name. Deciding that a name is one imports tensorflow_datasets, so this
# record comes last in SOURCES: the offline names never pay for it.
SOURCE = DataSource("<tfds name>", _accepts, ("dir", "tfds_data_dir", "image_size", "channels",
                                              "image_key", "label_key", "download"), _load,
                    only_for=("image_key", "label_key"))
