"""The UCI handwritten digits that scikit-learn ships (``sklearn.datasets.load_digits``).

1,797 digits of 8 x 8 pixels with 17 grey levels: each pixel counts the "on" pixels of a 4 x 4
block of a 32 x 32 binary bitmap (0..16), written by 13 people (the test set of UCI's optdigits):
another collection, scanner and resolution than MNIST, with the same ten classes. Nothing is
downloaded: the file is part of scikit-learn.

Splits "train" and "test" are fixed, the same on every machine and for every run seed: 20 % of
each digit's images are held out as test (``siamese_jax.splits.split_by_images``, seed 0).
"""

import numpy as np

from siamese_jax import splits
from siamese_jax.data import pixels
from siamese_jax.data.labelled import LabelledImages
from siamese_jax.data.source import DataSource, named

SPLITS = ("train", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
LEVELS = 16  # the largest pixel value of the 8 x 8 images


def load(split: str, image_size=None, channels: int | None = None) -> LabelledImages:
  """``split`` ("train" or "test") as uint8 images [N, 8, 8, 1] (0..16 scaled to 0..255, white
  ink on black as MNIST) and int32 digit labels [N]; ``image_size`` (S or (H, W)) resizes by area
  (an integer multiple of 8 repeats every pixel, e.g. 32 undoes the 4 x 4 block counting)."""
  if split not in SPLITS:
    raise ValueError(f"uci_digits has no split {split!r}; use one of {', '.join(SPLITS)}")
  from sklearn import datasets  # scikit-learn is a dependency (SVM, ROC); its import is slow
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / LEVELS)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train, test = splits.split_by_images(labels, TEST_FRACTION, SPLIT_SEED)
  idx = train if split == "train" else test
  images, labels = images[idx], labels[idx]
  if image_size is not None:
    images = pixels.resize_area(images, image_size)
  source = (f"scikit-learn load_digits (UCI optdigits test set, 8 x 8, 17 levels) {split}: "
            f"{len(labels)} of 1797, {100 * TEST_FRACTION:g} % of each digit held out as test "
            f"(seed {SPLIT_SEED})" + (f", resized to {pixels.size_words(image_size)}" if image_size
                                      else ""))
  return LabelledImages(pixels.to_channels(images, channels), labels, 10, source)


def _load(data, split: str, seed: int = 0, download: bool | None = None) -> LabelledImages:
  del seed, download  # fixed splits, inside scikit-learn: no files, no tfds
  return load(split, data.image_size, data.channels)


UCI_DIGITS = DataSource("uci_digits", named("uci_digits"), ("image_size", "channels"), _load,
                        splits=SPLITS)
