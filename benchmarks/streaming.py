"""Pairs/s of the two input paths of a training run: the whole training set on the device vs
batches drawn on the host and streamed in (``siamese_jax.streaming``, for data above
``data.device_budget_mb``).

    .venv/bin/python benchmarks/streaming.py [--quick] [--encoder keras_mlp] [--out FILE]
    .venv/bin/python benchmarks/streaming.py --smoke     # 3 calls of 2 steps: does it run

Data: the Fashion-MNIST training split (60,000 images) from Debian's
``/usr/share/datasets/fashion-mnist`` (or another of ``siamese_jax.data``'s known places), else
the embedded MNIST sample (8,000 images; always with ``--smoke``, read without TensorFlow); the
printout says which. Model and loss:
``experiments/contrastive.py`` (Keras mnist_siamese MLP, contrastive, RMSprop; ``--encoder``
swaps the tower), 128 pairs a step, ``--steps`` steps a compiled call.

What it times (wall clock, device work waited for; the first call, with its compile, apart):
  device     train.make_train_epoch on the device-resident set (indices and gathers inside the
             compiled call);
  streamed   streaming.StreamedTrainCall with the run's keys given, so a background thread
             draws and places the next calls' batches while the device trains (what
             train_and_evaluate does above the budget);
  streamed, no prefetch   the same call without the keys: each call's batches drawn on the spot;
  host draw only          streaming.host_batches alone (sampler on the host CPU device + NumPy
             gather), the producer's ceiling.
On a CPU-only machine the "device" is the same cores as the host, so the host-side draw competes
with the step for them; on an accelerator the two overlap.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import time
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # data.load imports TensorFlow: keep it quiet
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import contrastive  # noqa: E402
from siamese_jax import batches, data, models, sharding, streaming, train  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def load_training_set(data_dir, smoke: bool = False):
  """(training set with images, labels, num_classes; words): Fashion-MNIST's training split where
  its files are, else (or with ``smoke``) the embedded MNIST sample."""
  if smoke:
    from train_throughput import load_data
    images, labels, num_classes, source = load_data("mnist_sample")
    found = types.SimpleNamespace(images=images, labels=labels, num_classes=num_classes)
    return found, f"embedded MNIST sample, --smoke ({source})"
  try:
    found = data.load("fashion_mnist", "train", data_dir=data_dir, download=False)
    return found, f"Fashion-MNIST train ({found.source})"
  except data.DataFileError:
    found = data.load("mnist", "train", data_dir=data_dir, download=False)
    return found, f"embedded MNIST sample, not Fashion-MNIST ({found.source})"


def timed_calls(run_call, state, source, keys):
  """(state, seconds of the first call, seconds of the rest) of run_call over ``keys``."""
  start = time.perf_counter()
  state, metrics = run_call(state, source, keys[0])
  jax.block_until_ready(metrics)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for key in keys[1:]:
    state, metrics = run_call(state, source, key)
  jax.block_until_ready((state, metrics))
  return state, first, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="4 calls of 25 steps per path")
  parser.add_argument("--calls", type=int, default=11, help="calls per path (the first compiles)")
  parser.add_argument("--steps", type=int, default=100, help="steps per compiled call")
  parser.add_argument("--encoder", default="keras_mlp", help="model.encoder (e.g. convnet4)")
  parser.add_argument("--data_dir", help="tfds data_dir (default: siamese_jax.data's)")
  parser.add_argument("--smoke", action="store_true", help="3 calls of 2 steps on the embedded "
                      "sample: that it runs")
  parser.add_argument("--out", help="JSON file (default: results/streaming[_quick].json; none "
                      "with --smoke)")
  args = parser.parse_args()
  calls, steps = (4, 25) if args.quick else (3, 2) if args.smoke else (args.calls, args.steps)

  train_set, words = load_training_set(args.data_dir, args.smoke)
  print(f"data: {words}: {train_set.images.shape} uint8, {train_set.images.nbytes / 2**20:.1f} MiB")
  config = contrastive.get_config()
  config.model.encoder = args.encoder
  spec = train.loss_spec_from_config(config)
  batch_spec = batches.batch_spec_from_config(config, spec.batch_kind)
  mesh = sharding.make_mesh()
  model = models.build_model(config.model)
  tx = train.make_optimizer(config.optimizer, calls * steps)
  unroll = train.unroll_steps(config.train.unroll, config.model.encoder)
  image_shape = train_set.images.shape[1:]
  keys = list(streaming.call_keys(jax.random.key(0), calls, 1))
  fresh_state = lambda: sharding.put_replicated(
      train.create_train_state(jax.random.key(1), model, image_shape, tx), mesh)

  device_set = sharding.device_data(train_set.images, train_set.labels, train_set.num_classes,
                                    mesh)
  host_set = streaming.host_data(train_set.images, train_set.labels, train_set.num_classes)
  paths = {
      "device": (train.make_train_epoch(spec, batch_spec, steps, mesh, unroll), device_set),
      "streamed": (streaming.StreamedTrainCall(spec, batch_spec, steps, mesh, unroll,
                                               expected_keys=iter(keys)), host_set),
      "streamed, no prefetch": (streaming.StreamedTrainCall(spec, batch_spec, steps, mesh,
                                                            unroll), host_set),
  }
  pairs = (calls - 1) * steps * batch_spec.batch_size
  results = {}
  for name, (run_call, source) in paths.items():
    _, first, rest = timed_calls(run_call, fresh_state(), source, keys)
    results[name] = {"first_call_seconds": first, "seconds": rest, "pairs_per_second": pairs / rest}
  start = time.perf_counter()
  for key in keys[1:]:
    streaming.host_batches(key, host_set, batch_spec, steps)
  host = time.perf_counter() - start
  results["host draw only"] = {"seconds": host, "pairs_per_second": pairs / host}

  print(f"{args.encoder}, {batch_spec.batch_size} pairs a step, {steps} steps a call, "
        f"{calls - 1} timed calls ({pairs:,} pairs) per path; {len(jax.devices())} "
        f"{jax.default_backend()} device(s), {os.cpu_count()} CPU cores")
  print(f"{'path':<24} {'pairs/s':>10} {'timed s':>8} {'1st call s':>10}")
  for name, result in results.items():
    first = result.get("first_call_seconds")
    print(f"{name:<24} {result['pairs_per_second']:>10,.0f} {result['seconds']:>8.2f} "
          f"{'' if first is None else f'{first:.2f}':>10}")
  out = pathlib.Path(args.out) if args.out else None if args.smoke else RESULTS / (
      "streaming_quick.json" if args.quick else "streaming.json")
  if out is None:
    return
  out.write_text(json.dumps({
      "data": words, "shape": list(train_set.images.shape), "encoder": args.encoder,
      "batch_size": batch_spec.batch_size, "steps_per_call": steps, "timed_calls": calls - 1,
      "results": results, "backend": jax.default_backend(), "devices": len(jax.devices()),
      "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
      "versions": {"python": platform.python_version(), "jax": jax.__version__,
                   "numpy": np.__version__}}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
