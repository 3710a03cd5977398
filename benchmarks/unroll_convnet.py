"""Convnet steps on CPU: scanned vs unrolled vs a plain jit step from a Python loop.

    .venv/bin/python benchmarks/unroll_convnet.py [--steps 8]
    .venv/bin/python benchmarks/unroll_convnet.py --smoke     # tiny sizes: does it run

The step is experiments/omniglot.py's (convnet4 from width 32 at 28 x 28, its cosine-softmax
classifier over the classes, augmentation, Adam, batch 64) on random uint8 images (2,720, 136
classes, as Omniglot small1; ``--smoke``: 160 of 8 classes, width 4, batch 16 without
augmentation, 2 steps). It prints the first call (compile included) and the ms per step
afterwards of: ``train.make_train_epoch`` with the steps in
a ``lax.scan`` (``unroll=False``), the same steps unrolled (``unroll=True``, what
``train.unroll="auto"`` picks for convnets on CPU), and ``train.make_train_step`` called from a
Python loop. XLA:CPU runs conv weight gradients inside a loop body on a slow path
(jax-ml/jax#12868), which the unrolled program avoids.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from experiments import omniglot  # noqa: E402
from noise_images import noise_training  # noqa: E402
from siamese_jax import batches, train  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=8, help="steps per compiled call")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: that it runs")
  args = parser.parse_args()
  config = omniglot.get_config()
  classes, steps = 136, args.steps
  if args.smoke:
    classes, steps = 8, 2
    config.model.update(filters=4, norm_groups=4, filter_growth=1, embedding_dim=8)
    config.train.update(batch_size=16, augment=False)
  config.model.num_classes = classes  # the cosine classifier's outputs
  mesh, data, spec, batch_spec, fresh = noise_training(config, classes, 20)
  key = jax.random.key(1)
  print(f"{jax.devices()}; {steps} steps of batch {batch_spec.examples} ({batch_spec.kind}) a "
        "call")
  for name, unroll in (("unrolled", True), ("scan", False)):
    epoch, state = train.make_train_epoch(spec, batch_spec, steps, mesh, unroll=unroll), fresh()
    start = time.perf_counter()
    state, _ = jax.block_until_ready(epoch(state, data, key))
    first = time.perf_counter() - start
    start = time.perf_counter()
    state, _ = jax.block_until_ready(epoch(state, data, key))
    print(f"{name:>9}: first call {first:.2f} s, then {(time.perf_counter() - start) / steps * 1e3:.1f} ms/step")
  step, state = train.make_train_step(spec, mesh), fresh()
  draw = jax.jit(lambda k: batches.sample_batch(k, data, batch_spec))
  start = time.perf_counter()
  state, _ = jax.block_until_ready(step(state, draw(key), key))
  first = time.perf_counter() - start
  start = time.perf_counter()
  for i in range(steps):
    state, _ = step(state, draw(jax.random.fold_in(key, i)), key)
  jax.block_until_ready(state)
  print(f"{'jit loop':>9}: first call {first:.2f} s, then {(time.perf_counter() - start) / steps * 1e3:.1f} ms/step")


if __name__ == "__main__":
  main()
