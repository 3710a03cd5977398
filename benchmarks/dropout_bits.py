"""Dropout masks on CPU by key implementation: jax.random's threefry, siamese_jax.random_bits'
unrolled threefry (the same bits), rbg and unsafe_rbg (other bits, XLA's RngBitGenerator).

    .venv/bin/python benchmarks/dropout_bits.py            # batch 128 pairs: masks [2, 256, 128]
    .venv/bin/python benchmarks/dropout_bits.py --rows 2048 --repeats 9
    .venv/bin/python benchmarks/dropout_bits.py --smoke    # 16 rows, 4 steps: does it run

Each implementation draws one step's masks of the Keras MLP's two dropout layers
(``bernoulli(0.9, [2, rows, 128])``, rows = 2 x pairs) for --steps steps in one ``lax.scan``;
the scans are timed interleaved, best of --repeats. Prints ms per step and whether the unrolled
masks equal threefry's.
"""

import argparse
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from siamese_jax import random_bits  # noqa: E402


def key_for(kind: str, key):
  if kind == "unrolled":
    return random_bits.unrolled(key)
  if kind in ("rbg", "unsafe_rbg"):
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl=kind)
  return key


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rows", type=int, default=256)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: that it runs")
  args = parser.parse_args()
  if args.smoke:
    args.rows, args.steps, args.repeats = 16, 4, 1
  shape = (2, args.rows, 128)

  def scan_of(kind):
    def body(total, i):
      keep = jax.random.bernoulli(key_for(kind, jax.random.fold_in(jax.random.key(0), i)), 0.9,
                                  shape)
      return total + jnp.sum(keep), None
    return jax.jit(lambda t: jax.lax.scan(body, t, jnp.arange(args.steps))[0])

  kinds = ("threefry", "unrolled", "rbg", "unsafe_rbg")
  scans = {kind: scan_of(kind) for kind in kinds}
  for scan in scans.values():
    scan(jnp.int32(0)).block_until_ready()
  best = dict.fromkeys(kinds, math.inf)
  for _ in range(args.repeats):
    for kind, scan in scans.items():
      start = time.perf_counter()
      scan(jnp.int32(0)).block_until_ready()
      best[kind] = min(best[kind], time.perf_counter() - start)
  mask = lambda kind: np.asarray(jax.jit(lambda k: jax.random.bernoulli(key_for(kind, k), 0.9, shape))(
      jax.random.key(5)))
  import os
  print(f"masks {shape}, {args.steps} steps, best of {args.repeats}; load {os.getloadavg()[0]:.2f}")
  for kind in kinds:
    print(f"{kind:>10}: {1e3 * best[kind] / args.steps:.3f} ms a step")
  print("unrolled masks equal threefry's:", bool(np.array_equal(mask("unrolled"), mask("threefry"))))


if __name__ == "__main__":
  main()
