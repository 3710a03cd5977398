"""Steady training throughput of the project's models, as a run trains them: the experiment
config's model, loss, optimiser and batches, built by the library (``models.build_model``,
``train.create_train_state``, ``train.make_train_epoch``: one compiled call of ``steps`` steps
that draws and augments its batches on the device) over synthetic uint8 images held on the
device, in float32 and bfloat16, at several batch sizes.

bfloat16: the config has no dtype key yet and the modules no dtype argument, so the benchmark
wraps the state's ``apply_fn``: parameters (kept in float32, as the optimiser updates them) and
images are cast to bfloat16 on the way into the model and its float outputs back to float32 on
the way out (mixed precision: the loss and the update stay in float32). GroupNorm computes its
statistics in float32 either way (flax's rule).

FLOPs per step: XLA's cost analysis of the same program for one step (unrolled, no loop), which
counts the element-wise work as well as the matrix products. The rate is compared with the matmul
ceiling of the same dtype measured by ``matmul_peak`` (peak.json).
"""

import dataclasses
import importlib
import itertools
import math
import statistics
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments import default
from siamese_jax import batches, normalization, sharding, models, train


@dataclasses.dataclass(frozen=True)
class Case:
  """A model as an experiment config trains it, and the sizes measured."""
  name: str
  experiment: str  # experiments/<experiment>.py
  overrides: tuple  # ("section.key", value) pairs on top of it
  image_shape: tuple  # (H, W, C) of the synthetic images
  num_classes: int
  batch_sizes: tuple  # examples per step (pairs for pair losses, images otherwise)
  steps_per_call: int
  dtypes: tuple = ("float32", "bfloat16")
  dry_run: dict = dataclasses.field(default_factory=dict)  # fields replaced in the dry run:
  # tiny sizes, and one dtype where the other adds nothing on the CPU (the cast is shared code)


CASES = {
    "mlp": Case("mlp", "contrastive", (), (28, 28, 1), 10, (128, 1024, 8192), 100,
                dry_run={"batch_sizes": (8,), "steps_per_call": 2}),
    # The Omniglot default's step: 976 training classes (122 characters, rotated and mirrored).
    "convnet4": Case("convnet4", "omniglot", (), (28, 28, 1), 976, (64, 256, 1024), 50,
                     dry_run={"batch_sizes": (8,), "num_classes": 16, "steps_per_call": 2,
                      "dtypes": ("bfloat16",)}),
    # experiments/cars196.py: ResNet-18 at 64 x 64, batch-all triplets over P x 4 batches.
    "resnet18": Case("resnet18", "cars196", (), (64, 64, 3), 98, (64, 256), 20,
                     dry_run={"batch_sizes": (8,), "image_shape": (32, 32, 3), "num_classes": 4,
                      "steps_per_call": 1, "dtypes": ("float32",)}),
    # Koch et al. (2015): their convnet at 105 x 105, 4096-d sigmoid embedding, L1 head, BCE,
    # batch 128 pairs first (theirs).
    "koch": Case("koch", "omniglot",
                 (("model.encoder", "koch"), ("model.embedding_dim", None),
                  ("model.head", "abs_diff"), ("loss.name", "bce"), ("data.image_size", 105)),
                 (105, 105, 1), 128, (128, 32), 10,
                 dry_run={"batch_sizes": (1,), "steps_per_call": 1, "dtypes": ("float32",)}),
    # experiments/cub200.py's towers at 224 x 224 (random weights: the speed is the same as with
    # the pretrained ones): ResNet-50 (frozen BatchNorm), and ViT-S/16 in its place.
    "resnet50": Case("resnet50", "cub200", (("model.pretrained", None),), (224, 224, 3), 100,
                     (64, 256), 10,
                     dry_run={"overrides": (("model.pretrained", None), ("model.embedding_dim", 16),
                                            ("model.backbone_args", "stage_sizes=(1, 1, 1, 1), "
                                             "widths=(8, 16, 32, 64)")),
                              "image_shape": (32, 32, 3), "batch_sizes": (8,), "num_classes": 4,
                              "steps_per_call": 1, "dtypes": ("float32",)}),
    "vit_small": Case("vit_small", "cub200", (("model.encoder", "vit_small_patch16_224"),
                                              ("model.pretrained", None)), (224, 224, 3), 100,
                      (64, 256), 10,
                      dry_run={"overrides": (("model.encoder", "vit_small_patch16_224"),
                                             ("model.pretrained", None), ("model.embedding_dim", 16),
                                             ("model.backbone_args", "depth=1, embed_dim=32, "
                                              "num_heads=2, pos_grid=(2, 2)")),
                               "image_shape": (32, 32, 3), "batch_sizes": (8,), "num_classes": 4,
                               "steps_per_call": 1, "dtypes": ("bfloat16",)}),
}
SAMPLES_PER_CLASS = 4  # the K of P x K batches


def bfloat16_compute(apply_fn):
  """``apply_fn`` computing in bfloat16: float params and inputs cast to bfloat16, float outputs
  back to float32 (see the module docstring)."""
  def cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if hasattr(x, "dtype") and jnp.issubdtype(
        x.dtype, jnp.floating) else x, tree)

  def apply(variables, *args, **kwargs):
    return cast(apply_fn(cast(variables, jnp.bfloat16), *cast(args, jnp.bfloat16), **kwargs),
                jnp.float32)
  return apply


def case_config(case: Case, batch_size: int):
  """The case's experiment config at ``batch_size`` examples per step."""
  config = importlib.import_module(f"experiments.{case.experiment}").get_config()
  changes = dict(case.overrides)
  changes.update({"train.batch_size": batch_size, "model.num_classes": case.num_classes,
                  "train.steps_per_call": case.steps_per_call,
                  # read by P x K batches only (triplet losses), which then hold batch_size
                  "train.classes_per_batch": max(batch_size // SAMPLES_PER_CLASS, 1),
                  "train.samples_per_class": SAMPLES_PER_CLASS})
  return default.override(config, changes)


def synthetic_images(case: Case, count: int) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images [count, H, W, C] of uniform noise and balanced labels [count]."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (count, *case.image_shape), dtype=np.uint8)
  return images, (np.arange(count) % case.num_classes).astype(np.int32)


def cost_flops(lowered) -> float | None:
  """XLA's "flops" estimate of a lowered program; the compiled program's where the lowered one
  has none; None where neither has."""
  for analysis in (lowered.cost_analysis, lambda: lowered.compile().cost_analysis()):
    try:
      cost = analysis()
    except Exception:  # a backend without the analysis: the rates are still measured
      continue
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    if cost and cost.get("flops"):
      return float(cost["flops"])
  return None


class Program(NamedTuple):
  """What a run builds to train a case: the fused call of ``steps`` steps, the same for one
  unrolled step (for the FLOPs), the initial state and the device-resident data."""
  epoch: Callable
  one_step: Callable
  state: Any
  data: Any
  batch_spec: batches.BatchSpec
  unrolled: bool
  config: Any


def training_program(case: Case, dtype: str, batch_size: int) -> Program:
  """The case's training as the library builds it (the one place that calls its entry points)."""
  config = case_config(case, batch_size)
  spec = train.loss_spec_from_config(config)
  batch_spec = batches.batch_spec_from_config(config, spec.batch_kind)
  images, labels = synthetic_images(case, max(4 * batch_size * images_per_example(batch_spec),
                                              256))
  mesh = sharding.make_mesh()
  tx = train.make_optimizer(config.optimizer, 1000 * case.steps_per_call)
  state = train.create_train_state(jax.random.key(0), models.build_model(config.model),
                                   case.image_shape, tx)
  state = state.replace(params=normalization.adapt(state.params,
                                                   config.model.input_normalization, images))
  if dtype == "bfloat16":
    state = state.replace(apply_fn=bfloat16_compute(state.apply_fn))
  unroll = train.unroll_steps(config.train.unroll, config.model.encoder)  # as a run decides
  return Program(
      epoch=train.make_train_epoch(spec, batch_spec, case.steps_per_call, mesh, unroll=unroll),
      one_step=train.make_train_epoch(spec, batch_spec, 1, mesh, unroll=True),
      state=sharding.put_replicated(state, mesh),
      data=sharding.device_data(images, labels, case.num_classes, mesh),
      batch_spec=batch_spec, unrolled=unroll, config=config)


def images_per_example(batch_spec) -> int:
  return 2 if batch_spec.kind == "pairs" else 1


def seconds_per_call(call, state, data, min_round_s: float, rounds: int) -> dict:
  """Times ``call(state, data, key)`` (compiled): the first call, then ``rounds`` rounds of calls
  lasting at least ``min_round_s`` each. A key per call, folded in as a run folds its calls'."""
  key, made = jax.random.key(2), itertools.count()
  next_key = lambda: jax.random.fold_in(key, next(made))
  start = time.perf_counter()
  state, metrics = jax.block_until_ready(call(state, data, next_key()))
  first_call_s = time.perf_counter() - start
  start = time.perf_counter()
  state, metrics = jax.block_until_ready(call(state, data, next_key()))
  calls = max(1, math.ceil(min_round_s / (time.perf_counter() - start)))
  call_times = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(calls):
      state, metrics = call(state, data, next_key())
    jax.block_until_ready(metrics)
    call_times.append((time.perf_counter() - start) / calls)
  return {"first_call_s": first_call_s, "call_s": statistics.median(call_times),
          "call_s_rounds": call_times, "timed_calls": calls * rounds,
          "last_loss": float(np.mean(np.asarray(metrics["loss"])))}


def measure_one(case: Case, dtype: str, batch_size: int, min_round_s: float, rounds: int) -> dict:
  """One row: compile time, steady steps/s, images/s and FLOPs/step of the case's fused call."""
  program = training_program(case, dtype, batch_size)
  flops = cost_flops(program.one_step.lower(program.state, program.data, jax.random.key(1)))
  start = time.perf_counter()
  call = program.epoch.lower(program.state, program.data, jax.random.key(1)).compile()
  compile_s = time.perf_counter() - start
  timed = seconds_per_call(call, program.state, program.data, min_round_s, rounds)
  steps, examples = case.steps_per_call, program.batch_spec.examples
  step_s = timed["call_s"] / steps
  images = examples * images_per_example(program.batch_spec)
  return {
      "model": case.name, "dtype": dtype, "experiment": f"experiments/{case.experiment}.py",
      "encoder": program.config.model.encoder, "loss": program.config.loss.name,
      "batch_kind": program.batch_spec.kind, "examples_per_step": examples,
      "images_per_step": images, "image_shape": list(case.image_shape), "steps_per_call": steps,
      "unrolled": program.unrolled, "compile_s": compile_s, "first_call_s": timed["first_call_s"],
      "timed_calls": timed["timed_calls"], "step_ms": 1e3 * step_s,
      "step_ms_rounds": [1e3 * t / steps for t in timed["call_s_rounds"]],
      "steps_per_s": 1 / step_s, "examples_per_s": examples / step_s,
      "images_per_s": images / step_s, "flops_per_step": flops,
      "tflops_per_s": None if flops is None else flops / step_s / 1e12,
      "last_loss": timed["last_loss"],
  }


def with_peak_fraction(row: dict, peak_tflops: dict | None) -> dict:
  """``row`` with "pct_of_matmul_peak": its TFLOP/s over the measured matmul TFLOP/s of its dtype
  at the default precision (None without both)."""
  peak = (peak_tflops or {}).get(row["dtype"])
  fraction = row["tflops_per_s"] / peak if peak and row.get("tflops_per_s") else None
  return {**row, "matmul_peak_tflops": peak,
          "pct_of_matmul_peak": None if fraction is None else 100 * fraction}


def run_cases(names, deadline: float, dry_run: bool, peak_tflops: dict | None, record) -> None:
  """Measures every (case, dtype, batch size) of ``names`` in order until ``deadline``
  (time.monotonic()); each case gets an equal share of the time left when it starts. Calls
  ``record(row)`` after each row: a measured row, or one with "error" or "skipped"."""
  min_round_s, rounds = (0.0, 1) if dry_run else (0.3, 3)
  for position, name in enumerate(names):
    case = CASES[name]
    if dry_run:
      case = dataclasses.replace(case, **case.dry_run)
    case_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(names) - position)
    last_row_s = 0.0  # a row that would not end before the case's deadline is not started
    for batch_size in case.batch_sizes:
      for dtype in case.dtypes:
        row = {"model": name, "dtype": dtype, "examples_per_step": batch_size}
        start = time.monotonic()
        if start + 0.8 * last_row_s > case_deadline:
          record({**row, "skipped": "its share of the part's time budget ran out"})
          continue
        try:
          record(with_peak_fraction(measure_one(case, dtype, batch_size, min_round_s, rounds),
                                    peak_tflops))
        except Exception as e:  # one failed row must not stop the others
          record({**row, "error": f"{type(e).__name__}: {e}"[:2000]})
        jax.clear_caches()
        last_row_s = time.monotonic() - start
