"""The one type every route of siamese_jax.data returns: a split of labelled images in memory."""

from typing import NamedTuple

import numpy as np


class LabelledImages(NamedTuple):
  """A split of a dataset in host memory.

  images: [N, H, W, C] uint8; C is 1 for MNIST, Fashion-MNIST and Omniglot (white 255
    background, black 0 strokes, as tfds decodes it), and what the data has (or ``channels``
    asks) for tfds datasets and image folders.
  labels: [N] int32 in [0, num_classes). Omniglot's characters are renumbered 0..C-1 within the
    split, in the order of their global tfds label; tfds datasets and image folders likewise keep
    only the classes present in the split, in ClassLabel (or sorted folder-name) order.
  source: one human line saying where the data came from.
  groups: [N] int32 index into ``group_names`` where the source groups its classes (every image
    of a class in one group: Omniglot's alphabets, sorted, this split's only), else None.
  class_names: names of the labels (Omniglot: "<alphabet>/characterNN"; folders: the class
    folder's path, e.g. "cat" or "Greek/character01"), or None for MNIST digits.
  """
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  source: str
  groups: np.ndarray | None = None
  group_names: list[str] | None = None
  class_names: list[str] | None = None
