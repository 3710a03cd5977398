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
