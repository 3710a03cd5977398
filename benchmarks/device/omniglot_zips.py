"""Omniglot splits read straight from the official zips, without TensorFlow or tfds: the device
image has neither, and the library's offline Omniglot route prepares a tfds dataset and decodes it
with TensorFlow.

``load_split(folder, split, image_size)`` gives what ``siamese_jax.data.load("omniglot", split,
image_size=...)`` gives (the same LabelledImages fields, labels, alphabets and class names) from
``siamese_jax.data.files.read_omniglot_zip``, PIL's PNG decoder and the library's NumPy area
resize (``pixels.resize_area``: TensorFlow's pixels). One difference: the drawings come in file
order, not tfds's shuffled order. ``omniglot_from_zips(folder)`` routes
the run's Omniglot loads here for the duration of a ``with`` block.
"""

import contextlib
import io
import pathlib

import numpy as np
import PIL.Image

from siamese_jax import data
from siamese_jax.data import files, pixels


def load_split(folder, split: str, image_size: int | None = None) -> data.LabelledImages:
  """Omniglot ``split`` ("train", "test", "small1", "small2") from ``folder``'s official zip:
  images uint8 [N, S, S, 1] (white 255 background), labels renumbered 0..C-1 in global order."""
  path = pathlib.Path(folder) / files.OMNIGLOT_ZIPS[split].filename
  drawings = files.read_omniglot_zip(path)
  images = np.stack([np.asarray(PIL.Image.open(io.BytesIO(d.png)).convert("L"))
                     for d in drawings])
  images = pixels.resize_area(images[..., None], image_size or files.OMNIGLOT_IMAGE_SIZE)
  classes, labels = np.unique([d.label for d in drawings], return_inverse=True)
  alphabet_names, alphabets = np.unique([d.alphabet for d in drawings], return_inverse=True)
  _, first_of_class = np.unique(labels, return_index=True)
  class_names = [f"{drawings[i].alphabet}/character{drawings[i].alphabet_char_id + 1:02d}"
                 for i in first_of_class]
  groups = (alphabets.astype(np.int32), [str(a) for a in alphabet_names])
  return data.LabelledImages(
      images=images, labels=labels.astype(np.int32), num_classes=len(classes),
      source=f"official zip {path}, read without tfds (benchmarks/device/omniglot_zips.py)",
      class_names=class_names, groups=groups[0], group_names=groups[1])


@contextlib.contextmanager
def omniglot_from_zips(folder):
  """Within the block, the library's Omniglot route (``siamese_jax.data.load_split`` of a data
  config naming omniglot, what ``data.protocol.load_datasets`` calls) reads ``folder``'s zips with
  `load_split`; other names go to the library as before."""
  library_load_split = data.load_split

  def load_from_zips(data_config, split, *, seed=0, download=None):
    if data_config.name != "omniglot":
      return library_load_split(data_config, split, seed=seed, download=download)
    loaded = load_split(folder, split, data_config.image_size)
    return loaded._replace(images=pixels.to_channels(loaded.images, data_config.channels))

  data.load_split = load_from_zips
  try:
    yield
  finally:
    data.load_split = library_load_split
