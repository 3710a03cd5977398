"""Use a trained run from the command line: verify pairs, embed images, enrol a gallery, search it.

  python -m siamese_jax.predict verify --workdir runs/contrastive a.png b.png
  python -m siamese_jax.predict embed --workdir runs/contrastive --out emb.npz images/ x.png
  python -m siamese_jax.predict index --workdir runs/contrastive --out gallery.npz enrol/
  python -m siamese_jax.predict search --index gallery.npz --k 5 query.png queries/
  python -m siamese_jax.predict identify --index gallery.npz query.png

A PATH or QUERY is an image file or a folder (every image under it, sorted). The gallery folder
of `index` holds one subfolder per class (the label) with one or more images each. `search` and
`identify` load the run that built the index unless --workdir names it; an index of another
model is refused. The threshold is the one calibrated at the end of training for the
checkpoint (--config.eval.far there chose a false-accept target); --far recalibrates it here on
the run's own validation pairs (the training data is read again). Errors: one line, exit 2.
"""

import argparse
import os
import pathlib
import sys

import numpy as np

EMBEDDINGS_FORMAT = "siamese_jax.embeddings/1"


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
    model = inference.recalibrate(model, args.far)
  return model


def _verdict_words(model, score: float) -> str:
  kind = "logit" if model.higher_means_same else f"{model.scoring.distance} distance"
  same = model.same(score)
  sign = (">" if same else "<=") if model.higher_means_same else ("<" if same else ">=")
  verdict = "same" if same else "different"
  return f"{verdict} ({kind} {score:.6g} {sign} threshold {model.threshold:.6g})"


def verify(args) -> None:
  model = _model(args)
  score = model.score(str(args.image_a), str(args.image_b))
  print(_verdict_words(model, score))


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


def _loaded_index(args):
  from siamese_jax import inference
  if args.checkpoint and not args.workdir:
    raise UsageError("--checkpoint needs --workdir here (an index records the checkpoint that "
                     "built it); pass both, or neither")
  model = _model(args) if args.workdir else None
  gallery = inference.Index.load(args.index, model)
  if args.far is not None and model is None:
    gallery.model = inference.recalibrate(gallery.model, args.far)
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
  parser = argparse.ArgumentParser(
      prog="python -m siamese_jax.predict", formatter_class=argparse.RawDescriptionHelpFormatter,
      description=__doc__.split("\n\n", 1)[0],
      epilog="examples:\n" + __doc__.split("\n\n", 1)[1])
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def command(name, function, help_text):
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(run=function)
    return sub

  sub = command("verify", verify, "print 'same' or 'different' for two images, with the score "
                "and the threshold")
  _add_model_args(sub)
  sub.add_argument("image_a", metavar="A")
  sub.add_argument("image_b", metavar="B")
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
  from siamese_jax import inference  # after parsing: --help answers without jax
  from siamese_jax.checkpoints import CheckpointError
  from siamese_jax.idx import DataFileError
  try:
    args.run(args)
  except (UsageError, inference.InferenceError, CheckpointError, DataFileError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow (resizing): keep it quiet
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as main.py
  sys.exit(main())
