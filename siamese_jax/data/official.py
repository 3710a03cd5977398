"""The offline routes of MNIST, Fashion-MNIST and Omniglot: each always goes through a tfds dataset,
prepared (once) in ``data.tfds_data_dir`` (default tfds's: ``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``), then read into NumPy. Where the data comes from, first match wins:

1. a tfds dataset already prepared in the tfds data folder (tfds's own, or the project's builders');
   it holds the verified official data, so it is used even when ``data.dir`` is given;
2. local official files: ``data.dir`` if given (then nothing further is tried), else the first
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

Anything else raises ``DataFileError`` with one line naming the files needed and where. The
records of MNIST and Fashion-MNIST are here; Omniglot's (with its alphabets) is in ``omniglot``.
"""

import logging
import os
import pathlib

import numpy as np

from siamese_jax.data import files, pixels
from siamese_jax.data.labelled import LabelledImages
from siamese_jax.data.source import DataSource, named, tfds_folder
from siamese_jax.idx import DataFileError

READS = ("dir", "tfds_data_dir", "image_size", "channels", "download")  # what every offline
# route reads (download: through the run's data protocol, as load's argument)


def load(name: str, split: str, data, labelled, *, download: bool | None = None) -> LabelledImages:
  """``split`` of ``name`` ("mnist", "fashion_mnist", "omniglot") by the first route above that
  has it, as ``labelled(arrays, source, builder) -> LabelledImages`` makes it, resized to
  ``data.image_size`` and converted to ``data.channels``."""
  from siamese_jax.data import builders  # imports tensorflow: only when data is actually loaded
  data_dir = tfds_folder(data)
  if data.dir is not None:
    source_dir = pathlib.Path(data.dir).expanduser()
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
  arrays = builders.read_split(builder, split, data.image_size)
  dataset = labelled(arrays, source, builder)
  return dataset._replace(images=pixels.to_channels(dataset.images, data.channels))


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


def _digits(arrays, source, builder) -> LabelledImages:
  names = builder.info.features["label"].names
  class_names = None if names == [str(i) for i in range(len(names))] else list(names)
  return LabelledImages(arrays["image"], arrays["label"].astype(np.int32), 10, source,
                        class_names=class_names)


def _idx_source(name: str) -> DataSource:
  """The record of an IDX dataset (ten classes of 28 x 28 grey images, splits train and test)."""
  return DataSource(
      name, named(name), READS,
      lambda data, split, seed=0, download=None: load(name, split, data, _digits,
                                                      download=download),
      splits=("train", "test"))


MNIST = _idx_source("mnist")
FASHION_MNIST = _idx_source("fashion_mnist")
