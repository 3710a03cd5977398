"""Labelled images for siamese_jax: MNIST, Fashion-MNIST, Omniglot, any tfds image dataset, or a
folder of your own images, each read once into ``data_dir`` and then into NumPy.

``load(name, split, ...)`` returns `LabelledImages` (uint8 [N, H, W, C] images, int32 labels) for:

- "mnist", "fashion_mnist", "omniglot" (``NAMES``, splits in ``SPLITS``): the routes below, which
  work offline from the official files;
- "uci_digits": scikit-learn's 8 x 8 digits (``load_digits``), see `uci_digits`;
- any other tfds dataset name ("cifar10", "emnist/balanced", "cars196"; ``image_key`` /
  ``label_key`` pick its features): see `tfds_images`;
- "folder" with ``source_dir`` a folder of class folders (``<dir>/<class>/<image>``, split "all",
  "train", "test" or its train/ test/ subfolders): see `folders`.

``is_known(name, split)`` says whether load accepts a name and split before any data is read.

MNIST, Fashion-MNIST and Omniglot always go through a tfds dataset, prepared (once) in ``data_dir``
(default tfds's: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), then read into NumPy. Where the
data comes from, first match wins:

1. a tfds dataset already prepared in ``data_dir`` (tfds's own, or the project's builders'); it
   holds the verified official data, so it is used even when ``source_dir`` is given;
2. local official files: ``source_dir`` if given (then nothing further is tried), else the first
   known folder that has them: mnist ``$SIAMESE_JAX_MNIST_DIR``; fashion_mnist
   ``$SIAMESE_JAX_FASHION_MNIST_DIR``, ``/usr/share/datasets/fashion-mnist`` (Debian's
   dataset-fashion-mnist); omniglot ``$SIAMESE_JAX_OMNIGLOT_DIR``,
   ``<project>/../shared/data/omniglot``. tfds's own builder prepares them when all of its files
   are there with tfds's checksums (nothing is then fetched); otherwise the project's builders in
   ``builders.py`` do, with the same features;
3. a tfds download, only if a HEAD request for one of its files succeeds within 2 s (and
   ``download`` is not False), so nothing hangs offline;
4. MNIST only: the embedded sample, MNIST's official 10,000 test images shipped in
   ``siamese_jax/sample_data``: the first 8,000 (file order) are ``train``, the last 2,000 ``test``.
   A warning says so and how to get the full set.

Anything else raises ``DataFileError`` with one line naming the files needed and where.
"""

import logging
import os
import pathlib

import numpy as np

from siamese_jax.data import files, pixels, two_sources
from siamese_jax.data.labelled import LabelledImages
from siamese_jax.idx import DataFileError

__all__ = ["DataFileError", "FOLDER", "LabelledImages", "is_known", "load", "NAMES", "SPLITS",
           "SPLIT_BY", "two_sources", "without_alphabets"]

SPLITS = {"mnist": ("train", "test"), "fashion_mnist": ("train", "test"),
          "omniglot": ("train", "test", "small1", "small2"), "uci_digits": ("train", "test")}
NAMES = tuple(SPLITS)  # the datasets with offline routes; load also takes FOLDER and tfds names
FOLDER = "folder"
SPLIT_BY = ("images", "classes")  # siamese_jax.splits.BY but "alphabets": how a folder without
# train/ is split


def default_data_dir() -> pathlib.Path:
  """tfds's default data folder: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
  return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def is_known(name: str, split: str) -> bool:
  """Whether ``load(name, split)`` can be asked for, as far as is known before reading any data.

  NAMES: their SPLITS exactly. FOLDER: any split (its folder decides at load). Other names: tfds's
  registry (imports tensorflow_datasets); their splits are known only once prepared.
  """
  if name in SPLITS:
    return split in SPLITS[name]
  if not isinstance(split, str) or not split:
    return False
  if name == FOLDER:
    return True
  from siamese_jax.data import tfds_images  # imports tensorflow
  return tfds_images.is_tfds_name(name)


def load(name: str, split: str, *, data_dir=None, image_size: int | None = None, source_dir=None,
         download: bool | None = None, channels: int | None = None, image_key: str | None = None,
         label_key: str | None = None, skip_bad_images: bool = False, split_by: str = "images",
         test_fraction: float = 0.2, seed: int = 0) -> LabelledImages:
  """Loads ``split`` of dataset ``name`` as uint8 images [N, H, W, C] and int32 labels [N].

  name: "mnist", "fashion_mnist", "omniglot", FOLDER ("folder"), or a tfds dataset name.
  data_dir: tfds data folder for the prepared dataset, and for a folder's decoded cache (default:
    `default_data_dir()`).
  image_size: resize to image_size x image_size (area interpolation); None keeps the native size
    (28, 105, the tfds dataset's, the folder's; mixed sizes then are an error).
  source_dir: a folder with the official files (IDX, gzipped or not; Omniglot zips); when given,
    only it (or an already prepared copy of the same official data) is used. FOLDER: the image
    folder (required). tfds names: the manual_dir of datasets tfds cannot download.
  download: False never downloads; None (default) downloads only if the host is reachable.
  channels: None keeps the data's channels (a folder: 1 if every image is grey, else 3); 1 or 3
    converts (BT.601 luma; grey repeated).
  image_key, label_key: tfds names only: the Image and ClassLabel features to read (default:
    found from the dataset's features, see `tfds_images`).
  skip_bad_images: FOLDER only: leave out (and list in a warning) images that do not decode or are
    too large or too small, instead of raising DataFileError.
  split_by, test_fraction, seed: FOLDER without train/ test/ subfolders: split "train" / "test"
    is its part under ``siamese_jax.splits.split(labels, test_fraction, split_by, seed)``;
    split_by is one of SPLIT_BY ("images": some images of every class held out, "classes": whole
    classes held out).
  """
  _check_args(name, split, image_size, source_dir, channels, image_key, label_key, split_by,
              test_fraction)
  if name == "uci_digits":  # inside scikit-learn: no files, no tfds
    from siamese_jax.data import uci_digits
    return uci_digits.load(split, image_size, channels)
  data_dir = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
  if name == FOLDER:
    from siamese_jax.data import folders
    dataset = folders.load(source_dir, split, data_dir=data_dir, image_size=image_size,
                           channels=channels, skip_bad_images=skip_bad_images, split_by=split_by,
                           test_fraction=test_fraction, seed=seed)
    logging.info("siamese_jax.data.load(%r, %r): %s", name, split, dataset.source)
    return dataset
  if name not in SPLITS:
    from siamese_jax.data import tfds_images  # imports tensorflow
    return tfds_images.load(name, split, data_dir=data_dir, image_size=image_size,
                            source_dir=source_dir, download=download, channels=channels,
                            image_key=image_key, label_key=label_key)
  from siamese_jax.data import builders  # imports tensorflow: only when data is actually loaded
  if source_dir is not None:
    source_dir = pathlib.Path(source_dir).expanduser()
    _require_files(name, split, source_dir)
    found = (_prepared(builders, name, split, data_dir)
             or _local(builders, name, split, source_dir, data_dir))
  else:
    found = (_prepared(builders, name, split, data_dir)
             or _first_local(builders, name, split, data_dir)
             or _downloaded(builders, name, data_dir, download)
             or _sample(builders, name, data_dir))
  if found is None:
    raise DataFileError(_not_found_message(name, split))
  builder, source = found
  logging.info("siamese_jax.data.load(%r, %r): %s", name, split, source)
  arrays = builders.read_split(builder, split, image_size)
  dataset = _labelled(name, arrays, source, builder)
  return dataset._replace(images=pixels.to_channels(dataset.images, channels))


def _check_args(name, split, image_size, source_dir, channels, image_key, label_key, split_by,
                test_fraction):
  if not isinstance(name, str) or not name:
    raise ValueError(f"data.load: dataset name {name!r} must be a non-empty string")
  if name in SPLITS and split not in SPLITS[name]:
    raise ValueError(f"data.load: {name} has no split {split!r}; use one of "
                     f"{', '.join(SPLITS[name])}")
  if not isinstance(split, str) or not split:
    raise ValueError(f"data.load: split {split!r} must be a non-empty string")
  if image_size is not None and (int(image_size) != image_size or image_size < 1):
    raise ValueError(f"data.load: image_size={image_size!r} must be a positive int or None")
  if name == FOLDER and source_dir is None:
    raise ValueError("data.load: name 'folder' needs source_dir (--config.data.dir), a folder of "
                     "class folders <dir>/<class>/<image>")
  if channels not in (None, 1, 3):
    raise ValueError(f"data.load: channels={channels!r} must be None (keep), 1 or 3")
  for key, value in (("image_key", image_key), ("label_key", label_key)):
    if value is not None and (name in SPLITS or name == FOLDER):
      raise ValueError(f"data.load: {key}={value!r} applies to tfds datasets only, not {name}; "
                       "leave it None")
  if split_by not in SPLIT_BY:
    raise ValueError(f"data.load: split_by={split_by!r}; use one of {', '.join(SPLIT_BY)}")
  if not 0 < test_fraction < 1:
    raise ValueError(f"data.load: test_fraction={test_fraction!r} must be between 0 and 1")


def _needed_files(name: str, split: str) -> list[str]:
  if name == "omniglot":
    return [files.OMNIGLOT_ZIPS[split].filename]
  return [f.stem + ".gz" for f in files.IDX_DATASETS[name].files]


def _has_files(name: str, split: str, folder: pathlib.Path) -> bool:
  if name == "omniglot":
    return (folder / files.OMNIGLOT_ZIPS[split].filename).is_file()
  return not files.missing_idx_files(folder, files.IDX_DATASETS[name])


def _require_files(name: str, split: str, folder: pathlib.Path) -> None:
  if not folder.is_dir():
    raise DataFileError(f"{folder}: folder not found; point source_dir (--config.data.dir) at a "
                        f"folder with {', '.join(_needed_files(name, split))}")
  if not _has_files(name, split, folder):
    missing = (_needed_files(name, split) if name == "omniglot" else
               [s + "[.gz]" for s in files.missing_idx_files(folder, files.IDX_DATASETS[name])])
    raise DataFileError(f"{folder}: missing {', '.join(missing)}; put the official {name} files "
                        "there")


def _prepared(builders, name, split, data_dir):
  """(builder, source) of a tfds dataset with ``split`` prepared in ``data_dir``, or None."""
  ours = ("siamese_jax_omniglot", split) if name == "omniglot" else ("siamese_jax_idx", name)
  for builder_name, config in ((name, None), ours):
    if not (data_dir / builder_name).is_dir():  # cheap; spares tfds's "no dataset_info" warnings
      continue
    builder = builders.tfds_builder(builder_name, os.fspath(data_dir), config)
    if builder.is_prepared() and split in builder.info.splits:
      return builder, f"tfds {builder.info.full_name}, prepared in {data_dir}"
  return None


def _all_match_tfds_checksums(name: str, folder: pathlib.Path) -> bool:
  """Whether ``folder`` holds every file tfds's own builder downloads, byte-identical."""
  if name == "omniglot":
    paths = [(folder / z.filename, z.sha256) for z in files.OMNIGLOT_ZIPS.values()]
  else:
    paths = [(folder / (f.stem + ".gz"), f.gz_sha256) for f in files.IDX_DATASETS[name].files]
  return (all(p.is_file() for p, _ in paths)
          and all(files.sha256(p.read_bytes()) == digest for p, digest in paths))


def _local(builders, name, split, folder, data_dir):
  """Prepares ``name`` from the official files in ``folder`` (present); (builder, source)."""
  if _all_match_tfds_checksums(name, folder):
    builder = builders.tfds_builder(name, os.fspath(data_dir))
  elif name == "omniglot":
    builder = builders.tfds_builder("siamese_jax_omniglot", os.fspath(data_dir), split)
  else:
    builder = builders.tfds_builder("siamese_jax_idx", os.fspath(data_dir), name)
  if not builder.is_prepared():
    builders.prepare(builder, os.fspath(data_dir), manual_dir=folder)
  return builder, f"local official files in {folder} (tfds {builder.info.full_name} in {data_dir})"


def _first_local(builders, name, split, data_dir):
  for folder in files.known_places(name):
    if folder.is_dir() and _has_files(name, split, folder):
      return _local(builders, name, split, folder, data_dir)
  return None


def _downloaded(builders, name, data_dir, download):
  if name == "omniglot":
    url = files.OMNIGLOT_ZIPS["train"].url + files.OMNIGLOT_ZIPS["train"].filename
  else:
    url = files.IDX_DATASETS[name].url + files.IDX_DATASETS[name].parts["train"][0].stem + ".gz"
  if download is False or (download is None and not files.network_reachable(url)):
    return None
  builder = builders.tfds_builder(name, os.fspath(data_dir))
  builders.prepare(builder, os.fspath(data_dir))
  return builder, f"tfds {builder.info.full_name} (downloaded to {data_dir})"


_NOTICES_GIVEN: set[str] = set()


def _sample(builders, name, data_dir):
  if name != "mnist":
    return None
  builder = builders.tfds_builder("siamese_jax_idx", os.fspath(data_dir), "mnist_sample")
  if not builder.is_prepared():
    builders.prepare(builder, os.fspath(data_dir), manual_dir=files.SAMPLE_DIR)
  cut = files.SAMPLE_TRAIN_SIZE
  source = (f"embedded MNIST sample (official test set split {cut}/{10000 - cut} into train/test; "
            f"tfds {builder.info.full_name} in {data_dir})")
  if source not in _NOTICES_GIVEN:  # once per process, not once per split
    _NOTICES_GIVEN.add(source)
    logging.warning("Using the %s. For the full 60,000 + 10,000 MNIST, pass source_dir "
                    "(--config.data.dir) a folder of the four official IDX files, set "
                    "SIAMESE_JAX_MNIST_DIR, or run where tfds can download.", source)
  return builder, source


def _not_found_message(name, split):
  places = [str(p) for p in files.known_places(name)]
  where = f"in one of {', '.join(places)}" if places else "in a folder"
  return (f"no {name} {split} data: put {', '.join(_needed_files(name, split))} {where} (or pass "
          f"source_dir / --config.data.dir), or run where tfds can download {name}")


def _labelled(name, arrays, source, builder) -> LabelledImages:
  images = arrays["image"]
  if name != "omniglot":
    names = builder.info.features["label"].names
    class_names = None if names == [str(i) for i in range(len(names))] else list(names)
    return LabelledImages(images, arrays["label"].astype(np.int32), 10, source,
                          class_names=class_names)
  classes, labels = np.unique(arrays["label"], return_inverse=True)
  all_alphabets = builder.info.features["alphabet"].names
  alphabet_names, alphabets = np.unique(np.asarray(all_alphabets)[arrays["alphabet"]],
                                        return_inverse=True)
  _, by_class = np.unique(labels, return_index=True)  # an example of each class
  class_names = [f"{alphabet_names[alphabets[i]]}/character{arrays['alphabet_char_id'][i] + 1:02d}"
                 for i in by_class]
  return LabelledImages(images, labels.astype(np.int32), len(classes), source,
                        alphabets.astype(np.int32), [str(a) for a in alphabet_names], class_names)


def without_alphabets(dataset: LabelledImages, alphabet_names) -> LabelledImages:
  """``dataset`` (Omniglot) without the images of the alphabets named in ``alphabet_names``.

  Labels and alphabets are renumbered 0..C'-1 in their old order; class_names follow. Used to
  evaluate on alphabets never trained on (small2 shares Greek and Latin with small1).
  """
  if dataset.alphabets is None:
    raise ValueError("without_alphabets: this dataset has no alphabets (Omniglot only)")
  drop = set(alphabet_names)
  keep_alphabets = [i for i, n in enumerate(dataset.alphabet_names) if n not in drop]
  if not keep_alphabets:
    raise DataFileError(f"every alphabet of this split ({', '.join(dataset.alphabet_names)}) is "
                        "also in the training split; choose another test split")
  keep = np.isin(dataset.alphabets, keep_alphabets)
  classes, labels = np.unique(dataset.labels[keep], return_inverse=True)
  _, alphabets = np.unique(dataset.alphabets[keep], return_inverse=True)
  class_names = ([dataset.class_names[c] for c in classes] if dataset.class_names is not None
                 else None)
  dropped = sorted(drop & set(dataset.alphabet_names))
  return dataset._replace(
      images=dataset.images[keep], labels=labels.astype(np.int32), num_classes=len(classes),
      alphabets=alphabets.astype(np.int32),
      alphabet_names=[dataset.alphabet_names[i] for i in keep_alphabets], class_names=class_names,
      source=f"{dataset.source}; without the alphabets also in training ({', '.join(dropped)})"
      if dropped else dataset.source)
