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
