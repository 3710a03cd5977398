"""splits: rotated classes (the other functions are exercised through test_data_folder and the
runs)."""

import numpy as np
import pytest

from siamese_jax import data, splits


def _dataset():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 4, 4, 1)).astype(np.uint8)
  return data.LabelledImages(images=images, labels=np.array([0, 0, 1, 1, 2, 2], np.int32),
                             num_classes=3, source="synthetic", groups=np.array([0, 0, 0, 0, 1, 1]),
                             group_names=["a", "b"], class_names=["a/c1", "a/c2", "b/c1"])


def test_rotated_classes_are_new_classes_of_turned_images():
  rotated = splits.with_rotated_classes(_dataset())
  original = _dataset()
  assert rotated.images.shape == (24, 4, 4, 1) and rotated.num_classes == 12
  for k in (1, 2, 3):
    block = slice(6 * k, 6 * (k + 1))
    np.testing.assert_array_equal(rotated.images[block], np.rot90(original.images, k, axes=(1, 2)))
    np.testing.assert_array_equal(rotated.labels[block], original.labels + 3 * k)
    np.testing.assert_array_equal(rotated.groups[block], original.groups)
  assert rotated.class_names[3:6] == ["a/c1/rotated90", "a/c2/rotated90", "b/c1/rotated90"]
  assert len(rotated.class_names) == 12 and len(set(rotated.class_names)) == 12
  assert set(np.unique(rotated.labels)) == set(range(12))


def test_rotated_classes_need_square_images():
  wide = _dataset()._replace(images=np.zeros((6, 4, 5, 1), np.uint8))
  with pytest.raises(ValueError, match="square"):
    splits.with_rotated_classes(wide)


def test_mirrored_classes_double_every_turn():
  original = _dataset()
  both = splits.with_rotated_classes(original, mirror=True)
  assert both.images.shape == (48, 4, 4, 1) and both.num_classes == 24
  for k in range(4):
    block = slice(6 * (4 + k), 6 * (5 + k))  # the mirror of turn k follows the four turns
    np.testing.assert_array_equal(both.images[block],
                                  np.flip(np.rot90(original.images, k, axes=(1, 2)), axis=2))
    np.testing.assert_array_equal(both.labels[block], original.labels + 3 * (4 + k))
  assert both.class_names[12] == "a/c1/mirrored" and both.class_names[15] == "a/c1/rotated90/mirrored"
  assert len(set(both.class_names)) == 24
  mirrored_only = splits.with_rotated_classes(original, turns=(), mirror=True)
  assert mirrored_only.num_classes == 6
  np.testing.assert_array_equal(mirrored_only.images[6:], original.images[:, :, ::-1])


def test_split_by_alphabets_holds_out_whole_alphabets():
  alphabets = np.repeat(np.arange(5), 4)
  labels = np.arange(20)
  kept, held = splits.split(labels, 0.2, "alphabets", seed=3, groups=alphabets)
  assert len(np.unique(alphabets[held])) == 1 and len(held) == 4
  assert not set(alphabets[kept]) & set(alphabets[held])
  np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(20))
  # at least one alphabet held out, and never all of them
  assert len(np.unique(alphabets[splits.split(labels, 0.01, "alphabets", 0, alphabets)[1]])) == 1
  assert len(np.unique(alphabets[splits.split(labels, 0.99, "alphabets", 0, alphabets)[0]])) == 1
  with pytest.raises(ValueError, match="alphabets"):
    splits.split(labels, 0.2, "alphabets", seed=0)
