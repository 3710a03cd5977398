"""The Omniglot default (``experiments/omniglot.py``, 35 epochs) trained to the end through
``siamese_jax.experiment.train_and_evaluate``, as ``main.py`` runs it, with its data read from
the official zips without tfds (``omniglot_zips``). Reports the run's wall and training time,
its steady images/s and the 20-way and 5-way one-shot accuracy on the test alphabets.
"""

import json
import pathlib
import shutil
import tempfile
import time

from experiments import default, omniglot
from siamese_jax import experiment
from siamese_jax.data import files

import omniglot_zips

METRICS_FILE = "metrics.jsonl"  # one line per finished epoch (siamese_jax.workdir)


def zips_folder(requested: pathlib.Path) -> pathlib.Path | None:
  """``requested`` if it holds the two zips of the default (small1, small2), else the first of
  the library's known Omniglot places that does (../shared/data/omniglot here), else None."""
  needed = [files.OMNIGLOT_ZIPS[split].filename for split in ("small1", "small2")]
  for folder in [requested, *files.known_places("omniglot")]:
    if all((folder / name).is_file() for name in needed):
      return folder
  return None


EPOCH_KEYS = ("epoch", "epoch_seconds", "examples_per_second", "train_loss", "val_accuracy",
              "val_roc_auc")


def epochs(workdir: pathlib.Path) -> list[dict]:
  """Each finished epoch's time, images/s, loss and validation figures (metrics.jsonl)."""
  path = workdir / METRICS_FILE
  lines = path.read_text().splitlines() if path.is_file() else []
  return [{k: v for k, v in json.loads(line).items() if k in EPOCH_KEYS} for line in lines]


def results_of(summary: dict) -> dict:
  """The figures the device run reports, from the run's summary.json."""
  test, validation = summary.get("test", {}), summary.get("validation", {})
  return {
      "wall_seconds": summary.get("wall_seconds"), "train_seconds": summary.get("train_seconds"),
      "examples_per_second": summary.get("examples_per_second"), "epochs": summary.get("epochs"),
      "steps": summary.get("steps"), "test_one_shot": test.get("one_shot"),
      "test_20_way": (test.get("one_shot") or {}).get("20_way"),
      "test_roc_auc": test.get("roc_auc"), "test_retrieval": test.get("retrieval"),
      "validation_one_shot": validation.get("one_shot"), "devices": summary.get("devices"),
      "versions": summary.get("versions"),
  }


def run(ctx) -> None:
  """Part "omniglot" (ctx: run.PartContext): trains the default (the ``tiny`` variant in the dry
  run) and writes omniglot.json: first the workdir (so a run stopped by the budget can be read
  back), then the results; the workdir is removed after a finished run."""
  folder = zips_folder(ctx.omniglot_dir)
  if folder is None:
    ctx.write({"status": "skipped", "reason": f"no images_background_small1.zip and "
               f"images_background_small2.zip in {ctx.omniglot_dir} (nor in the library's known "
               "Omniglot places); see benchmarks/device/README.md"})
    return
  variant = "tiny" if ctx.dry_run else None
  # The dry run checks the route, not the figures: no test-time views (25 of each test image) or
  # latent plots, which are most of its CPU time.
  dry = {"model.test_time_shift": 0, "plots.latent": False} if ctx.dry_run else {}
  config = default.override(omniglot.get_config(variant), {"data.dir": str(folder), **dry})
  workdir = pathlib.Path(tempfile.mkdtemp(prefix="omniglot_default_"))
  base = {"config": f"experiments/omniglot.py{':tiny' if variant else ''}", "data_dir": str(folder),
          "workdir": str(workdir), "epochs_planned": config.train.epochs}
  ctx.write({"status": "running", **base})
  start = time.perf_counter()
  with omniglot_zips.omniglot_from_zips(folder):
    summary = experiment.train_and_evaluate(config, str(workdir))
  ctx.write({"status": "ok", **base, "seconds_in_train_and_evaluate": time.perf_counter() - start,
             **results_of(summary), "epoch_history": epochs(workdir)})
  shutil.rmtree(workdir, ignore_errors=True)
