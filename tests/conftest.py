"""Fixtures, the hypothesis profile and JAX's compilation cache (shared helpers are in
tests/helpers.py)."""

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


def pytest_configure(config):
  """XLA's compiled programs persist in pytest's cache folder (.pytest_cache/d/jax_compilation).
  The fast loop spends most of its time compiling the same small programs again; with a warm
  cache test_distances and test_losses take 18 s of CPU instead of 53 s. ``--cache-clear``
  empties it; ``-p no:cacheprovider`` or JAX_COMPILATION_CACHE_DIR (which wins) turn this off."""
  if getattr(config, "cache", None) is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  jax.config.update("jax_compilation_cache_dir", str(config.cache.mkdir("jax_compilation")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="session", autouse=True)
def _user_cache_in_tmp(tmp_path_factory):
  """siamese_jax.caches writes decoded datasets (and main.py's compiled programs) into a session
  folder, not ~/.cache/siamese_jax: tests prepare into fresh tfds folders every session."""
  previous = os.environ.get("SIAMESE_JAX_CACHE_DIR")
  os.environ["SIAMESE_JAX_CACHE_DIR"] = str(tmp_path_factory.mktemp("user_cache"))
  yield
  if previous is None:
    os.environ.pop("SIAMESE_JAX_CACHE_DIR", None)
  else:
    os.environ["SIAMESE_JAX_CACHE_DIR"] = previous


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
