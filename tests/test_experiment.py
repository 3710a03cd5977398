"""siamese_jax.experiment beyond a single run (tests/test_main.py covers one run's outputs): the
latent animation of a run that is extended keeps every epoch, all drawn again in one view; runs
in one process release their compiled programs."""

import os

import numpy as np
import pytest
from PIL import Image

from siamese_jax import experiment, run_plots
from tests.helpers import tiny_config

pytestmark = pytest.mark.slow  # trains


def test_extended_run_redraws_every_epoch_in_one_view(tmp_path, tfds_dir):
  workdir = tmp_path / "run"
  experiment.train_and_evaluate(tiny_config("contrastive", tfds_dir, **{"eval.plot_points": 64}),
                                str(workdir))
  first = (workdir / "plots" / "latent_epoch001.png").read_bytes()
  config = tiny_config("contrastive", tfds_dir, **{"eval.plot_points": 64, "train.epochs": 3})
  summary = experiment.train_and_evaluate(config, str(workdir))  # resumes, trains epoch 3
  assert summary["epochs"] == 3
  frames = sorted(p.name for p in (workdir / "plots").glob("latent_epoch*.png"))
  assert frames == ["latent_epoch001.png", "latent_epoch002.png", "latent_epoch003.png"]
  kept = sorted(p.name for p in (workdir / run_plots.LATENT_EMBEDDINGS_DIR).iterdir())
  assert kept == ["epoch001.npy", "epoch002.npy", "epoch003.npy"]
  assert np.load(workdir / run_plots.LATENT_EMBEDDINGS_DIR / "epoch001.npy").shape[0] == 64
  # Epoch 1 is drawn again in the projection of the new last epoch, so its frame changes.
  assert (workdir / "plots" / "latent_epoch001.png").read_bytes() != first
  with Image.open(workdir / "plots" / "latent.gif") as gif:
    assert gif.n_frames == 3


def _memory_maps() -> int:
  with open("/proc/self/maps") as maps:
    return sum(1 for _ in maps)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux only")
def test_runs_in_one_process_release_their_compiled_programs(tmp_path, tfds_dir, shared_data):
  """XLA:CPU programs hold memory maps (~1,000 more for each Omniglot run); runs that kept theirs
  reached vm.max_map_count (65,530) after ~60 Omniglot runs in one process (the report's quick
  mode) and segfaulted. Each seed holds out other validation characters, so each
  run compiles programs of new shapes."""
  config = lambda seed: tiny_config("omniglot", tfds_dir, **{
      "seed": seed, "data.dir": str(shared_data / "omniglot"), "plots.latent": False,
      "plots.animation": False, "model.filters": 8, "model.embedding_dim": 16,
      "model.test_time_shift": 1})
  experiment.train_and_evaluate(config(0), str(tmp_path / "run0"))
  before = _memory_maps()
  for seed in (1, 2):
    experiment.train_and_evaluate(config(seed), str(tmp_path / f"run{seed}"))
  grew = _memory_maps() - before
  assert grew < 200, f"two runs kept {grew} memory maps"


def test_a_run_logs_one_config_line_and_no_progress_frames_off_a_terminal(tmp_path, tfds_dir,
                                                                         capfd):
  """issue 27 problem 6: the whole config goes to config.json and one line names the keys that
  differ from the defaults; off a terminal (a log file) tqdm draws no frames, the epoch lines
  remain."""
  import json
  workdir = tmp_path / "run"
  config = tiny_config("contrastive", tfds_dir, **{"plots.latent": False, "train.epochs": 2})
  experiment.train_and_evaluate(config, str(workdir))
  out, err = capfd.readouterr()
  config_lines = [line for line in out.splitlines() if line.startswith("config")]
  assert len(config_lines) == 1, out
  assert str(workdir / "config.json") in config_lines[0]
  assert "train.steps_per_epoch=6" in config_lines[0] and "loss.name" not in config_lines[0]
  assert "  batch_size: 32" not in out  # the old multi-line dump
  assert json.loads((workdir / "config.json").read_text())["train"]["batch_size"] == 32
  assert "step/s" not in out + err and "train:" not in out + err  # our bar: "train: 3/12 ..."
  assert [line for line in out.splitlines() if line.startswith("epoch ")][-1].startswith(
      "epoch 2: train loss")
