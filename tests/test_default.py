"""experiments/default.py: a value set on one config never reaches another; a run saved under
a key's earlier name still reads."""

import json

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


def _saved_before_the_rename(config) -> dict:
  """``config`` as an earlier version wrote config.json: the threshold under loss."""
  saved = json.loads(config.to_json_best_effort())
  saved["loss"]["threshold"] = saved["eval"].pop("threshold")
  return saved


def test_a_run_saved_with_loss_threshold_still_loads_and_resumes(tmp_path):
  """config.json of a run from before eval.threshold held it as loss.threshold."""
  from siamese_jax import checkpoints, config_keys, workdir
  config = default.override(default.get_config(), {"eval.threshold": 0.3, "train.epochs": 1})
  saved = _saved_before_the_rename(config)
  assert config_keys.upgrade(saved) == json.loads(config.to_json_best_effort())
  assert "threshold" in saved["loss"]  # upgrade copies
  (tmp_path / "config.json").write_text(json.dumps(saved))
  loaded, _ = checkpoints._read_run_config(tmp_path)
  assert loaded.eval.threshold == 0.3 and "threshold" not in loaded.loss
  (tmp_path / "checkpoints").mkdir()
  assert workdir.prepare(config, tmp_path)  # the same run: resumed, not refused
  assert json.loads((tmp_path / "config.json").read_text())["eval"]["threshold"] == 0.3
