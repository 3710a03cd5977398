"""Input pipeline vs train step, for one Fashion-MNIST epoch (60,000 images, 128 pairs a step).

    .venv/bin/python benchmarks/data_pipeline.py [--data_dir DIR] [--standin] [--repeats 3]
    .venv/bin/python benchmarks/data_pipeline.py --smoke    # 4 steps on the MNIST sample: runs?

What it measures, in seconds (wall clock; the device work is waited for):
  load:      importing tensorflow + tfds; ``data.load("fashion_mnist", "train")`` into a fresh tfds
             data_dir (preparation from the local files) and again (the cached tfds dataset);
             the device transfer of the uint8 images.
  per epoch (468 steps, each run compiled as one ``lax.scan``; the first run, with its compile,
             reported apart, then the best of ``--repeats``):
    pair indices only         ``samplers.sample_balanced_pairs`` alone;
    indices + gather_images   the whole input side: those indices and the gather of the uint8
                              pair images on device (``samplers.gather_images``);
    train step only           the step alone, on 8 batches drawn beforehand and used in turn;
    epoch: sampling + step    both, as training runs them;
    train.make_train_epoch    the project's fused epoch as it is (it gathers with images[idx]).
  The input side's share is printed two ways: (indices + gather) / epoch, and (epoch - step) /
  epoch. The step is the project's (``siamese_jax.train.train_step`` with
  ``experiments/contrastive.py``: Keras mnist_siamese MLP, contrastive loss, RMSprop); with
  ``--standin`` (or if that module is missing) a stand-in jitted MLP step written here.
Host memory: the peak RSS is printed; no pair array is built on the host (one epoch's pairs
would be 468 x 128 x 2 x 784 B = 94 MB), only indices on device.
``--smoke``: the embedded MNIST sample read without TensorFlow (no load times), 4-step "epochs",
one repeat.
"""

import argparse
import functools
import resource
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from siamese_jax import samplers  # noqa: E402

BATCH, EPOCH_IMAGES = 128, 60000
STEPS = EPOCH_IMAGES // BATCH


def timed(fn, *args):
  """(result, seconds) of ``fn(*args)``, device work included."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn(*args))
  return result, time.perf_counter() - start


def best_of(repeats, fn, *args):
  """(compile + first run seconds, best of ``repeats`` later runs)."""
  _, first = timed(fn, *args)
  return first, min(timed(fn, *args)[1] for _ in range(repeats))


def load_times(data_dir):
  start = time.perf_counter()
  from siamese_jax import data
  from siamese_jax.data import builders  # noqa: F401  (tensorflow, tfds)
  imports = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as fresh:
    first_dir = data_dir or fresh
    start = time.perf_counter()
    data.load("fashion_mnist", "train", data_dir=first_dir, download=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    train = data.load("fashion_mnist", "train", data_dir=first_dir, download=False)
    cached = time.perf_counter() - start
  return train, {"import tensorflow + tfds": imports, "first load (prepare tfds)": first,
                 "cached load": cached}


def sampling_epoch(images, index, steps, gather=True):
  """Only the input side of an epoch: indices, then (if ``gather``) the uint8 pair images, all
  their pixels summed so that XLA can neither skip nor shrink the gather."""
  def body(total, i):
    key = jax.random.fold_in(jax.random.key(0), i)
    a, b, same = samplers.sample_balanced_pairs(key, index, BATCH)
    if gather:
      x_a, x_b = samplers.gather_images(images, a), samplers.gather_images(images, b)
      total += jnp.sum(x_a, dtype=jnp.int32) + jnp.sum(x_b, dtype=jnp.int32)
    return total + jnp.sum(a) + jnp.sum(b) + jnp.sum(same, dtype=jnp.int32), None
  return jax.lax.scan(body, jnp.int32(0), jnp.arange(steps))[0]


def smoke_set():
  """(the embedded MNIST sample as a training set, no load times): read without TensorFlow."""
  from train_throughput import load_data
  images, labels, _, source = load_data("mnist_sample")
  return types.SimpleNamespace(images=images, labels=labels, source=source), {}


def project_step(steps):
  """(state, step(state, batch, key), epoch(state, data, key), to_device) of siamese_jax.train."""
  from experiments import contrastive
  from siamese_jax import batches, models, sharding, train
  config = contrastive.get_config()
  spec = train.loss_spec_from_config(config)
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.build_model(config.model)
  tx = train.make_optimizer(config.optimizer, steps)
  state = train.create_train_state(jax.random.key(0), model, (28, 28, 1), tx)
  batch_spec = batches.BatchSpec(kind="pairs", batch_size=BATCH)
  step = jax.jit(functools.partial(train.train_step, spec=spec))
  epoch = train.make_train_epoch(spec, batch_spec, steps, mesh)
  to_device = lambda images, labels: sharding.device_data(images, labels, 10, mesh)
  return state, step, epoch, to_device


def standin_step(steps):
  """The same for a stand-in (no epoch): Dense 128 x3 twin MLP, contrastive loss, RMSprop."""
  import optax
  sizes = [784, 128, 128, 128]
  keys = jax.random.split(jax.random.key(0), 3)
  params = [(jax.random.normal(k, (m, n)) * (2 / m) ** 0.5, jnp.zeros(n))
            for k, m, n in zip(keys, sizes[:-1], sizes[1:])]
  tx = optax.rmsprop(1e-3, decay=0.9, eps=1e-7)

  def embed(params, x):
    h = x.reshape(x.shape[0], -1).astype(jnp.float32) / 255.0
    for i, (w, b) in enumerate(params):
      h = h @ w + b
      h = jax.nn.relu(h) if i < len(params) - 1 else h
    return h

  def loss(params, batch):
    diff = embed(params, batch["x_a"]) - embed(params, batch["x_b"])
    d = jnp.sqrt(jnp.sum(diff**2, -1) + 1e-9)
    return jnp.mean(batch["same"] * d**2 + (1 - batch["same"]) * jnp.maximum(1 - d, 0) ** 2)

  def step(state, batch, key):
    params, opt = state
    grads = jax.grad(loss)(params, batch)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), {}

  to_device = lambda images, labels: (jnp.asarray(images), samplers.build_class_index(labels, 10))
  return (params, tx.init(params)), jax.jit(step), None, to_device


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", help="tfds data_dir (default: a fresh temporary one)")
  parser.add_argument("--standin", action="store_true", help="time a stand-in MLP step")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--smoke", action="store_true",
                      help="4 steps on the embedded MNIST sample, no load times: that it runs")
  args = parser.parse_args()
  steps, pk_calls = (4, 3) if args.smoke else (STEPS, 100)
  if args.smoke:
    args.repeats = 1

  train_set, load = smoke_set() if args.smoke else load_times(args.data_dir)
  print(f"devices: {jax.devices()}; {'MNIST sample' if args.smoke else 'Fashion-MNIST train'} "
        f"{train_set.images.shape} "
        f"{train_set.images.dtype}")
  print(f"source: {train_set.source}")
  for name, seconds in load.items():
    print(f"  {name:<28s} {seconds:7.2f} s")

  try:
    if args.standin:
      raise ImportError
    state, step, epoch, to_device = project_step(steps)
    which = "siamese_jax.train (experiments/contrastive.py)"
  except ImportError:
    state, step, epoch, to_device = standin_step(steps)
    which = "stand-in MLP"
  device_data, put = timed(to_device, train_set.images, train_set.labels)
  if hasattr(device_data, "images"):
    images, index = device_data.images, device_data.index
  else:
    images, index = device_data
  print(f"  {'device transfer':<28s} {put:7.2f} s")

  def batch_at(key):
    a, b, same = samplers.sample_balanced_pairs(key, index, BATCH)
    batch = {"x_a": samplers.gather_images(images, a), "x_b": samplers.gather_images(images, b),
             "same": same}
    return {**batch, "mask": jnp.ones_like(same)} if "siamese_jax" in which else batch

  # 8 batches drawn beforehand, used in turn: the step alone, and XLA cannot hoist any input work.
  pool = jax.jit(jax.vmap(batch_at))(jax.random.split(jax.random.key(1), 8))

  def steps_only(state, pool):
    def body(state, i):
      batch = jax.tree.map(lambda x: x[i % 8], pool)
      return step(state, batch, jax.random.fold_in(jax.random.key(2), i))
    return jax.lax.scan(body, state, jnp.arange(steps))[0]

  def sampled_epoch(state):
    def body(state, i):
      key = jax.random.fold_in(jax.random.key(3), i)
      return step(state, batch_at(key), jax.random.fold_in(key, 1))
    return jax.lax.scan(body, state, jnp.arange(steps))[0]

  fresh = lambda: jax.tree.map(jnp.copy, state)  # the project's epoch donates its state
  rows = [("pair indices only", jax.jit(functools.partial(sampling_epoch, steps=steps,
                                                          gather=False)), (images, index)),
          ("indices + gather_images", jax.jit(functools.partial(sampling_epoch, steps=steps)),
           (images, index)),
          ("train step only", jax.jit(steps_only), (state, pool)),
          ("epoch: sampling + step", jax.jit(sampled_epoch), (state,))]
  if epoch is not None:
    rows.append(("train.make_train_epoch", lambda: epoch(fresh(), device_data, jax.random.key(3)),
                 ()))
  print(f"one epoch = {steps} steps x {BATCH} pairs, step: {which}; best of {args.repeats} "
        "(first run incl. compile)")
  times = {}
  for name, fn, fn_args in rows:
    first, times[name] = best_of(args.repeats, fn, *fn_args)
    print(f"  {name:<28s} {times[name]:7.3f} s   ({first:.2f} s first)")
  sample_s, epoch_s = times["indices + gather_images"], times["epoch: sampling + step"]
  print(f"input side: {100 * sample_s / epoch_s:.1f} % of the epoch alone, "
        f"{100 * (epoch_s - times['train step only']) / epoch_s:.1f} % as (epoch - step) / epoch "
        f"({1e3 * epoch_s / steps:.3f} ms a step)" + ("" if not load else
        f"; cached load = {100 * load['cached load'] / epoch_s:.0f} % of one epoch, once per run"))

  pk = jax.jit(samplers.sample_pk_batch, static_argnums=(2, 3))
  _, pk_s = best_of(args.repeats, lambda: [pk(jax.random.key(i), index, 8, 16)
                                           for i in range(pk_calls)])
  print(f"sample_pk_batch(P=8, K=16) on {len(train_set.labels):,} images: "
        f"{1e3 * pk_s / pk_calls:.3f} ms a call "
        "(dispatch included)")
  print(f"peak host RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
  main()
