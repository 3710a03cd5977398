"""Evaluation speed: embeddings per second, and all 10,000 x 10,000 test distances with k-NN.

    .venv/bin/python benchmarks/eval_knn.py              # Fashion-MNIST test set, ~1 min
    .venv/bin/python benchmarks/eval_knn.py --quick      # 2,000 test images, a few seconds
    .venv/bin/python benchmarks/eval_knn.py --k 5 --repeats 5 --block_size 2048
    .venv/bin/python benchmarks/eval_knn.py --smoke      # 500 images of the MNIST sample: runs?

What it measures (wall clock, device work waited for; compile reported apart, then the best of
--repeats runs), with the Keras mnist_siamese MLP of experiments/contrastive.py (random
initial weights: speed does not depend on them) on the 10,000 Fashion-MNIST test images:
  embed            uint8 images -> 128-d embeddings, one jitted call per --embed_batch images
                   (as the run loop embeds) and one call for the whole set: embeddings/s;
  k-NN             siamese_jax.evaluate.nearest_neighbours(emb, emb, k, exclude_self=True): all
                   10,000 x 10,000 Euclidean distances (squared, one matmul per block of query
                   rows) and the top k of each row, on device in blocks of --block_size rows;
  embed + k-NN     both, from the uint8 images to the neighbours: the figure for the 5 s target;
  retrieval        siamese_jax.evaluate.retrieval_metrics (k-NN accuracy, P@1, R-precision,
                   MAP@R): the same distances with the top 999 (a class's other images) per row.
The distance matmul's FLOPs (2 N M D) against the float32 matmul peak measured in the same run
are printed too. Results: a table and benchmarks/results/eval_knn.json (--out). ``--smoke``: 500
images of the embedded MNIST sample (any machine), one repeat, a short peak; no file written
unless --out is given.
"""

import argparse
import json
import os
import pathlib
import resource
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from siamese_jax import evaluate, models, scoring, train  # noqa: E402
from train_throughput import load_data, machine, matmul_peak  # noqa: E402
import result_files  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"


def best_time(repeats: int, fn, *args) -> tuple[float, float]:
  """(first call's seconds, compile included; best of ``repeats`` later calls)."""
  def once():
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start
  first = once()
  return first, min(once() for _ in range(repeats))


def test_images(limit: int, smoke: bool = False):
  """(images [N, 28, 28, 1] uint8, labels [N], where): the Fashion-MNIST test set, or with
  ``smoke`` the embedded MNIST sample."""
  if smoke:
    images, labels, _, source = load_data("mnist_sample")
    return images[:limit], labels[:limit], source
  from siamese_jax.data import files
  folder = next(p for p in files.known_places("fashion_mnist") if p.is_dir())
  images, labels = files.read_idx_pair(folder, *files.FASHION_MNIST.parts["test"], 10)
  return images[:limit, ..., None], labels[:limit].astype(np.int32), folder


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(__doc__.split("\n")[2:]))
  parser.add_argument("--n", type=int, default=10000, help="test images (at most 10,000)")
  parser.add_argument("--k", type=int, default=5, help="neighbours per query")
  parser.add_argument("--block_size", type=int, default=None,
                      help="query rows per block (default: evaluate.nearest_neighbours's)")
  parser.add_argument("--embed_batch", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="2,000 images, one repeat")
  result_files.add_smoke_and_out(parser, "eval_knn.json", "500 images of the embedded MNIST sample")
  args = parser.parse_args()
  if args.quick:
    args.n, args.repeats = 2000, 1
  if args.smoke:
    args.n, args.repeats, args.embed_batch = 500, 1, 250
  out = result_files.results_path(args, "eval_knn.json")
  peak_of = lambda: matmul_peak((256,), seconds=0.01) if args.smoke else matmul_peak()

  from experiments import contrastive
  config = contrastive.get_config()
  images, labels, folder = test_images(args.n, args.smoke)
  n = len(images)
  model = models.build_model(config.model)
  state = train.create_train_state(jax.random.key(0), model, images.shape[1:],
                                   train.make_optimizer(config.optimizer, 1))
  images_dev = jax.device_put(images)

  @jax.jit
  def embed(params, x):
    return state.apply_fn({"params": params}, scoring.to_float_images(x), method="embed")

  def embed_in_batches(params, x):
    return [embed(params, x[i:i + args.embed_batch]) for i in range(0, len(x), args.embed_batch)]

  peaks = list(peak_of().values())
  rows = {}
  rows["embed, batches of %d" % args.embed_batch] = best_time(
      args.repeats, embed_in_batches, state.params, images_dev)
  rows["embed, one call"] = best_time(args.repeats, embed, state.params, images_dev)
  embeddings = embed(state.params, images_dev)
  dim = embeddings.shape[1]

  knn = lambda e: evaluate.nearest_neighbours(e, e, args.k, exclude_self=True,
                                              block_size=args.block_size)
  rows["k-NN (k=%d)" % args.k] = best_time(args.repeats, knn, embeddings)
  rows["embed + k-NN"] = best_time(args.repeats, lambda x: knn(embed(state.params, x)), images_dev)
  rows["retrieval_metrics (top 999)"] = best_time(
      args.repeats, lambda e: evaluate.retrieval_metrics(e, labels, knn_k=args.k), embeddings)
  peak = max(peaks + list(peak_of().values()))

  distance_flops = 2 * n * n * dim
  knn_s = rows["k-NN (k=%d)" % args.k][1]
  print(f"{n} {'MNIST sample' if args.smoke else 'Fashion-MNIST test'} images ({folder}), "
        f"{dim}-d embeddings, k={args.k}, "
        f"devices {jax.devices()}; best of {args.repeats} (first call incl. compile)")
  print(f"{'':<32}{'first':>9}{'best':>9}")
  for name, (first, best) in rows.items():
    print(f"{name:<32}{first:>8.3f}s{best:>8.3f}s")
  embed_rate = {name: n / best for name, (_, best) in rows.items() if name.startswith("embed,")}
  for name, rate in embed_rate.items():
    print(f"  {name}: {rate:,.0f} embeddings/s")
  print(f"distances: {distance_flops / 1e9:.1f} GFLOP, {distance_flops / knn_s / 1e9:.0f} GFLOP/s "
        f"over the whole k-NN = {100 * distance_flops / knn_s / 1e9 / peak:.0f} % of the "
        f"{peak:.0f} GFLOP/s matmul peak")
  total = rows["embed + k-NN"][1]
  print(f"embed + {n} x {n} k-NN: {total:.3f} s (target < 5 s: "
        f"{'met' if total < 5 else 'missed'})")
  print(f"peak host RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

  report = {"benchmark": "eval_knn", "command": " ".join(sys.argv), "quick": args.quick,
            "smoke": args.smoke,
            "machine": machine(), "n": n, "dim": dim, "k": args.k, "block_size": args.block_size,
            "seconds_first_and_best": rows, "embeddings_per_s": embed_rate,
            "distance_gflop": distance_flops / 1e9, "matmul_peak_gflops": peak,
            "embed_plus_knn_s": total, "target_s": 5.0, "target_met": total < 5,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_average_at_end": os.getloadavg()}
  if out:
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
  main()
