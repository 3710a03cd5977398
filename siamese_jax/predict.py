"""Use a trained run from the command line: verify pairs, embed images, enrol a gallery, search it.

  python -m siamese_jax.predict verify --workdir runs/contrastive a.png b.png
  python -m siamese_jax.predict verify --workdir runs/contrastive --pairs pairs.csv
  python -m siamese_jax.predict evaluate --workdir runs/contrastive --json eval.json unseen/
  python -m siamese_jax.predict embed --workdir runs/contrastive --out emb.npz images/ x.png
  python -m siamese_jax.predict index --workdir runs/contrastive --out gallery.npz enrol/
  python -m siamese_jax.predict search --index gallery.npz --k 5 query.png queries/
  python -m siamese_jax.predict identify --index gallery.npz query.png

A PATH or QUERY is an image file or a folder (every image under it, sorted). The gallery folder
of `index` holds one subfolder per class (the label) with one or more images each. `search` and
`identify` load the run that built the index unless --workdir names it; an index of another
model is refused. A pairs file (CSV) holds two image paths a line (an optional header line;
relative paths from the current folder, else from the file's folder); `verify --pairs` prints
path_a, path_b, score and same/different, tab-separated, one line per pair. `evaluate` measures
the model on a folder of class folders never trained on: every distinct pair (each kind capped
by --max-pairs), ROC AUC, EER, TAR at FAR 1e-1/1e-2/1e-3, LFW's 10-fold accuracy and one-shot
identification. The threshold is the one calibrated at the end of training for the
checkpoint (--config.eval.far there chose a false-accept target); --far recalibrates it here on
the run's own validation pairs (the training data is read again). Errors: one line, exit 2.
"""

import argparse
import os
import pathlib
import sys

import numpy as np

from siamese_jax import arguments

EMBEDDINGS_FORMAT = "siamese_jax.embeddings/1"
# What to lower when a command runs out of memory (siamese_jax.memory.answers_exhaustion).
OUT_OF_MEMORY_ARGS = "--max-pairs (evaluate) or pass fewer images at a time"


class UsageError(ValueError):
  """Arguments that name nothing usable; the message says what to pass."""


# ------------------------------------------------------------------------------- files

def image_files(paths) -> list[pathlib.Path]:
  """The image files named by ``paths``: files as given, folders walked (sorted, every image
  under them by extension). A path that does not exist or a folder without images is refused."""
  from siamese_jax.data import folders
  found = []
  for path in map(lambda p: pathlib.Path(p).expanduser(), paths):
    if path.is_dir():
      inside = [path / rel for rel, _, _ in folders.scan(path).files]
      if not inside:
        raise UsageError(f"{path}: no images found (PNG, JPEG, BMP, WebP...); pass image files "
                         "or a folder that holds some")
      found.extend(inside)
    elif path.is_file():
      found.append(path)
    else:
      raise UsageError(f"{path}: no such file or folder; check the path")
  return found


def gallery_files(folder) -> tuple[list[pathlib.Path], list[str]]:
  """(image files, their labels) of a gallery folder FOLDER/<label>/<image> (nested labels are
  joined with /); images outside a class folder are refused."""
  from siamese_jax.data import folders
  root = pathlib.Path(folder).expanduser()
  if not root.is_dir():
    raise UsageError(f"{root}: no such folder; pass a folder of class folders, "
                     f"{root}/<label>/<image>")
  found = folders.scan(root)
  if not found.files:
    raise UsageError(f"{root}: empty gallery, no images found; put them in class folders, "
                     f"{root}/<label>/<image>")
  loose = [rel for rel, _, _ in found.files if not found.class_of(rel)]
  if loose:
    raise UsageError(f"{root / loose[0]}: image outside a class folder ({len(loose)} such); move "
                     f"it into {root}/<label>/")
  return [root / rel for rel, _, _ in found.files], [found.class_of(rel) for rel, _, _ in
                                                      found.files]


def pairs_file(path) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """The image pairs of a CSV file of two paths a line (blank lines skipped; a first line whose
  fields are neither files nor image names is a header). A relative path is taken from the
  current folder, else from the file's folder. A bad line or a missing image is refused, naming
  the line."""
  import csv
  from siamese_jax.data import folders
  path = pathlib.Path(path).expanduser()
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as error:
    reason = getattr(error, "strerror", None) or " ".join(str(error).split())
    raise UsageError(f"--pairs {path}: cannot read it ({reason}); pass a CSV file of two image "
                     "paths a line") from None

  def resolve(name: str) -> pathlib.Path:
    given = pathlib.Path(name).expanduser()
    return given if given.is_absolute() or given.exists() else path.parent / given

  def is_image_name(name: str) -> bool:
    return resolve(name).is_file() or pathlib.Path(name).suffix.lower() in folders.IMAGE_EXTENSIONS

  found, first = [], True
  for number, row in enumerate(rows, 1):
    fields = [field.strip() for field in row]
    if not any(fields):
      continue
    if len(fields) != 2 or not all(fields):
      raise UsageError(f"--pairs {path} line {number}: {len(fields)} fields ({','.join(row)}); "
                       "write two image paths a line, path_a,path_b")
    header, first = first and not any(map(is_image_name, fields)), False
    if header:
      continue
    pair = tuple(resolve(field) for field in fields)
    for field, image in zip(fields, pair):
      if not image.is_file():
        raise UsageError(f"--pairs {path} line {number}: {field}: no such image file; check the "
                         "path (relative paths: from the current folder or the file's)")
    found.append(pair)
  if not found:
    raise UsageError(f"--pairs {path}: no pairs in it; write two image paths a line")
  return found


def _write_npz(path: str, **fields) -> None:
  try:
    with open(path, "wb") as f:
      np.savez(f, **{name: np.asarray(value) for name, value in fields.items()})
  except OSError as error:
    raise UsageError(f"--out {path}: cannot write it ({error.strerror}); choose a writable "
                     "path") from None


# ---------------------------------------------------------------------------- commands

def _model(args):
  from siamese_jax import inference
  model = inference.load(args.workdir, args.checkpoint or "best")
  if args.far is not None:
    model = _recalibrated(model, args.far)
  return model


def _recalibrated(model, far: float):
  """``inference.recalibrate(model, far)``, with its one-line notice on stderr where the
  validation pairs cannot measure ``far`` (evaluate.calibrate's rule and fallback)."""
  from siamese_jax import inference
  model = inference.recalibrate(model, far)
  if model.calibration.get("notice"):
    print(f"notice: {model.calibration['notice']}", file=sys.stderr, flush=True)
  return model


def _verdict_words(model, score: float) -> str:
  kind = "logit" if model.higher_means_same else f"{model.scoring.distance} distance"
  same = model.same(score)
  sign = (">" if same else "<=") if model.higher_means_same else ("<" if same else ">=")
  verdict = "same" if same else "different"
  return f"{verdict} ({kind} {score:.6g} {sign} threshold {model.threshold:.6g})"


def verify(args) -> None:
  if (args.pairs is None) == (args.image_b is None):
    raise UsageError("pass two images A B, or --pairs FILE.csv alone")
  if args.pairs is None:
    model = _model(args)
    print(_verdict_words(model, model.score(str(args.image_a), str(args.image_b))))
    return
  pairs = pairs_file(args.pairs)
  model = _model(args)
  names = sorted({str(p) for pair in pairs for p in pair})
  row = {name: i for i, name in enumerate(names)}
  emb_a = model.embed(names, tower=0)
  emb_b = emb_a if model.config.model.shared_weights else model.embed(names, tower=1)
  scores = model.score_embeddings(emb_a[[row[str(a)] for a, _ in pairs]],
                                  emb_b[[row[str(b)] for _, b in pairs]])
  for (a, b), score, same in zip(pairs, scores, np.atleast_1d(model.same(scores))):
    print(f"{a}\t{b}\t{score:.6g}\t{'same' if same else 'different'}")


def embed(args) -> None:
  model = _model(args)
  files = image_files(args.paths)
  embeddings = model.embed([str(f) for f in files])
  _write_npz(args.out, format=EMBEDDINGS_FORMAT, embeddings=embeddings,
             paths=[str(f) for f in files], fingerprint=model.fingerprint,
             workdir=model.workdir, epoch=model.epoch, step=model.step)
  print(f"wrote {embeddings.shape[0]} embeddings of {embeddings.shape[1]} dimensions to "
        f"{args.out} (embeddings [N, D] float32, paths [N])")


def index(args) -> None:
  from siamese_jax import inference
  model = _model(args)
  files, labels = gallery_files(args.folder)
  gallery = inference.Index.build(model, [str(f) for f in files], labels, files)
  gallery.save(args.out)
  print(f"enrolled {len(gallery)} images of {len(set(labels))} labels into {args.out}; "
        f"{model.describe()}")


def _rate(value) -> str:
  return "not measurable" if value is None else f"{value:.4f}"


def evaluate_folder(args) -> None:
  from siamese_jax import evaluate as evaluate_lib, evaluators, inference
  from siamese_jax.data.labelled import LabelledImages
  files, labels = gallery_files(args.folder)
  names = sorted(set(labels))
  counts = np.bincount([names.index(label) for label in labels], minlength=len(names))
  if len(names) < 2 or counts.max() < 2:
    raise UsageError(f"{args.folder}: {len(names)} class folders, the largest with "
                     f"{counts.max()} images; evaluation needs two classes and a class with two "
                     "images or more")
  model = _model(args)
  images, _ = inference.prepare([str(f) for f in files], model.image_shape)
  ids = np.asarray([names.index(label) for label in labels], np.int32)
  dataset = LabelledImages(images, ids, len(names), f"folder {args.folder}", class_names=names)
  context = evaluators.for_folder(model.config, model.params, model.apply_fn, dataset,
                                  max_pairs=args.max_pairs, folds=args.folds, seed=args.seed)
  figures = {}
  for name in evaluators.FOLDER_EVALUATORS:
    figures.update(evaluators.run(name, context))
  scores, same, _ = context.distinct_pairs("test")
  higher = model.higher_means_same
  figures["at_threshold"] = {
      "threshold": model.threshold, "origin": model.threshold_note,
      **evaluate_lib.error_rates(scores, same, model.threshold, higher),
      "accuracy": evaluate_lib.accuracy_at_threshold(scores, same, model.threshold, higher)}
  figures.update(folder=str(args.folder), classes=len(names), images=len(files),
                 model=model.describe())
  print(_evaluation_table(figures, args.folds))
  if args.json:
    import json
    try:
      pathlib.Path(args.json).expanduser().write_text(json.dumps(figures, indent=2) + "\n")
    except OSError as error:
      raise UsageError(f"--json {args.json}: cannot write it ({error.strerror}); choose a "
                       "writable path") from None


def _evaluation_table(figures: dict, folds: int) -> str:
  """The figures of ``evaluate_folder`` as a short table, one figure a line."""
  pairs = figures["pairs"]

  def kind(name):
    drawn, total = pairs[name], pairs[f"{name}_total"]
    return f"{drawn} {name} pairs" + (" (all)" if drawn == total else f" (of {total})")

  def row(label, value):
    return f"  {label:<25}{value}"
  lines = [f"{figures['folder']}: {figures['classes']} classes, {figures['images']} images; "
           f"{kind('same')}, {kind('different')}",
           row("ROC AUC", f"{figures['roc_auc']:.4f}"), row("EER", f"{figures['eer']:.4f}")]
  for far, tar in figures["tar_at_far"].items():
    needs = round(1 / float(far))
    note = "" if tar is not None else (f" ({pairs['different']} different pairs; a FAR of "
                                       f"{float(far):g} needs >= {needs})")
    lines.append(row(f"TAR at FAR {float(far):g}", _rate(tar) + note))
  kfold, ident = figures["kfold_accuracy"], figures["one_shot_identification"]
  lines.append(row(f"{folds}-fold accuracy", f"{kfold['mean']:.4f} ± {kfold['std']:.4f} "
                   f"({kfold['pairs']} balanced pairs, threshold chosen on the other folds)"))
  lines.append(row("one-shot identification", f"{ident['accuracy']:.4f} ± {ident['std']:.4f} "
                   f"({ident['queries']} queries among {ident['classes']} classes, one enrolled "
                   f"image each, {ident['draws']} draws)"))
  at = figures["at_threshold"]
  lines.append(row(f"at threshold {at['threshold']:.6g}", f"accuracy {at['accuracy']:.4f}, "
                   f"FAR {at['far']:.4f}, FRR {at['frr']:.4f} ({at['origin']})"))
  return "\n".join(lines)


def _loaded_index(args):
  from siamese_jax import inference
  if args.checkpoint and not args.workdir:
    raise UsageError("--checkpoint needs --workdir here (an index records the checkpoint that "
                     "built it); pass both, or neither")
  model = _model(args) if args.workdir else None
  gallery = inference.Index.load(args.index, model)
  if args.far is not None and model is None:
    gallery.model = _recalibrated(gallery.model, args.far)
  return gallery


def search(args) -> None:
  gallery = _loaded_index(args)
  files = image_files(args.queries)
  labels, scores, ids = gallery.search([str(f) for f in files], args.k, args.backend)
  for file, row_labels, row_scores, row_ids in zip(files, labels, scores, ids):
    print(file)
    for rank, (label, score, i) in enumerate(zip(row_labels, row_scores, row_ids), 1):
      print(f"  {rank}\t{label}\t{score:.6g}\t{gallery.paths[i] or i}")


def identify(args) -> None:
  gallery = _loaded_index(args)
  files = image_files(args.queries)
  labels, scores, _ = gallery.search([str(f) for f in files], 1, args.backend)
  for file, label, score in zip(files, labels[:, 0], scores[:, 0]):
    answer = label if gallery.model.same(score) else "unknown"
    print(f"{file}\t{answer}\t{score:.6g}")


# ------------------------------------------------------------------------------ parser

def _checkpoint(value: str):
  if value in ("best", "latest") or value.isdigit():
    return value
  raise argparse.ArgumentTypeError(f"{value!r}: pass best, latest or an epoch number")


def _add_model_args(parser, required: bool = True) -> None:
  parser.add_argument("--workdir", required=required, metavar="W",
                      help="the training run (python main.py --workdir W)" +
                      ("" if required else "; default: the run the index records"))
  parser.add_argument("--checkpoint", type=_checkpoint, metavar="best|latest|N",
                      help="which checkpoint: best (validation ROC AUC, the default), latest, or "
                      "epoch N")
  parser.add_argument("--far", type=float, metavar="RATE",
                      help="recalibrate the threshold for this false-accept rate on the run's "
                      "validation pairs (reads the training data again); default: the "
                      "threshold calibrated at the end of training")


def _parser() -> argparse.ArgumentParser:
  parser = arguments.OneLineParser(
      prog="python -m siamese_jax.predict", formatter_class=argparse.RawDescriptionHelpFormatter,
      description=__doc__.split("\n\n", 1)[0],
      epilog="examples:\n" + __doc__.split("\n\n", 1)[1])
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def command(name, function, help_text):
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(run=function)
    return sub

  sub = command("verify", verify, "print 'same' or 'different' for two images, with the score "
                "and the threshold; or, with --pairs, one line per pair of a CSV file")
  _add_model_args(sub)
  sub.add_argument("--pairs", metavar="FILE.csv",
                   help="two image paths a line (optional header); prints path_a, path_b, score "
                   "and same/different, tab-separated")
  sub.add_argument("image_a", metavar="A", nargs="?", help="an image file (without --pairs)")
  sub.add_argument("image_b", metavar="B", nargs="?", help="the image file to compare it with")
  sub = command("evaluate", evaluate_folder,
                "measure the model on a folder FOLDER/<class>/<image> of classes never trained "
                "on: ROC AUC, EER, TAR at FAR 1e-1/1e-2/1e-3, k-fold accuracy, one-shot "
                "identification")
  _add_model_args(sub)
  sub.add_argument("--json", metavar="FILE.json", help="also write the figures as JSON")
  sub.add_argument("--max-pairs", type=int, default=100_000, metavar="N",
                   help="pairs of each kind (same, different): all of them, or a seeded sample "
                   "of N (default 100000)")
  sub.add_argument("--folds", type=int, default=10, metavar="K",
                   help="folds of the accuracy protocol, threshold chosen on K-1 (default 10, "
                   "as LFW)")
  sub.add_argument("--seed", type=int, default=0, help="seed of the sampled pairs, folds and "
                   "enrolled images (default 0)")
  sub.add_argument("folder", metavar="FOLDER")
  sub = command("embed", embed, "write the embeddings of images (files or folders) with their "
                "paths to an .npz")
  _add_model_args(sub)
  sub.add_argument("--out", required=True, metavar="FILE.npz")
  sub.add_argument("paths", nargs="+", metavar="PATH")
  sub = command("index", index, "enrol a gallery folder FOLDER/<label>/<image> into an index")
  _add_model_args(sub)
  sub.add_argument("--out", required=True, metavar="FILE.npz")
  sub.add_argument("folder", metavar="FOLDER")
  for name, function, help_text in (
      ("search", search, "the k closest gallery images of each query"),
      ("identify", identify, "the label of each query's best match, or 'unknown' beyond the "
       "threshold")):
    sub = command(name, function, help_text)
    sub.add_argument("--index", required=True, metavar="FILE.npz", help="from the index command")
    _add_model_args(sub, required=False)
    if name == "search":
      sub.add_argument("--k", type=int, default=5, help="neighbours per query (default 5)")
    sub.add_argument("--backend", choices=("exact", "faiss"), default="exact",
                     help="exact search on device (default) or approximate faiss HNSW")
    sub.add_argument("queries", nargs="+", metavar="QUERY")
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs one command; 2 with a one-line ``error: ...`` on stderr for bad input."""
  args = _parser().parse_args(argv)
  from siamese_jax import caches, inference  # after parsing: --help answers without jax
  caches.enable_compilation_cache()  # a warm call loads the compiled embedding, as main.py
  from siamese_jax.checkpoints import CheckpointError
  from siamese_jax.idx import DataFileError
  from siamese_jax import memory
  try:
    with memory.answers_exhaustion(OUT_OF_MEMORY_ARGS, f"running {args.command}"):
      args.run(args)
  except (UsageError, inference.InferenceError, CheckpointError, DataFileError,
          memory.constraints.ConfigError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (resizing): keep it quiet
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as main.py
  sys.exit(main())
