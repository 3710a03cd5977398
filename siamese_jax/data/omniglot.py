"""Omniglot (Lake et al. 2015): 1,623 handwritten characters of 50 alphabets, 20 drawings each.

Its splits are tfds's "train" (the 30 background alphabets) and "test" (the 20 evaluation
alphabets), and Lake's minimal "small1" and "small2" (5 background alphabets each), read by the
offline routes of ``official``. Each character is a class, named "<alphabet>/characterNN"; its
alphabet is the image's group (``LabelledImages.groups``), so validation and one-shot episodes can
keep to whole alphabets.
"""

import numpy as np

from siamese_jax.data import official
from siamese_jax.data.labelled import LabelledImages
from siamese_jax.data.source import DataSource, named

SPLITS = ("train", "test", "small1", "small2")


def labelled(arrays, source: str, builder) -> LabelledImages:
  """The arrays of an Omniglot tfds split as LabelledImages: characters renumbered 0..C-1 in the
  order of their global label, alphabets as groups (this split's only, sorted)."""
  classes, labels = np.unique(arrays["label"], return_inverse=True)
  all_alphabets = builder.info.features["alphabet"].names
  alphabet_names, alphabets = np.unique(np.asarray(all_alphabets)[arrays["alphabet"]],
                                        return_inverse=True)
  _, by_class = np.unique(labels, return_index=True)  # an example of each class
  class_names = [f"{alphabet_names[alphabets[i]]}/character{arrays['alphabet_char_id'][i] + 1:02d}"
                 for i in by_class]
  return LabelledImages(arrays["image"], labels.astype(np.int32), len(classes), source,
                        alphabets.astype(np.int32), [str(a) for a in alphabet_names], class_names)


def _load(data, split: str, seed: int = 0, download: bool | None = None) -> LabelledImages:
  del seed  # Omniglot's splits are fixed
  return official.load("omniglot", split, data, labelled, download=download)


OMNIGLOT = DataSource("omniglot", named("omniglot"), official.READS, _load, splits=SPLITS,
                      groups=True)
