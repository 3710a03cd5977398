"""One-shot classification on the runs of Lake et al. (2015), beside raw-pixel 1-NN.

The runs are the layout of brendenlake/omniglot ``python/one-shot-classification``: folders
run01 ... run20, each with test/ and training/ 105x105 PNGs and a class_labels.txt whose lines pair
a test image with the training image of its class, as paths relative to the runs folder:

    run01/test/item01.png run01/training/class08.png

A test image is classified as the training image its score calls most similar: the smallest
embedding distance (model.distance) for distance heads, triplet and classifier models, the largest
pair logit (test, training) for logit heads. Images are read as grayscale uint8, white background
as in the training data, and area-resized to the model's training size as the data loader does.
The reference is raw-pixel 1-NN: the Euclidean distance between the same preprocessed images.

  python -m siamese_jax.oneshot --runs omniglot/python/one-shot-classification \\
      --checkpoint runs/omniglot
"""

import argparse
import json
import pathlib
import re
import sys
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from siamese_jax import arguments

LABELS_FILE = "class_labels.txt"
RUN_SIZE = 105  # side of every image of the official runs

Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]


class OneShotError(ValueError):
  """A runs folder that cannot be evaluated; the message names the file and the fix."""


class Run(NamedTuple):
  """One run: test [T, 105, 105, 1] and training [C, 105, 105, 1] uint8, truth [T] in [0, C)."""
  name: str
  test: np.ndarray
  training: np.ndarray
  truth: np.ndarray


def parse_class_labels(text: str, where: str = LABELS_FILE) -> list[tuple[str, str]]:
  """The (test, training) path pairs of a class_labels.txt, one per non-blank line, in order.

  Raises OneShotError naming ``where`` and the line for a line that is not two paths.
  """
  pairs = []
  for number, line in enumerate(text.splitlines(), 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2:
      raise OneShotError(f"{where} line {number}: expected 'TEST.png TRAINING.png' (two paths "
                         f"relative to the runs folder), got {line.strip()[:80]!r}; fix the line")
    pairs.append((fields[0], fields[1]))
  if not pairs:
    raise OneShotError(f"{where}: no lines; each line pairs a test image with its training image")
  seen = {}
  for number, (test, _) in enumerate(pairs, 1):
    if test in seen:
      raise OneShotError(f"{where}: test image {test} is listed twice (pairs {seen[test]} and "
                         f"{number}); each test image is classified once, remove the repeat")
    seen[test] = number
  ways = len({train for _, train in pairs})
  if ways < 2:
    raise OneShotError(f"{where}: a {ways}-way run (every line names the same training image) "
                       "tests nothing; a run needs at least 2 candidate training images")
  return pairs


def label_indices(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str], np.ndarray]:
  """(test paths [T], candidate training paths [C], truth [T] int32 index into the candidates).

  The candidates are the distinct training images the pairs name, sorted (class01, class02...).
  """
  training = sorted({train for _, train in pairs})
  position = {path: i for i, path in enumerate(training)}
  return [test for test, _ in pairs], training, np.array([position[t] for _, t in pairs], np.int32)


def predictions(similarity: np.ndarray) -> np.ndarray:
  """similarity [T, C] (higher = more alike) -> the most similar candidate [T] (first on ties)."""
  return np.argmax(similarity, axis=1)


def error_rate(similarity: np.ndarray, truth: np.ndarray) -> float:
  """Fraction of test images [T] whose most similar candidate (similarity [T, C]) is not truth."""
  return float(np.mean(predictions(similarity) != truth))


def pixel_similarity(test: np.ndarray, training: np.ndarray) -> np.ndarray:
  """Minus the Euclidean distance between raw pixels in [0, 1]: [T, ...], [C, ...] -> [T, C]."""
  a = test.reshape(len(test), -1).astype(np.float64) / 255.0
  b = training.reshape(len(training), -1).astype(np.float64) / 255.0
  return -np.sqrt(np.sum(np.square(a[:, None, :] - b[None, :, :]), axis=-1))


def run_errors(runs: list[Run], similarity: Similarity) -> list[float]:
  """The error rate of each run, each image scored with ``similarity(test, training) -> [T, C]``."""
  return [error_rate(similarity(run.test, run.training), run.truth) for run in runs]


# ----------------------------------------------------------------------------------- reading

def read_png(path: pathlib.Path, where: str) -> np.ndarray:
  """A RUN_SIZE x RUN_SIZE image as grayscale uint8 [H, W, 1]; PIL's "L" of the official 1-bit
  PNGs is what the data loader's tf.io.decode_png gives: 255 background, 0 strokes."""
  try:
    with Image.open(path) as image:
      pixels = np.asarray(image.convert("L"), np.uint8)
  except FileNotFoundError:
    raise OneShotError(f"{path} not found ({where}); restore the file or fix the line") from None
  except (OSError, UnidentifiedImageError, ValueError):
    raise OneShotError(f"{path}: not a readable image ({where}); replace it with the run's "
                       "PNG") from None
  if pixels.shape != (RUN_SIZE, RUN_SIZE):
    raise OneShotError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} image ({where}); the runs "
                       f"are {RUN_SIZE}x{RUN_SIZE} PNGs, replace it with the run's own file")
  return pixels[:, :, None]


def load_run(runs_dir: pathlib.Path, name: str) -> Run:
  """Reads run ``name`` of ``runs_dir``: its class_labels.txt and every PNG it lists."""
  labels_path = runs_dir / name / LABELS_FILE
  try:
    text = labels_path.read_text()
  except (OSError, UnicodeDecodeError) as error:
    reason = getattr(error, "strerror", None) or "not text"
    raise OneShotError(f"{labels_path}: cannot read it ({reason}); every run folder needs its "
                       f"{LABELS_FILE}") from None
  pairs = parse_class_labels(text, str(labels_path))
  tests, training, truth = label_indices(pairs)
  where = f"listed in {labels_path}"
  read = lambda paths: np.stack([read_png(runs_dir / p, where) for p in paths])
  return Run(name, read(tests), read(training), truth)


def load_runs(runs_dir) -> list[Run]:
  """Every run (folders named run<digits>, sorted) of ``runs_dir``, or the one run it is."""
  runs_dir = pathlib.Path(runs_dir).expanduser()
  if not runs_dir.is_dir():
    raise OneShotError(f"{runs_dir}: no such folder; pass --runs the one-shot-classification "
                       "folder of brendenlake/omniglot (python/one-shot-classification)")
  if (runs_dir / LABELS_FILE).is_file():  # a single run: its paths are relative to its parent
    return [load_run(runs_dir.parent, runs_dir.name)]
  names = sorted(p.name for p in runs_dir.iterdir()
                 if p.is_dir() and re.fullmatch(r"run\d+", p.name))
  if not names:
    raise OneShotError(f"{runs_dir}: no run folders (run01, run02, ...); pass --runs the "
                       "one-shot-classification folder of brendenlake/omniglot")
  return [load_run(runs_dir, name) for name in names]


# ------------------------------------------------------------------------------------- model

def resize_like_training(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N, H, W, 1] -> [N, size, size, 1] as siamese_jax.data.builders.read_split resizes:
  TensorFlow area interpolation in float32, rounded and clipped back to uint8."""
  if images.shape[1] == size:
    return images
  import tensorflow as tf  # only when a resize is needed: TensorFlow takes seconds to import
  resized = tf.image.resize(tf.cast(images, tf.float32), [size, size], method="area")
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def model_similarity(config, state, batch: int | None = None) -> Similarity:
  """``similarity(test uint8 [T, S, S, 1], training [C, S, S, 1]) -> [T, C]`` of a trained model,
  every (test, training) pair scored through siamese_jax.inference (scoring's rule; higher = more
  alike): test images by the first tower, training images by the second, in inference's padded
  batches (``batch`` is no longer used). One inference.Model per image size, so one compilation.
  """
  from siamese_jax import inference
  del batch
  by_shape = {}

  def similarity(test, training):
    shape = test.shape[1:]
    if shape not in by_shape:
      by_shape[shape] = inference.Model(config, state.params, state.apply_fn, shape)
    model = by_shape[shape]
    sign = 1.0 if model.higher_means_same else -1.0
    emb_test, emb_training = model.embed(test, tower=0), model.embed(training, tower=1)
    a = np.repeat(emb_test, len(training), axis=0)
    b = np.tile(emb_training, (len(test), 1))
    return sign * model.score_embeddings(a, b).reshape(len(test), len(training))
  return similarity


# --------------------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
  parser = arguments.OneLineParser(
      prog="python -m siamese_jax.oneshot", formatter_class=argparse.RawDescriptionHelpFormatter,
      description=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0],
      epilog="example:\n" + __doc__.rsplit("\n\n", 1)[1])
  parser.add_argument("--runs", required=True, metavar="DIR", help="folder of run01 ... runNN "
                      "(brendenlake/omniglot python/one-shot-classification), or one run folder")
  parser.add_argument("--checkpoint", metavar="WORKDIR", help="workdir of a training run (python "
                      "main.py --workdir); without it only the raw-pixel baseline is printed")
  parser.add_argument("--epoch", type=int, metavar="N",
                      help="checkpoint epoch to load (default: the latest)")
  parser.add_argument("--json", metavar="OUT", help="also write the per-run error rates here")
  return parser


COLUMN_TITLES = {"model_error": "model", "pixel_error": "raw pixels 1-NN"}


def _table(names: list[str], columns: dict[str, list[float]]) -> str:
  rows = [f"{'run':<8}" + "".join(f"{COLUMN_TITLES[key]:>18}" for key in columns)]
  for i, name in enumerate(names):
    rows.append(f"{name:<8}" + "".join(f"{values[i]:>18.1%}" for values in columns.values()))
  rows.append(f"{'mean':<8}" + "".join(f"{np.mean(v):>18.1%}" for v in columns.values()))
  return "\n".join(rows)


def _evaluate(args) -> tuple[list[Run], dict[str, list[float]], str, int]:
  """(runs, error rates per column, the model in words or "", image side) for ``args``."""
  from siamese_jax import checkpoints
  from siamese_jax.models import LOGIT_HEADS
  runs = load_runs(args.runs)
  config, state, size = None, None, RUN_SIZE
  if args.checkpoint:
    config, state = checkpoints.load_trained(args.checkpoint, args.epoch)
    size = config.data.image_size
  runs = [run._replace(test=resize_like_training(run.test, size),
                       training=resize_like_training(run.training, size)) for run in runs]
  columns, model = {}, ""
  if state is not None:
    columns["model_error"] = run_errors(runs, model_similarity(config, state))
    score = ("largest pair logit" if config.model.head in LOGIT_HEADS else
             f"smallest {config.model.distance} embedding distance")
    model = (f"{args.checkpoint} (step {int(state.step)}, {config.model.encoder} encoder, "
             f"{config.model.head} head, {config.loss.name} loss; {score})")
  columns["pixel_error"] = run_errors(runs, pixel_similarity)
  return runs, columns, model, size


def main(argv: list[str] | None = None) -> int:
  """The CLI: prints the table (and writes --json); 2 with a one-line error for bad input."""
  args = _parser().parse_args(argv)
  from siamese_jax.checkpoints import CheckpointError  # after parsing: --help answers fast
  if args.json and pathlib.Path(args.json).expanduser().is_dir():  # before minutes of scoring
    print(f"error: --json {args.json} is a folder; pass a file path such as "
          f"{pathlib.Path(args.json) / 'oneshot.json'}", file=sys.stderr)
    return 2
  try:
    runs, columns, model, size = _evaluate(args)
    ways = "/".join(str(n) for n in sorted({len(run.training) for run in runs}))
    print(f"one-shot classification error, {len(runs)} run{'s' * (len(runs) > 1)} in "
          f"{args.runs}, {ways}-way, {size}x{size} images" + (f"\nmodel: {model}" * bool(model)))
    print(_table([run.name for run in runs], columns))
    if args.json:
      result = {"runs_dir": str(args.runs), "checkpoint": args.checkpoint, "model": model or None,
                "image_size": size, "mean": {k: float(np.mean(v)) for k, v in columns.items()},
                "runs": [{"run": run.name, "ways": len(run.training), "test_images": len(run.test),
                          **{k: v[i] for k, v in columns.items()}} for i, run in enumerate(runs)]}
      try:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
      except OSError as error:
        raise OneShotError(f"--json {args.json}: cannot write it ({error.strerror}); choose a "
                           "writable path") from None
  except (OneShotError, CheckpointError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  import os
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (the resize): keep it quiet
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as main.py
  sys.exit(main())
