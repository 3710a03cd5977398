"""Helpers shared by the test modules (``from tests import helpers``); fixtures are in conftest.py."""

import importlib
import os
import pathlib
import sys

import jax
import jax.numpy as jnp

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def repo_env(**extra: str) -> dict[str, str]:
  """This process's environment with the repository on PYTHONPATH (for subprocesses), plus
  ``extra``."""
  return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}


def main_command(workdir, tfds_dir, *extra) -> list[str]:
  """``python main.py`` on experiments/contrastive.py into ``workdir``: no latent plots, 100
  evaluation pairs, then the ``extra`` flags. Run it with ``cwd=REPO_ROOT``."""
  return [sys.executable, "main.py", "--config", "experiments/contrastive.py",
          "--workdir", str(workdir), f"--config.data.tfds_data_dir={tfds_dir}",
          "--config.plots.latent=False", "--config.eval.pairs=100", *extra]


def tiny_config(experiment: str, tfds_dir: str, **overrides):
  """``experiments/<experiment>.py:tiny`` (a run of seconds, see experiments/default.py) reading
  data from ``tfds_dir``, with ``overrides`` {"section.key": value} applied through the locked
  config (a misspelt key raises)."""
  from experiments import default
  config = importlib.import_module(f"experiments.{experiment}").get_config("tiny")
  return default.override(config, {"data.tfds_data_dir": tfds_dir, **overrides})


def all_finite(tree) -> bool:
  """Whether every leaf of ``tree`` is finite (bfloat16 leaves compared as float32)."""
  return all(bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32))))
             for leaf in jax.tree_util.tree_leaves(tree))
