"""The device's ceilings, measured: n x n x n ``jnp.matmul`` in bfloat16 and float32 (at JAX's
default precision, which lets a GPU use TF32 for float32, and at "highest", true float32) and a
device-to-device copy. The throughput parts give their rates as a percentage of the matmul
ceiling of their own dtype at the default precision.
"""

import statistics
import time

import jax
import jax.numpy as jnp

KINDS = {  # name -> (dtype, precision)
    "bfloat16": (jnp.bfloat16, None),
    "float32": (jnp.float32, None),
    "float32_highest": (jnp.float32, jax.lax.Precision.HIGHEST),
}


def timed_calls(fn, args, calls: int, rounds: int = 3) -> float:
  """Median over ``rounds`` of the seconds per call of ``fn(*args)``, ``calls`` calls a round
  (the result of the last call of a round waited for), after two warm-up calls."""
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / calls)
  return statistics.median(times)


def matmul_tflops(n: int, dtype, precision, calls: int) -> float:
  """TFLOP/s of one n x n x n matrix product on random normal operands (never zeros)."""
  a, b = (jax.random.normal(jax.random.key(seed), (n, n), jnp.float32).astype(dtype)
          for seed in (0, 1))
  product = jax.jit(lambda a, b: jnp.matmul(a, b, precision=precision))
  return 2 * n ** 3 / timed_calls(product, (a, b), calls) / 1e12


def copy_gb_per_s(elements: int, calls: int) -> float:
  """GB/s of ``x * 2`` over float32 [elements]: bytes read plus bytes written."""
  x = jax.random.normal(jax.random.key(2), (elements,), jnp.float32)
  seconds = timed_calls(jax.jit(lambda x: x * 2), (x,), calls)
  return 2 * 4 * elements / seconds / 1e9


def measure(dry_run: bool) -> dict:
  """{"matmul_tflops": {kind: TFLOP/s}, "matmul_n", "copy_gb_per_s", "copy_bytes"}."""
  n, calls = (256, 3) if dry_run else (8192, 20)
  elements = 2 ** 18 if dry_run else 2 ** 28  # 1 GiB of float32 on the device
  return {"matmul_n": n,
          "matmul_tflops": {kind: matmul_tflops(n, dtype, precision, calls)
                            for kind, (dtype, precision) in KINDS.items()},
          "copy_bytes": 4 * elements, "copy_gb_per_s": copy_gb_per_s(elements, calls)}
