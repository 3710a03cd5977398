"""Labelled images for siamese_jax: MNIST, Fashion-MNIST, Omniglot, scikit-learn's 8 x 8 digits,
any tfds image dataset, or a folder of your own images, each read once and then into NumPy.

``SOURCES`` is the one table of where data comes from: a ``DataSource`` record per source (see
``source.py``), each in the module that owns it, saying which ``data.name`` it answers to, the
``data.*`` keys it reads, its splits, what it needs of the config, and how it loads a split:

- "mnist", "fashion_mnist" (``official``) and "omniglot" (``omniglot``): offline routes from the
  official files, through tfds;
- "uci_digits": scikit-learn's 8 x 8 digits (``load_digits``), see `uci_digits`;
- "folder": a folder of class folders (``<dir>/<class>/<image>``, split "all", "train", "test" or
  its train/ test/ (val/) subfolders, also spelt training/ testing/), see `folders`;
- any other tfds dataset name ("cifar10", "emnist/balanced", "cars196"; ``data.image_key`` /
  ``data.label_key`` pick its features): see `tfds_images`;
- the two-source pairing, chosen by ``data.source_b`` on top of the source ``data.name`` chooses:
  see `two_sources`.

The run's data protocol (``protocol.load_datasets``), ``config_checks`` and ``is_known`` loop over
the table; a new source is one module with its record, and its line below.
``load(name, split, ...)`` is the same for a caller outside a run, with keyword arguments.
"""

import types

import numpy as np

from siamese_jax import config_keys
from siamese_jax.data import folders, official, omniglot, tfds_images, two_sources, uci_digits
from siamese_jax.data.labelled import LabelledImages
from siamese_jax.data.source import DataSource, with_values
from siamese_jax.idx import DataFileError

__all__ = ["DataFileError", "DataSource", "LabelledImages", "SOURCES", "chosen", "find",
           "is_known", "load", "load_split", "names", "two_sources"]

# First match wins among the sources; a record that wraps applies on top of the one chosen. The tfds
# record goes last: deciding that a name is a tfds dataset imports tensorflow_datasets.
SOURCES = (official.MNIST, official.FASHION_MNIST, omniglot.OMNIGLOT, uci_digits.UCI_DIGITS,
           folders.FOLDER, two_sources.PAIRING, tfds_images.SOURCE)


def find(data) -> DataSource | None:
  """The source (not a wrapping record) that loads the ``data`` config section, or None."""
  return next((s for s in SOURCES if not s.wraps and s.accepts(data)), None)


def chosen(data) -> tuple[DataSource, ...]:
  """The records a run of the ``data`` config section uses: its source, then any that wrap it
  (the two-source pairing); () if no source takes ``data.name``."""
  source = find(data)
  if source is None:
    return ()
  return (source,) + tuple(s for s in SOURCES if s.wraps and s.accepts(data))


def load_split(data, split: str, *, seed: int = 0, download: bool | None = None
               ) -> LabelledImages:
  """``split`` as the ``data`` config section (``config.data``) asks: its source's split, then any
  wrapping record's. ``seed``: the run's (a folder without train/ draws its test part with it)."""
  source, *wrapping = chosen(data) or (None,)
  if source is None:
    raise ValueError(f"data.load: unknown dataset {data.name!r}: {_not_known(data.name)}")
  dataset = source.load(data, split, seed=seed, download=download)
  for record in wrapping:
    dataset = record.load(data, split, seed=seed, download=download, inner=dataset)
  return dataset


def names() -> list[str]:
  """The fixed names data.name takes (any tfds dataset name besides)."""
  return [s.name for s in SOURCES if not s.wraps and not s.name.startswith("<")]


def _not_known(name) -> str:
  return f"not {', '.join(names())}, nor a tfds dataset; see tfds.list_builders()"


def defaults() -> types.SimpleNamespace:
  """The ``data`` config section at its declared defaults (``siamese_jax.config_keys``)."""
  return with_values(config_keys.get_config().data)


def is_known(name: str, split: str) -> bool:
  """Whether ``load(name, split)`` can be asked for, as far as is known before reading any data:
  a source takes ``name`` (tfds names: tfds's registry, which imports tensorflow_datasets) and
  knows ``split`` (fixed splits exactly; a folder's or a tfds dataset's: any non-empty name)."""
  if not isinstance(name, str) or not name:
    return False
  source = find(with_values(defaults(), name=name))
  return source is not None and source.knows_split(split)


# load's keyword arguments -> the data.* key each one is
_KEY_OF = {"data_dir": "tfds_data_dir", "source_dir": "dir", "image_size": "image_size",
           "channels": "channels", "image_key": "image_key", "label_key": "label_key",
           "skip_bad_images": "skip_bad_images", "split_by": "split_by",
           "test_fraction": "test_fraction", "nested_classes": "nested_classes"}


def load(name: str, split: str, *, data_dir=None, image_size=None, source_dir=None,
         download: bool | None = None, channels: int | None = None, image_key: str | None = None,
         label_key: str | None = None, skip_bad_images: bool = False, split_by: str = "images",
         test_fraction: float = 0.2, seed: int = 0, nested_classes: bool = False
         ) -> LabelledImages:
  """Loads ``split`` of dataset ``name`` as uint8 images [N, H, W, C] and int32 labels [N]: the
  ``SOURCES`` record of ``name`` with the data config these arguments make.

  data_dir (data.tfds_data_dir): tfds data folder for prepared datasets and a folder's decoded
    cache (default: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``).
  image_size: resize (area interpolation) to S x S (an int S) or H x W (a pair (H, W)); None
    keeps the native size (28, 105, the tfds dataset's, the folder's; mixed sizes then are an
    error).
  source_dir (data.dir): a folder with the official files (IDX, gzipped or not; Omniglot zips);
    when given, only it (or an already prepared copy of the same official data) is used. "folder":
    the image folder (required). tfds names: the manual_dir of datasets tfds cannot download.
  download: False never downloads; None (default) downloads only if the host is reachable.
  channels: None keeps the data's channels (a folder: 1 if every image is grey, else 3); 1 or 3
    converts (BT.601 luma; grey repeated).
  image_key, label_key: tfds names only: the Image and ClassLabel features to read.
  skip_bad_images, split_by, test_fraction, nested_classes: "folder" only, see `folders`; seed:
    the seed of a folder's own train / test split.
  An argument that ``name``'s source does not read is refused (it would have no effect).
  """
  given = {"data_dir": data_dir, "image_size": image_size, "source_dir": source_dir,
           "channels": channels, "image_key": image_key, "label_key": label_key,
           "skip_bad_images": skip_bad_images, "split_by": split_by,
           "test_fraction": test_fraction, "nested_classes": nested_classes}
  _check_args(name, split, image_size, channels, split_by, test_fraction)
  data = with_values(defaults(), name=name, **{_KEY_OF[k]: v for k, v in given.items()})
  records = chosen(data)
  if not records:
    raise ValueError(f"data.load: unknown dataset {name!r}: {_not_known(name)}")
  source = records[0]
  if not source.knows_split(split):
    raise ValueError(f"data.load: {name} has no split {split!r}; use one of "
                     f"{', '.join(source.splits)}")
  reads = {key for record in records for key in record.reads}
  start = defaults()
  for argument, value in given.items():
    key = _KEY_OF[argument]
    if key not in reads and value != getattr(start, key):
      raise ValueError(f"data.load: {argument}={value!r} is not read by {source.name} (it reads "
                       f"{', '.join(k for k in source.reads)}); leave it out")
  for record in records:
    problem = record.check(data)
    if problem is not None:
      raise ValueError(f"data.load: {problem}")
  return load_split(data, split, seed=seed, download=download)


def _check_args(name, split, image_size, channels, split_by, test_fraction):
  if not isinstance(name, str) or not name:
    raise ValueError(f"data.load: dataset name {name!r} must be a non-empty string")
  if not isinstance(split, str) or not split:
    raise ValueError(f"data.load: split {split!r} must be a non-empty string")
  sides = image_size if isinstance(image_size, (tuple, list)) else (image_size,)
  if image_size is not None and not (len(sides) in (1, 2) and all(
      isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in sides)):
    raise ValueError(f"data.load: image_size={image_size!r} must be a positive int S, a pair "
                     "(H, W) of them, or None")
  if channels not in (None, 1, 3):
    raise ValueError(f"data.load: channels={channels!r} must be None (keep), 1 or 3")
  if split_by not in folders.SPLIT_BY:
    raise ValueError(f"data.load: split_by={split_by!r}; use one of {', '.join(folders.SPLIT_BY)}")
  if not 0 < test_fraction < 1:
    raise ValueError(f"data.load: test_fraction={test_fraction!r} must be between 0 and 1")
