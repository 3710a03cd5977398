"""experiments/default.py: a value set on one config never reaches another."""

from experiments import cars196, default


def test_placeholders_are_not_shared_between_configs():
  first = default.get_config()
  first.data.image_size = 5
  default.override(first, {"data.device_budget_mb": 1.0, "train.augment_crop": (0.5, 1.0)})
  cars196.get_config()  # sets data.image_size and data.channels on its own config
  fresh = default.get_config()
  assert fresh.data.image_size is None and fresh.data.channels is None
  assert fresh.data.device_budget_mb is None and fresh.train.augment_crop is None
  assert first.data.image_size == 5


def test_omniglot_full_is_the_default_omniglot_on_the_standard_split():
  """experiments/omniglot_full.py: the same run on tfds "train"/"test"; with the small splits as
  overrides it is experiments/omniglot.py up to its epochs."""
  from experiments import omniglot, omniglot_full
  full = omniglot_full.get_config()
  assert (full.data.train_split, full.data.test_split) == ("train", "test")
  small = default.override(omniglot_full.get_config("tiny"), {
      "data.train_split": "small1", "data.test_split": "small2"})
  want = omniglot.get_config("tiny")
  assert small.to_dict() == want.to_dict()
