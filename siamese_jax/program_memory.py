"""How much memory a compiled training call needs, estimated before anything is compiled.

A call of ``train.make_train_epoch`` runs ``train.steps_per_call`` steps. Inside a loop (``scan``)
the steps reuse one step's buffers; unrolled (``train.unroll``, the default for convolutional
encoders whose convolutions are XLA's on CPU) XLA keeps some of every step's buffers, so the
program grows with the steps (with ``nn.max_pool``, ``convnet4`` at 64 x 64, batch 128, asked for
37 GB at 20 steps a call). The estimate traces one step (no compilation: about a second for
``convnet4``) and takes the peak of its live intermediate values in program order
(``jaxpr_peak_bytes``, no fusion); ``call_bytes`` scales it by factors measured against XLA:CPU's
own ``compile().memory_analysis()`` (``FIRST_STEP_FACTOR``, ``NEXT_STEP_FACTOR``).
"""

import math
import os

import jax
import numpy as np
from jax.extend import core as jax_core

from siamese_jax import batches, memory, samplers, sharding, streaming, train

# Measured on XLA:CPU (jax 0.10.2), ``convnet4`` with the contrastive loss, unrolled calls of 1
# and 3 steps, with ``model.conv_impl`` "xla" and "matmul" (28 x 28 at batch 16 / 8 filters and
# batch 64 / 32 filters; 48 x 48 at batch 128 / 64 filters): temp_size_in_bytes of one step is
# 0.95-1.00 times jaxpr_peak_bytes (e.g. 61.7 / 64.9 MB, 1,173 / 1,173 MB), and every further
# step adds 0.01-0.12 times the peak. (Before ``siamese_jax.pooling`` replaced nn.max_pool, whose
# reduce_window and select_and_scatter buffers XLA kept per step, it was 2.1 times and 1.26 times
# the peak a step: 37 GB for 20 steps of convnet4 at 64 x 64, batch 128.) Rounded up, so the
# estimate errs large.
FIRST_STEP_FACTOR = 1.25
NEXT_STEP_FACTOR = 0.25


def _nbytes(var) -> int:
  aval = getattr(var, "aval", None)
  if not hasattr(aval, "shape") or not hasattr(aval, "dtype"):
    return 0
  return int(np.prod(aval.shape, dtype=np.int64)) * aval.dtype.itemsize  # key<fry>: 8


def _inner_jaxprs(eqn):
  for param in eqn.params.values():
    for value in param if isinstance(param, (list, tuple)) else (param,):
      if isinstance(value, jax_core.ClosedJaxpr):
        yield value.jaxpr
      elif isinstance(value, jax_core.Jaxpr):
        yield value


def jaxpr_peak_bytes(jaxpr: jax_core.Jaxpr) -> int:
  """The most bytes of intermediate values alive at once when ``jaxpr``'s equations run in order
  (each freed after its last use; a nested jaxpr counts its own peak while its equation runs).
  Inputs are not counted: they are the call's arguments."""
  last_use = {}
  for i, eqn in enumerate(jaxpr.eqns):
    for var in eqn.invars:
      if isinstance(var, jax_core.Var):
        last_use[var] = i
  for var in jaxpr.outvars:
    if isinstance(var, jax_core.Var):
      last_use[var] = len(jaxpr.eqns)
  inputs = set(jaxpr.invars) | set(jaxpr.constvars)
  live = peak = 0
  for i, eqn in enumerate(jaxpr.eqns):
    inner = max((jaxpr_peak_bytes(sub) for sub in _inner_jaxprs(eqn)), default=0)
    outputs = sum(_nbytes(var) for var in eqn.outvars)
    peak = max(peak, live + max(inner, outputs))
    live += sum(_nbytes(var) for var in eqn.outvars if var in last_use)
    for var in {v for v in eqn.invars if isinstance(v, jax_core.Var)}:
      if last_use.get(var) == i and var not in inputs:
        live -= _nbytes(var)
  return peak


def step_peak_bytes(model, image_shape, tx, spec: train.LossSpec, num_classes: int,
                    batch_spec: batches.BatchSpec, train_set, mesh) -> int:
  """``jaxpr_peak_bytes`` of one training step (batch drawn from ``train_set``, a
  data.LabelledImages, as ``train.make_train_epoch`` draws it) for images of ``image_shape``
  [H, W, C]; traced on abstract values, nothing is initialised or compiled."""
  state = jax.eval_shape(lambda key: train.create_train_state(
      key, model, image_shape, tx, spec, num_classes), jax.random.key(0))
  index = jax.eval_shape(lambda: samplers.build_class_index(
      np.asarray(train_set.labels), num_classes))
  data = sharding.DeviceData(jax.ShapeDtypeStruct(train_set.images.shape, np.uint8),
                             jax.ShapeDtypeStruct(train_set.labels.shape, np.int32), index)

  one_step = train.make_train_epoch(spec, batch_spec, 1, mesh, unroll=True)
  key = jax.eval_shape(lambda: jax.random.key(0))
  jaxpr = jax.make_jaxpr(one_step)(state, data, key)
  return jaxpr_peak_bytes(jaxpr.jaxpr)


def call_bytes(step_peak: int, steps: int, unroll: bool) -> int:
  """Estimated memory of a compiled call of ``steps`` steps whose one step peaks at
  ``step_peak`` bytes (``step_peak_bytes``): one step's program, plus one more step's share for
  every further step when they are unrolled."""
  extra_steps = steps - 1 if unroll else 0
  return int(step_peak * (FIRST_STEP_FACTOR + NEXT_STEP_FACTOR * extra_steps))


def max_steps_per_call(step_peak: int, budget: int, unroll: bool) -> int | None:
  """The most steps a call may fuse within ``budget`` bytes (at least 1); None: no limit (steps
  in a loop share one step's buffers)."""
  if not unroll:
    return None
  return max(1, 1 + math.floor((budget / max(step_peak, 1) - FIRST_STEP_FACTOR)
                               / NEXT_STEP_FACTOR))


def available_host_bytes() -> int:
  """The host memory the kernel says is available now (MemAvailable), else all of its RAM."""
  try:
    with open("/proc/meminfo") as meminfo:
      for line in meminfo:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def budget_bytes(budget_mb: float | None, device=None) -> int:
  """``train.program_budget_mb`` in bytes; None: half the device's ``bytes_limit``, or on CPU
  (no limit reported) half the host memory available now."""
  if budget_mb is not None:
    return int(budget_mb * 2 ** 20)
  limit = streaming.device_memory_limit(device)
  return limit // 2 if limit else available_host_bytes() // 2


out_of_memory_error = memory.out_of_memory_error  # one rule, beside the up-front estimates


def out_of_memory_advice(error: BaseException, config) -> str:
  """One line for an allocation failure of a run of ``config``: XLA's first line, then the keys
  that shrink the programs (with their values) and the budget key."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  what = next((line for line in lines if "RESOURCE_EXHAUSTED" in line or "allocat" in line),
              lines[0] if lines else type(error).__name__)
  if len(what) > 160:
    what = what[:157] + "..."
  return (f"out of memory ({what}); lower --config.train.steps_per_call (now "
          f"{config.train.steps_per_call}), --config.train.batch_size "
          f"({config.train.batch_size}), --config.data.image_size ({config.data.image_size}) "
          f"or --config.model.embedding_dim ({config.model.embedding_dim}), or set "
          "--config.train.program_budget_mb below the memory this machine has free")
