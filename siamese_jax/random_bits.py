"""Dropout's random bits, bit-identical to jax.random's and about 3x cheaper on CPU.

On CPU JAX lowers the threefry2x32 hash behind ``jax.random`` as a 5-trip ``while`` loop (short
to compile), which XLA cannot fuse with the ops around it; on GPU it lowers the same 20 rounds
unrolled. A dropout layer draws 32 bits per activation, so at batch 128 pairs the masks of the
MLP's two dropout layers took ~0.5 ms of a ~1-1.5 ms step (benchmarks/README.md). ``unrolled(key)``
re-wraps a threefry key in a PRNG implementation whose bulk bits are that hash written out
(``jax.extend.random.define_prng_impl``): split, fold_in and seeding stay threefry's, and the bits
are the same bits (partitionable threefry: counter = flat index), so masks, losses and whole runs
are unchanged and reproducible as before (tests/test_random_bits.py compares them).

Why not ``jax.random`` key implementations ``rbg`` / ``unsafe_rbg``: their bits come from XLA's
RngBitGenerator, which on CPU measured 4-5x *slower* than threefry for these masks, and they are
other bits (a run would no longer match one made with threefry, and the bits may differ between
backends and XLA versions).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _threefry2x32(k1, k2, x1, x2):
  """JAX's threefry2x32 hash, 20 rounds written out (jax._src.random.threefry2x32)."""
  rotl = lambda x, d: (x << np.uint32(d)) | (x >> np.uint32(32 - d))
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  x = [x1 + ks[0], x2 + ks[1]]
  for i in range(5):
    for r in ((13, 15, 26, 6), (17, 29, 16, 24))[i % 2]:
      x[0] = x[0] + x[1]
      x[1] = x[0] ^ rotl(x[1], r)
    x[0] = x[0] + ks[(i + 1) % 3]
    x[1] = x[1] + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x


def _wrap(key_data):
  return jax.random.wrap_key_data(key_data, impl="threefry2x32")


def _random_bits(key_data, bit_width: int, shape):
  """jax.random.bits of a threefry key [2] as partitionable threefry draws them (the counter of an
  element is its flat index), the hash unrolled; other widths and sizes go to jax.random."""
  if math.prod(shape) >= 2**32 or bit_width not in (8, 16, 32):
    dtype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[bit_width]
    return jax.random.bits(_wrap(key_data), shape, dtype)
  strides = np.cumprod((tuple(shape[1:]) + (1,))[::-1])[::-1]
  counter = (sum(jax.lax.broadcasted_iota(jnp.uint32, shape, d) * np.uint32(s)
                 for d, s in enumerate(strides)) if shape else jnp.zeros((), jnp.uint32))
  b1, b2 = _threefry2x32(key_data[0], key_data[1], jnp.zeros(shape, jnp.uint32), counter)
  return (b1 ^ b2).astype({8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[bit_width])


@functools.cache
def _impl():
  from jax.extend import random as jax_random
  return jax_random.define_prng_impl(
      key_shape=(2,), seed=lambda seed: jax.random.key_data(jax.random.key(seed)),
      split=lambda data, shape: jax.random.key_data(jax.random.split(_wrap(data), shape)),
      fold_in=lambda data, n: jax.random.key_data(jax.random.fold_in(_wrap(data), n)),
      random_bits=_random_bits, name="threefry2x32_unrolled", tag="tfu")


def unrolled(key: jax.Array) -> jax.Array:
  """``key`` (a threefry2x32 typed key) as a key that draws the same bits with the hash unrolled.
  Requires jax_threefry_partitionable (JAX's default since 0.5), whose bits it reproduces."""
  if not jax.config.jax_threefry_partitionable:
    return key
  return jax.random.wrap_key_data(jax.random.key_data(key), impl=_impl())
