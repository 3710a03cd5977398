"""The verification threshold on a user's small folder (issue 27, problem 1): a folder shaped as
the issue's faces (37 training + 3 testing classes x 10 images, here Omniglot characters of
../shared/data at 28 x 28), trained with the :tiny contrastive config and the default
data.validation_fraction (0.1: 3 or 4 validation classes), for a few seeds. Prints, for the
threshold of best accuracy on the validation pairs (what calibration chose before issue 27) and
the one calibration.json now holds for predict: FAR and FRR on every distinct pair of the unseen
test classes, and how many of the 30 test images a uniform-noise, a black and a white image are
verified "same" with.

  python benchmarks/small_folder_threshold.py [--seeds 0 1 2] [--epochs N]
  python benchmarks/small_folder_threshold.py --smoke   # one seed, 1 epoch
"""

import argparse
import contextlib
import io
import json
import pathlib
import sys
import tempfile
import zipfile

import numpy as np
import PIL.Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from siamese_jax import config_keys, evaluate, evaluators, experiment, inference, scoring  # noqa: E402,E501
from siamese_jax.data import protocol  # noqa: E402
from siamese_jax.data import files  # noqa: E402


def write_folder(root: pathlib.Path) -> pathlib.Path:
  """root/training/charNN (37 characters) and root/testing/charNN (3), 10 PNGs each."""
  zip_path = files.known_places("omniglot")[-1] / "images_background_small1.zip"
  with zipfile.ZipFile(zip_path) as archive:
    names = sorted(n for n in archive.namelist() if n.endswith(".png"))
    characters = sorted({n.rsplit("/", 1)[0] for n in names})[:40]
    for c, character in enumerate(characters):
      split = "training" if c < 37 else "testing"
      for i, name in enumerate([n for n in names if n.startswith(character + "/")][:10]):
        with archive.open(name) as handle:
          image = PIL.Image.open(handle).convert("L").resize((28, 28), PIL.Image.BILINEAR)
        target = root / split / f"char{c:02d}" / f"{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
  return root


def measure(folder: pathlib.Path, workdir: pathlib.Path, seed: int, epochs: int | None) -> dict:
  overrides = {"data.name": "folder", "data.dir": str(folder), "data.split_by": "classes",
               "data.tfds_data_dir": str(workdir.parent / "tfds"), "data.image_size": 28,
               "train.batch_size": 32, "eval.pairs": 1000, "seed": seed,
               "plots.latent": False, "plots.animation": False}
  if epochs:
    overrides.update({"train.epochs": epochs, "train.steps_per_epoch": 20,
                      "train.steps_per_call": 10})
  config = config_keys.override(config_keys.get_config("tiny"), overrides)
  with contextlib.redirect_stdout(io.StringIO()):
    experiment.train_and_evaluate(config, str(workdir))
  saved = json.loads((workdir / "calibration.json").read_text())
  model = inference.load(workdir)
  test_paths = sorted(str(p) for p in (folder / "testing").rglob("*.png"))
  test_labels = np.array([pathlib.Path(p).parent.name for p in test_paths])
  drawn = evaluate.distinct_pairs(test_labels, 100_000)
  paths = np.array(test_paths)
  test_scores = model.score(list(paths[drawn["idx_a"]]), list(paths[drawn["idx_b"]]))
  rng = np.random.default_rng(0)
  strange = {"noise": rng.integers(0, 256, (28, 28), dtype=np.uint8),
             "black": np.zeros((28, 28), np.uint8), "white": np.full((28, 28), 255, np.uint8)}
  strange_scores = {}
  for name, pixels in strange.items():
    path = workdir / f"{name}.png"
    PIL.Image.fromarray(pixels).save(path)
    strange_scores[name] = model.score(test_paths, [str(path)] * len(test_paths))
  entry = saved["checkpoints"][str(model.step)]
  context = evaluators.for_run(model.config, model.params, model.apply_fn,
                               protocol.load_datasets(model.config))
  val_scores, val_same, _ = context.distinct_pairs("validation")
  higher = model.higher_means_same
  thresholds = {"best accuracy (before)": evaluate.best_threshold(val_scores, val_same, higher),
                "calibration.json (now)": entry["threshold"]}
  rows = {}
  for name, threshold in thresholds.items():
    rates = evaluate.error_rates(test_scores, drawn["same"], threshold, higher)
    rows[name] = {"threshold": threshold, **rates,
                  **{k: int(np.sum(scoring.predict_same(np.asarray(v), higher, threshold)))
                     for k, v in strange_scores.items()}}
  return {"seed": seed, "validation_classes": len(set(context.datasets.validation.labels.tolist())),
          "notice": saved["notice"], "rows": rows, "test_images": len(test_paths),
          "test_pairs": (int(drawn["same"].sum()), int((~drawn["same"]).sum()))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--epochs", type=int, default=None, help="default: the :tiny config's 2 epochs of 6 steps; "
                      "N: N epochs of 20 steps")
  parser.add_argument("--smoke", action="store_true", help="one seed, 1 epoch")
  args = parser.parse_args()
  seeds, epochs = ([0], 1) if args.smoke else (args.seeds, args.epochs)
  with tempfile.TemporaryDirectory() as scratch:
    folder = write_folder(pathlib.Path(scratch) / "chars")
    for seed in seeds:
      found = measure(folder, pathlib.Path(scratch) / f"run{seed}", seed, epochs)
      same, different = found["test_pairs"]
      print(f"seed {seed}: {found['validation_classes']} validation classes; test {same} same, "
            f"{different} different distinct pairs; {found['test_images']} test images vs "
            f"noise / black / white")
      for name, row in found["rows"].items():
        print(f"  {name:<24} threshold {row['threshold']:.4f}: test FAR {row['far']:.3f}, FRR "
              f"{row['frr']:.3f}; accepted noise {row['noise']}, black {row['black']}, white "
              f"{row['white']}")


if __name__ == "__main__":
  main()
