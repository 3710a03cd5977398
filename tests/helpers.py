"""Helpers shared by the test modules (``from tests import helpers``); fixtures are in conftest.py."""

import os
import pathlib
import sys

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
