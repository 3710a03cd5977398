"""Shared test settings: a fast hypothesis profile and the path of ../shared/data."""

import os
import pathlib

import hypothesis
import pytest

hypothesis.settings.register_profile(
    "siamese", max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "12")), deadline=None,
    derandomize=bool(os.environ.get("CI")),  # CI: the same examples every run; locally: explore
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("siamese")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
  """``../shared/data`` beside the repository (skips the test when it is absent)."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"{SHARED_DATA} not found")
  return SHARED_DATA


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
  """A tfds data folder shared by the tests that run whole trainings (prepared once)."""
  return str(tmp_path_factory.mktemp("tfds"))


def shrink_for_tests(config, tfds_dir: str, epochs: int = 2, **train_overrides):
  """``config`` cut down to a run of a few seconds: 6 steps of 32 per epoch, 3 steps per call."""
  config.data.tfds_data_dir = tfds_dir
  config.train.epochs = epochs
  config.train.steps_per_epoch = 6
  config.train.steps_per_call = 3
  config.train.batch_size = 32
  config.eval.pairs = 200
  config.eval.plot_points = 300
  for key, value in train_overrides.items():
    config.train[key] = value
  return config
