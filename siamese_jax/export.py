"""A trained run for use without siamese_jax: jax.export artefacts and a TensorFlow SavedModel.

  python -m siamese_jax.export --workdir runs/contrastive --out exported/

writes into --out:
  embed.jax       jax.export (serialised StableHLO, parameters inside) of embed(x) -> [b, D] for
                  x: float32 [b, H, W, C] in [0, 1], b symbolic; lowered for cpu, cuda and tpu
  embed_b.jax     the second tower's, only for a model with separate tower weights
  score.jax       score(emb_a [b, D], emb_b [b, D]) -> [b]: the pair score the threshold is for
                  (the distance, or the head's logit)
  saved_model/    the same functions as a TensorFlow SavedModel (jax2tf), signatures "embed"
                  (also "serving_default"), "score" (and "embed_b"); parameters as variables
  model.json      the preprocessing (image size, channels, resize, scaling), the threshold with
                  higher_means_same and its calibration, the run, checkpoint and fingerprint

Reload with jax alone:   jax.export.deserialize(open("embed.jax", "rb").read()).call(x)
or TensorFlow alone:     tf.saved_model.load("saved_model").embed(x)
"""

import argparse
import json
import os
import pathlib
import sys

from siamese_jax import arguments

EXPORT_FORMAT = "siamese_jax.export/1"
PLATFORMS = ("cpu", "cuda", "tpu")

PREPROCESSING_STEPS = [
    "decode to uint8 pixels [h, w, c] (grey files with 1 channel, others RGB with 3)",
    "if h, w differ from the image size: area resize (tf.image.resize method='area' on the uint8 "
    "values as float32, rounded and clipped back to uint8)",
    "drop an alpha channel; convert to the channel count: grey -> RGB repeats the channel, RGB -> "
    "grey is ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) rounded, as PIL's convert('L')",
    "scale to float32 in [0, 1]: pixels / 255",
]


def _functions(model) -> dict:
  """{name: (function of arrays, input shapes with "b" the batch)} to export."""
  from siamese_jax import models, scoring
  height, width, channels = model.image_shape
  dim = model.embed(_blank(model.image_shape)).shape[1]
  embed = lambda tower: lambda x: scoring.embed(model.apply_fn, model.params, x, tower=tower)
  found = {"embed": (embed(0), [(height, width, channels)])}
  if (model.config.model.head not in models.CLASSIFIER_HEADS
      and not model.config.model.shared_weights):
    found["embed_b"] = (embed(1), [(height, width, channels)])
  found["score"] = (lambda a, b: scoring.score_embeddings(model.apply_fn, model.params, a, b,
                                                          model.scoring), [(dim,), (dim,)])
  return found


def _blank(image_shape):
  import numpy as np
  return np.zeros((1, *image_shape), np.float32)


def export_jax(function, shapes, path: pathlib.Path) -> None:
  """``function`` serialised by jax.export at ``path``, batch size symbolic, for PLATFORMS."""
  import jax
  import jax.numpy as jnp
  batch, = jax.export.symbolic_shape("b")
  args = [jax.ShapeDtypeStruct((batch, *shape), jnp.float32) for shape in shapes]
  exported = jax.export.export(jax.jit(function), platforms=PLATFORMS)(*args)
  path.write_bytes(exported.serialize())


def export_saved_model(model, functions: dict, path: pathlib.Path) -> None:
  """The ``functions`` as signatures of a TensorFlow SavedModel (jax2tf, native serialisation),
  the parameters as tf.Variables."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  from siamese_jax import scoring
  module = tf.Module()
  module.params = tf.nest.map_structure(tf.Variable, model.params)
  signatures = {}
  for name, (_, shapes) in functions.items():
    if name == "score":
      apply = lambda params, a, b: scoring.score_embeddings(model.apply_fn, params, a, b,
                                                            model.scoring)
    else:
      tower = 1 if name == "embed_b" else 0
      apply = lambda params, x, tower=tower: scoring.embed(model.apply_fn, params, x, tower=tower)
    polymorphic = [None] + ["(b, " + ", ".join(map(str, shape)) + ")" for shape in shapes]
    converted = jax2tf.convert(apply, polymorphic_shapes=polymorphic, with_gradient=False,
                               native_serialization_platforms=PLATFORMS)
    specs = [tf.TensorSpec((None, *shape), tf.float32) for shape in shapes]
    function = _tf_function(tf, converted, module.params, specs)
    setattr(module, name, function)
    signatures[name] = function
  signatures["serving_default"] = signatures["embed"]
  tf.saved_model.save(module, str(path), signatures=signatures)


def _tf_function(tf, converted, params, specs):
  """tf.function of ``converted(params, *inputs)`` for inputs of ``specs``."""
  def call(*inputs):
    return converted(params, *inputs)
  return tf.function(call, input_signature=specs, autograph=False)


def describe(model, files: dict) -> dict:
  """What model.json holds (see the module docstring)."""
  height, width, channels = model.image_shape
  return {
      "format": EXPORT_FORMAT, "files": files,
      "input": {"shape": ["batch", height, width, channels], "dtype": "float32",
                "range": [0.0, 1.0]},
      "preprocessing": {"image_size": [height, width], "channels": channels,
                        "steps": PREPROCESSING_STEPS},
      "embedding_dim": int(model.embed(_blank(model.image_shape)).shape[1]),
      "score": {"head": model.scoring.head, "distance": model.scoring.distance,
                "higher_means_same": model.higher_means_same,
                "same_when": "score > threshold" if model.higher_means_same else
                "score < threshold",
                "threshold": model.threshold, "threshold_note": model.threshold_note,
                "calibration": model.calibration},
      "source": {"workdir": model.workdir, "epoch": model.epoch, "step": model.step,
                 "fingerprint": model.fingerprint},
  }


def export(model, out, saved_model: bool = True) -> dict:
  """Writes ``model``'s artefacts into folder ``out`` (see the module docstring); returns
  model.json's content."""
  out = pathlib.Path(out).expanduser()
  out.mkdir(parents=True, exist_ok=True)
  functions = _functions(model)
  files = {}
  for name, (function, shapes) in functions.items():
    export_jax(function, shapes, out / f"{name}.jax")
    files[name] = f"{name}.jax"
  if saved_model:
    export_saved_model(model, functions, out / "saved_model")
    files["saved_model"] = "saved_model"
  info = describe(model, files)
  (out / "model.json").write_text(json.dumps(info, indent=2) + "\n")
  return info


def _parser() -> argparse.ArgumentParser:
  parser = arguments.OneLineParser(
      prog="python -m siamese_jax.export", formatter_class=argparse.RawDescriptionHelpFormatter,
      description=__doc__.split("\n\n", 1)[0], epilog=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--workdir", required=True, metavar="W",
                      help="the training run (python main.py --workdir W)")
  parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
  parser.add_argument("--checkpoint", default="best", metavar="best|latest|N",
                      help="which checkpoint: best (default), latest, or epoch N")
  parser.add_argument("--no_saved_model", action="store_true",
                      help="only the jax.export artefacts (no TensorFlow)")
  parser.add_argument("--overwrite", action="store_true",
                      help="write into an --out folder that is not empty (its files of the same "
                      "names are replaced)")
  return parser


def _out_problem(out: str, overwrite: bool) -> str | None:
  """Why --out cannot be written into as asked, or None: a file, or a folder that holds
  something (without --overwrite)."""
  path = pathlib.Path(out).expanduser()
  if path.exists() and not path.is_dir():
    return f"--out {out} is a file; pass a folder (new or empty)"
  if path.is_dir() and not overwrite and any(path.iterdir()):
    return (f"--out {out} is not empty ({len(list(path.iterdir()))} entries); choose a new or "
            "empty folder, or pass --overwrite to write over it")
  return None


def main(argv: list[str] | None = None) -> int:
  """The CLI; 2 with a one-line ``error: ...`` for bad input."""
  args = _parser().parse_args(argv)
  problem = _out_problem(args.out, args.overwrite)
  if problem is not None:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  from siamese_jax import inference
  from siamese_jax.checkpoints import CheckpointError
  try:
    model = inference.load(args.workdir, args.checkpoint)
    info = export(model, args.out, saved_model=not args.no_saved_model)
  except (inference.InferenceError, CheckpointError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except OSError as error:
    print(f"error: --out {args.out}: cannot write there ({error.strerror}); choose a writable "
          "folder", file=sys.stderr)
    return 2
  print(f"exported {model.describe()} to {args.out}: {', '.join(info['files'].values())}, "
        "model.json")
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  sys.exit(main())
