"""Two datasets with the same classes as one labelled set, for pairs whose two members come from
different sources (a photo against a map; MNIST against the 8 x 8 UCI digits).

The convention every part follows (``samplers.split_sources``, ``batches``, the report): class c of
the first source keeps label c, class c of the second becomes C + c, so a two-source set of C
shared classes has 2 C classes; a same pair is (c, C + c). Everything that holds out images by
class (the validation split) then holds them out per source and class, and two-source pairs
always take their first member from the first source and their second from the second.

``PAIRING`` is the record (in ``siamese_jax.data.SOURCES``) that ``data.source_b`` chooses: it wraps
the source ``data.name`` chooses, loading the same split of ``data.source_b`` (one of the sources
with fixed splits, read with data.tfds_data_dir, data.image_size and data.channels) beside it.
"""

import numpy as np

from siamese_jax.data.labelled import LabelledImages
from siamese_jax.data.source import DataSource, with_values


def _names(dataset: LabelledImages) -> list[str]:
  return (list(dataset.class_names) if dataset.class_names is not None
          else [str(c) for c in range(dataset.num_classes)])


def combine(first: LabelledImages, second: LabelledImages, first_name: str,
            second_name: str) -> LabelledImages:
  """One LabelledImages of 2 C classes: ``first``'s images [N1, H, W, C] with their labels, then
  ``second``'s [N2, H, W, C] with labels + C (see the module docstring). Both must have the same
  classes (by name, or by id where unnamed) and image shape (resize them to one size first, e.g.
  data.image_size). Class names become "<first_name>/<class>" and "<second_name>/<class>"."""
  if first.num_classes != second.num_classes or _names(first) != _names(second):
    raise ValueError(f"two sources need the same classes: {first_name} has {_names(first)}, "
                     f"{second_name} {_names(second)}")
  if first.images.shape[1:] != second.images.shape[1:]:
    raise ValueError(f"two sources need one image shape: {first_name} {first.images.shape[1:]}, "
                     f"{second_name} {second.images.shape[1:]}; set data.image_size (and "
                     "data.channels)")
  count = first.num_classes
  return LabelledImages(
      np.concatenate([first.images, second.images]),
      np.concatenate([first.labels, second.labels + count]).astype(np.int32), 2 * count,
      f"{first_name}: {first.source} | {second_name}: {second.source}",
      class_names=[f"{first_name}/{name}" for name in _names(first)]
      + [f"{second_name}/{name}" for name in _names(second)])


def source_of(labels, num_classes: int) -> np.ndarray:
  """0 (first source) or 1 (second) for labels [N] of a combined set of ``num_classes`` (2 C)."""
  return (np.asarray(labels) >= num_classes // 2).astype(np.int32)


def shared_class(labels, num_classes: int) -> np.ndarray:
  """The class shared by both sources, in [0, C), of labels [N] of a combined set of 2 C."""
  return np.asarray(labels) % (num_classes // 2)


def _accepts(data) -> bool:
  return data.source_b is not None


def _second(data):
  """The data config of the second source: data.source_b with the first's image settings."""
  return with_values(data, name=data.source_b, source_b=None, dir=None)


def _second_names() -> list[str]:
  from siamese_jax import data as data_lib  # the table, which lists this record
  return [source.name for source in data_lib.SOURCES
          if source.splits is not None and not source.wraps]


def _check(data) -> str | None:
  names = _second_names()
  if data.source_b not in names:
    return f"data.source_b={data.source_b!r} must be None or one of {', '.join(names)}"
  return None


def _load(data, split: str, seed: int = 0, download: bool | None = None, inner=None
          ) -> LabelledImages:
  from siamese_jax import data as data_lib
  second = data_lib.load_split(_second(data), split, seed=seed, download=download)
  return combine(inner, second, data.name, data.source_b)


PAIRING = DataSource("two_source", _accepts, ("source_b",), _load, check=_check, wraps=True)
