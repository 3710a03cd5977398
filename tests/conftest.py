"""Fixtures and the hypothesis profile (shared helpers are in tests/helpers.py)."""

import os
import pathlib

import hypothesis
import jax
import pytest

from tests.helpers import SHARED_DATA

hypothesis.settings.register_profile(
    "siamese", max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "12")), deadline=None,
    derandomize=bool(os.environ.get("CI")),  # CI: the same examples every run; locally: explore
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("siamese")


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


def _without_jit(fn, **unused_jit_kwargs):
  return fn


@pytest.fixture(scope="session", params=["with_jit", "without_jit"])
def variant(request):
  """``variant(fn, **jit_kwargs)``: ``fn`` under ``jax.jit`` or run eagerly, op by op; a test
  that takes it runs both ways (chex.variants(with_jit=True, without_jit=True) as a pytest
  parameter, so it mixes with parametrize and hypothesis). Session-scoped, as hypothesis wants."""
  return jax.jit if request.param == "with_jit" else _without_jit
