"""Inference through siamese_jax.inference: speed on CPU and the calibrated threshold's error rates.

    .venv/bin/python benchmarks/inference.py                  # trains a Fashion-MNIST run first
    .venv/bin/python benchmarks/inference.py --quick          # smaller sets, the :tiny run
    .venv/bin/python benchmarks/inference.py --workdir runs/fashion   # a trained run instead
    .venv/bin/python benchmarks/inference.py --smoke          # untrained, tiny sets: does it run

What it measures (wall clock, compilation apart, device work waited for), with the default
contrastive config (Keras MLP, 128-d, Euclidean) trained on Fashion-MNIST (Debian's
/usr/share/datasets/fashion-mnist; without it the speed figures use MNIST's embedded sample
and random images, and the error rates are skipped):
  embed      model.embed of uint8 [N, 28, 28] images (host preprocessing, buckets of 256)
  index      Index.build of the 60,000 training images (embedding included)
  search     index.search of the 10,000 test images, k=5, exact on device in blocks of query
             rows (evaluate.nearest_neighbours), embedding included; faiss HNSW too if installed
  identify   top-1 label accuracy of those searches (by-product: a 60k-gallery k-NN)
  1M x 128   exact search of --big_queries random queries against 1,000,000 random 128-d
             gallery rows (the issue's scale; the GPU figure needs a GPU)
  FAR/FRR    of model.threshold (calibrated at the end of training on validation pairs) on
             Fashion-MNIST test pairs: calibration.json's (its eval.pairs test pairs) and
             measured here through model.verify on --pairs same and --pairs different pairs
Results: printed, and written to benchmarks/results/inference.json (--out). ``--smoke``: the
untrained model on 2,000 / 200 images of the embedded MNIST sample and 20 queries against 10,000
random rows, no error rates; no file written unless --out is given.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from siamese_jax import idx, inference  # noqa: E402

FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")
SAMPLE = REPO_ROOT / "siamese_jax" / "sample_data"


def timed(fn, repeats: int = 1):
  """(result, best seconds of ``repeats`` calls) after one warm-up call (compilation)."""
  result = fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    best = min(best, time.perf_counter() - start)
  return result, best


def read_sets(quick: bool, smoke: bool = False):
  """(gallery images, labels, query images, labels, what they are)."""
  if FASHION.is_dir() and not smoke:
    read = lambda name: idx.read_idx(str(FASHION / name))
    gallery, gallery_labels = read("train-images-idx3-ubyte.gz"), read("train-labels-idx1-ubyte.gz")
    queries, query_labels = read("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz")
    what = f"Fashion-MNIST ({FASHION}): gallery = train, queries = test"
  else:
    images = idx.read_idx(str(SAMPLE / "t10k-images-idx3-ubyte.gz"))
    labels = idx.read_idx(str(SAMPLE / "t10k-labels-idx1-ubyte.gz"))
    reps = 6  # 48,000 gallery rows from the 8,000 training images, shifted copies
    gallery = np.concatenate([np.roll(images[:8000], s, axis=2) for s in range(reps)])
    gallery_labels = np.tile(labels[:8000], reps)
    queries, query_labels = images[8000:], labels[8000:]
    what = ("MNIST embedded sample (" + ("--smoke" if smoke else "Fashion-MNIST not found")
            + "): shifted copies as the gallery")
  if quick or smoke:
    size, queries_kept = (2000, 200) if smoke else (6000, 1000)
    gallery, gallery_labels = gallery[:size], gallery_labels[:size]
    queries, query_labels = queries[:queries_kept], query_labels[:queries_kept]
  return gallery, gallery_labels.astype(np.int64), queries, query_labels.astype(np.int64), what


def train_run(workdir: pathlib.Path, quick: bool, epochs: int) -> pathlib.Path:
  """The default contrastive config on Fashion-MNIST (the :tiny variant with --quick)."""
  from experiments import contrastive
  from siamese_jax import experiment
  config = contrastive.get_config("tiny" if quick else None)
  config.data.name = "fashion_mnist"
  config.data.dir = str(FASHION)
  config.data.tfds_data_dir = str(workdir.parent / "tfds")
  config.plots.latent = False
  if not quick:
    config.train.epochs = epochs
  experiment.train_and_evaluate(config, str(workdir))
  return workdir


def error_rates(model, images, labels, pairs: int, seed: int = 0) -> dict:
  """FAR and FRR of model.verify on ``pairs`` same-class and ``pairs`` different-class pairs."""
  rng = np.random.default_rng(seed)
  first = rng.integers(0, len(labels), pairs)
  by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
  second = np.array([rng.choice(by_class[labels[i]]) for i in first])
  a, b = rng.integers(0, len(labels), (2, 4 * pairs))
  keep = labels[a] != labels[b]
  a, b = a[keep][:pairs], b[keep][:pairs]
  accepted_same = model.verify(images[first], images[second])
  accepted_different = model.verify(images[a], images[b])
  return {"far": float(np.mean(accepted_different)), "frr": float(np.mean(~accepted_same)),
          "same_pairs": int(pairs), "different_pairs": int(len(a))}


def untrained_model() -> inference.Model:
  """The default contrastive config's model at its initial weights (speed does not depend on
  them)."""
  from experiments import contrastive
  from siamese_jax import models, train
  config = contrastive.get_config()
  module = models.build_model(config.model)
  state = train.create_train_state(jax.random.key(0), module, (28, 28, 1),
                                   train.make_optimizer(config.optimizer, 1))
  return inference.Model(config, state.params, state.apply_fn, (28, 28, 1))


def big_search(queries: int, size: int = 1_000_000, dim: int = 128) -> dict:
  """Exact search of ``queries`` random queries against ``size`` random rows, k=5 (no model:
  the gallery rows are given, as an index of ``size`` enrolled embeddings would hold them)."""
  from siamese_jax import evaluate
  rng = np.random.default_rng(0)
  gallery = jax.device_put(rng.standard_normal((size, dim), np.float32))
  query = rng.standard_normal((queries, dim), np.float32)
  block = inference._block(size, dim, logits=False)
  run = lambda: jax.block_until_ready(evaluate.nearest_neighbours(
      query, gallery, 5, "euclidean", block_size=min(block, queries)))
  _, seconds = timed(run)
  return {"gallery": size, "dim": dim, "queries": queries, "block_rows": block,
          "seconds": seconds, "queries_per_second": queries / seconds}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="6,000 / 1,000 images, tiny run")
  parser.add_argument("--workdir", help="a trained run (default: train one into a temp folder)")
  parser.add_argument("--epochs", type=int, default=3, help="epochs of the run trained here")
  parser.add_argument("--pairs", type=int, default=10_000, help="same and different test pairs")
  parser.add_argument("--big_queries", type=int, default=1000,
                      help="queries against the 1M x 128 gallery (0: skip)")
  parser.add_argument("--smoke", action="store_true",
                      help="untrained model, tiny sets of the embedded sample: that it runs")
  parser.add_argument("--out", help="results JSON (default: benchmarks/results/inference.json, "
                      "inference_quick.json with --quick, none with --smoke)")
  args = parser.parse_args(argv)
  if not args.smoke:
    args.out = args.out or str(REPO_ROOT / "benchmarks" / "results" /
                               f"inference{'_quick' * args.quick}.json")
  gallery, gallery_labels, queries, query_labels, what = read_sets(args.quick, args.smoke)
  results = {"data": what, "devices": str(jax.devices()), "cpus": os.cpu_count(),
             "quick": args.quick}
  print(f"data: {what}; gallery {gallery.shape}, queries {queries.shape}; {jax.devices()}")

  if args.workdir:
    workdir = pathlib.Path(args.workdir)
  elif FASHION.is_dir() and not args.smoke:
    started = time.perf_counter()
    workdir = train_run(pathlib.Path(tempfile.mkdtemp()) / "run", args.quick, args.epochs)
    results["train_seconds"] = time.perf_counter() - started
  else:
    print("no --workdir and no Fashion-MNIST (or --smoke): an untrained model (speed only)")
    workdir = None
  model = inference.load(workdir) if workdir is not None else untrained_model()
  results["model"] = model.describe()
  print(f"model: {results['model']}")

  _, seconds = timed(lambda: model.embed(queries), repeats=2)
  results["embed"] = {"images": len(queries), "seconds": seconds,
                      "images_per_second": len(queries) / seconds}
  print(f"embed     {len(queries):>7,} images  {seconds:7.3f} s  {len(queries) / seconds:>10,.0f} "
        "images/s")

  index, seconds = timed(lambda: inference.Index.build(model, gallery, gallery_labels))
  results["index_build"] = {"images": len(gallery), "seconds": seconds}
  print(f"index     {len(gallery):>7,} images  {seconds:7.3f} s  (Index.build, embedding included)")

  backends = ["exact"]
  if importlib.util.find_spec("faiss"):
    backends.append("faiss")
  else:
    results["faiss"] = "skipped: faiss not installed"
  for backend in backends:
    (labels, _, _), seconds = timed(lambda: index.search(queries, k=5, backend=backend))
    accuracy = float(np.mean(labels[:, 0] == query_labels))
    results[f"search_{backend}"] = {"queries": len(queries), "gallery": len(gallery), "k": 5,
                                    "seconds": seconds, "top1_accuracy": accuracy}
    print(f"search    {len(queries):>7,} x {len(gallery):,} ({backend}, k=5)  {seconds:7.3f} s  "
          f"top-1 label accuracy {accuracy:.4f}")

  if args.big_queries:
    results["search_1M"] = (big_search(20, 10_000) if args.smoke else
                            big_search(args.big_queries, 100_000 if args.quick else 1_000_000))
    big = results["search_1M"]
    print(f"search    {big['queries']:>7,} x {big['gallery']:,} x {big['dim']} random (exact, "
          f"k=5)  {big['seconds']:7.3f} s  {big['queries_per_second']:,.0f} queries/s")

  if workdir is not None and FASHION.is_dir():
    rates = error_rates(model, queries, query_labels, args.pairs)
    results["threshold"] = {"value": model.threshold, "note": model.threshold_note,
                            "calibration": model.calibration, "measured_on_test_pairs": rates}
    test = model.calibration["test"] if model.calibration else {}
    print(f"threshold {model.threshold:.4f} ({model.threshold_note}): on Fashion-MNIST test pairs "
          f"FAR {rates['far']:.4f}, FRR {rates['frr']:.4f} ({rates['same_pairs']:,} same, "
          f"{rates['different_pairs']:,} different pairs); calibration.json: FAR "
          f"{test.get('far', float('nan')):.4f}, FRR {test.get('frr', float('nan')):.4f}")
  else:
    results["threshold"] = "skipped: needs a trained Fashion-MNIST run and its test set"
    print(f"FAR/FRR   {results['threshold']}")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
