"""Training throughput against the machine's measured float32 matmul peak (cases a-d).

    .venv/bin/python benchmarks/train_throughput.py               # a-d
    .venv/bin/python benchmarks/train_throughput.py --quick       # shortened epochs, a minute
    .venv/bin/python benchmarks/train_throughput.py --smoke       # a and d, 1 step: does it run
    .venv/bin/python benchmarks/train_throughput.py --cases a,b --repeats 5 --profile /tmp/prof

Cases (the project's experiment configs; data read from the official files, no TensorFlow):
  a  MLP contrastive, batch 128 pairs: experiments/contrastive.py (Keras mnist_siamese MLP
     784-128-128-128 with dropout 0.1, Euclidean distance, contrastive loss, RMSprop) on the
     60,000 Fashion-MNIST training images
  b  the same at batch 1024
  c  Koch et al.'s convnet on 105 x 105 Omniglot (background small1, 2,720 drawings), batch 128
     pairs: experiments/omniglot.py with model.encoder=koch (its 4096-d sigmoid embedding),
     abs_diff head and pair BCE, as Koch et al. (2015); Adam
  d  triplet batch-hard, P x K = 32 x 4 = 128 anchors: experiments/triplet.py (the same MLP) on
     Omniglot small1 at 28 x 28 (136 characters; Fashion-MNIST has only 10 classes)
Case c's fused epoch is 1 step, unrolled (train.unroll="auto", as main.py runs convnets on CPU):
inside a loop body (lax.scan / while) XLA:CPU leaves the weight-gradient convolutions in a layout
its fast convolution paths do not take (jax-ml/jax#12868); one scanned step took ~20 min and
~19 GB on 2 cores, a plain jit step ~30 s.
Each case runs in its own subprocess (so that its peak RSS is its own) and reports:
  compile      s to trace, lower and compile the fused epoch (train.make_train_epoch: one scan,
               or its steps unrolled where train.unroll_steps says so)
  first epoch  s of compile + the first epoch call, as a run sees it
  steady       pairs (anchors for d) per second of the fused epoch: best and median of --repeats
               epochs, each repeated to last at least --min_seconds
  jit loop     the same steps as train.make_train_step (a plain jit step) called from a Python
               loop, each batch drawn on device by a jitted sample_batch: "async" never waits for
               the device, "sync" fetches the loss every step (a host round trip per step)
  GFLOP/s      FLOPs per step x steps per second, and its fraction of the matmul peak
  peak RSS     of the case's process (ru_maxrss, MB)
FLOPs per step are counted two ways, which must agree: analytically, by walking the jaxpr of the
loss: each dot_general / conv costs 2 x multiply-adds forward, and the same again for the
gradient of each operand that depends on the parameters (weight gradients always, input
gradients only where the input depends on parameters: never for the images); and from the HLO
that XLA compiled for one step, summing its dot and convolution instructions (what it runs).
XLA's cost_analysis() "flops", which adds the element-wise work (activations, dropout, loss,
optimiser), is printed beside them. Only dot/conv FLOPs enter GFLOP/s.
Peak: float32 jnp.dot of n x n matrices (n = 512, 1024, 2048), the best GFLOP/s, measured in every
case's process before and after its case; fractions are of the best peak of the whole run.
Results: a table on stdout and benchmarks/results/train_throughput.json (--out).
``--smoke``: cases a and d at 1 step of 32 pairs or 4 x 4 on the embedded MNIST sample (any
machine); no file written unless --out is given.
"""

import argparse
import dataclasses
import io
import json
import math
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from siamese_jax import batches, models, random_bits, scoring, sharding, train  # noqa: E402
import result_files  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  title: str
  config: str  # experiments/<config>.py
  data: str  # "fashion_mnist" | "omniglot105" | "omniglot28" | "mnist_sample"
  batch_size: int = 128
  classes_per_batch: int = 0  # P x K cases
  samples_per_class: int = 0
  overrides: tuple = ()
  max_steps: int | None = None  # an "epoch" of at most this many steps (Koch: minutes a step)
  fused_repeats: int | None = None  # None: --repeats; 0: the first epoch's run is the steady one
  loop_steps: int | None = None  # steps of the jit loop (default: an epoch)


CASES = {
    "a": Case("a", "MLP contrastive, batch 128", "contrastive", "fashion_mnist", 128),
    "b": Case("b", "MLP contrastive, batch 1024", "contrastive", "fashion_mnist", 1024),
    "c": Case("c", "Koch convnet 105x105 Omniglot, batch 128", "omniglot", "omniglot105", 128,
              overrides=(("model.encoder", "koch"), ("model.embedding_dim", None),
                         ("model.head", "abs_diff"), ("loss.name", "bce"),
                         ("data.image_size", 105)), max_steps=1, fused_repeats=1, loop_steps=2),
    "d": Case("d", "triplet batch-hard, P x K = 32 x 4", "triplet", "omniglot28",
              classes_per_batch=32, samples_per_class=4),
}
QUICK = {"a": {"max_steps": 20}, "b": {"max_steps": 4}, "d": {"max_steps": 5},
         "c": {"batch_size": 1, "loop_steps": 1, "title": "Koch convnet 105x105 Omniglot, batch 1"}}
SMOKE_CASES = "a,d"  # c is a config of a's code path whose compile alone takes minutes
SMOKE = {name: {"data": "mnist_sample", "max_steps": 1, "loop_steps": 1, "batch_size": 32,
                "classes_per_batch": 4 if name == "d" else 0,
                "title": CASES[name].title.split(",")[0] + " (smoke)"}
         for name in SMOKE_CASES.split(",")}


# ------------------------------------------------------------------------------ the peak

def matmul_peak(sizes=(512, 1024, 2048), seconds: float = 0.3) -> dict:
  """Best float32 GFLOP/s of ``a @ b`` for n x n matrices, for each n in ``sizes``."""
  result = {}
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, b).block_until_ready()
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    calls = max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))
    best = math.inf
    for _ in range(5):
      start = time.perf_counter()
      for _ in range(calls):
        out = matmul(a, b)
      out.block_until_ready()
      best = min(best, (time.perf_counter() - start) / calls)
    result[n] = 2 * n**3 / best / 1e9
  return result


# ------------------------------------------------------------------------------ FLOPs

def _dot_flops(eqn) -> int:
  (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contracting)


def _conv_flops(eqn) -> int:
  rhs = eqn.invars[1].aval.shape
  out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
  return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // rhs[out_feature_dim]


def _sub_jaxpr(eqn):
  for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    sub = eqn.params.get(name)
    if sub is not None and (hasattr(sub, "eqns") or hasattr(sub, "jaxpr")):
      return getattr(sub, "jaxpr", sub)
  return None


def _walk(jaxpr, needs_grad: list[bool]) -> tuple[int, int, list[bool]]:
  """(forward FLOPs, backward FLOPs, outputs' needs_grad) of dots and convs in ``jaxpr``."""
  depends = {v: g for v, g in zip(jaxpr.invars, needs_grad)}
  forward = backward = 0
  for eqn in jaxpr.eqns:
    inputs = [depends.get(v, False) if not hasattr(v, "val") else False for v in eqn.invars]
    name = eqn.primitive.name
    outputs = None
    if name in ("dot_general", "conv_general_dilated"):
      flops = _dot_flops(eqn) if name == "dot_general" else _conv_flops(eqn)
      forward += flops
      backward += flops * sum(inputs[:2])  # one matmul/conv per operand that needs a gradient
    elif name == "scan":
      body = eqn.params["jaxpr"].jaxpr
      f, b, outputs = _walk(body, inputs)
      forward += f * eqn.params["length"]
      backward += b * eqn.params["length"]
    elif (sub := _sub_jaxpr(eqn)) is not None:
      f, b, outputs = _walk(sub, inputs[-len(sub.invars):] if sub.invars else [])
      forward += f
      backward += b
    elif name in ("while", "cond"):
      for sub in [eqn.params.get("body_jaxpr")] + list(eqn.params.get("branches", ())):
        if sub is not None and any(e.primitive.name in ("dot_general", "conv_general_dilated")
                                   for e in sub.jaxpr.eqns):
          raise NotImplementedError(f"dots inside {name}: count them by hand")
    if outputs is None or len(outputs) != len(eqn.outvars):
      outputs = [any(inputs)] * len(eqn.outvars)
    for var, grad in zip(eqn.outvars, outputs):
      depends[var] = grad and jnp.issubdtype(var.aval.dtype, jnp.inexact)
  return forward, backward, [depends.get(v, False) for v in jaxpr.outvars]


def analytic_flops(params, loss_of_params) -> dict:
  """Dot/conv FLOPs of one training step: forward, and backward (weight + needed input grads)."""
  closed = jax.make_jaxpr(loss_of_params)(params)
  forward, backward, _ = _walk(closed.jaxpr, [True] * len(closed.jaxpr.invars))
  return {"forward": forward, "backward": backward, "total": forward + backward}


_HLO_LINE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (\w+)\[([\d,]*)\]\S*\s+([\w\-]+)\(([^)]*)\)(.*)$")


def hlo_dot_conv_flops(hlo_text: str) -> int:
  """Sum of 2 x MACs of every dot and convolution instruction of an optimised HLO module."""
  shapes, total = {}, 0
  lines = [m for m in map(_HLO_LINE.match, hlo_text.splitlines()) if m]
  for m in lines:
    shapes[m.group(1)] = tuple(int(d) for d in m.group(3).split(",") if d)
  for m in lines:
    name, _, dims, op, operands, attrs = m.groups()
    out = math.prod(shapes[name])
    names = [o.strip().lstrip("%").split(" ")[-1].lstrip("%") for o in operands.split(",")]
    if op == "dot":
      lhs = shapes[names[0]]
      contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", attrs).group(1)
      total += 2 * out * math.prod(lhs[int(d)] for d in contracting.split(",") if d)
    elif op == "convolution":
      rhs = shapes[names[1]]
      rhs_labels = re.search(r"dim_labels=\w+_(\w+)->", attrs).group(1)
      total += 2 * out * math.prod(rhs) // rhs[rhs_labels.index("o")]
  return total


def _cost_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


# ------------------------------------------------------------------------------- data

def load_data(kind: str):
  """(images uint8 [N, H, W, 1], labels int32 [N], num_classes, source), without TensorFlow."""
  from siamese_jax.data import files
  if kind == "mnist_sample":  # the 10,000 images shipped in siamese_jax/sample_data
    images, labels = files.read_idx_pair(files.SAMPLE_DIR, *files.MNIST.parts["test"], 10)
    return images[..., None], labels.astype(np.int32), 10, f"MNIST sample in {files.SAMPLE_DIR}"
  if kind == "fashion_mnist":
    folder = next(p for p in files.known_places("fashion_mnist") if p.is_dir())
    images, labels = files.read_idx_pair(folder, *files.FASHION_MNIST.parts["train"], 10)
    return images[..., None], labels.astype(np.int32), 10, f"Fashion-MNIST train in {folder}"
  from PIL import Image
  folder = next(p for p in files.known_places("omniglot") if p.is_dir())
  drawings = files.read_omniglot_zip(folder / "images_background_small1.zip")
  size = 105 if kind == "omniglot105" else 28
  images = np.stack([np.asarray(Image.open(io.BytesIO(d.png)).convert("L").resize(
      (size, size), Image.Resampling.BOX)) for d in drawings])[..., None]
  _, labels = np.unique([d.label for d in drawings], return_inverse=True)
  return (images.astype(np.uint8), labels.astype(np.int32), int(labels.max()) + 1,
          f"Omniglot images_background_small1 at {size}x{size} in {folder}")


# ------------------------------------------------------------------------------- a case

def case_config(case: Case):
  import importlib
  config = importlib.import_module(f"experiments.{case.config}").get_config()
  for key, value in case.overrides:
    section, name = key.split(".")
    config[section][name] = value
  config.train.batch_size = case.batch_size
  if case.classes_per_batch:
    config.train.classes_per_batch = case.classes_per_batch
    config.train.samples_per_class = case.samples_per_class
  return config


def timed(fn, *args):
  start = time.perf_counter()
  result = jax.block_until_ready(fn(*args))
  return result, time.perf_counter() - start


def run_case(case: Case, repeats: int, min_seconds: float, profile_dir: str | None,
             peak_seconds: float, with_ablation: bool = False) -> dict:
  """Everything one case reports (runs in the case's own process)."""
  sizes = (512, 1024) if peak_seconds < 0.1 else (512, 1024, 2048)
  peaks = [matmul_peak(sizes, seconds=peak_seconds)]
  images, labels, num_classes, source = load_data(case.data)
  config = case_config(case)
  spec = train.loss_spec_from_config(config)
  kind = "pairs" if spec.batch_kind == "pairs" else "pk"
  batch_spec = batches.BatchSpec(kind=kind, batch_size=case.batch_size,
                               classes_per_batch=case.classes_per_batch or 8,
                               samples_per_class=case.samples_per_class or 4)
  examples = batch_spec.examples
  steps = max(len(labels) // examples, 1)
  if case.max_steps:
    steps = min(steps, case.max_steps)
  mesh = sharding.make_mesh()
  data = sharding.device_data(images, labels, num_classes, mesh)
  model = models.build_model(config.model)
  tx = train.make_optimizer(config.optimizer, 100 * steps)
  fresh_state = lambda: sharding.put_replicated(
      train.create_train_state(jax.random.key(0), model, images.shape[1:], tx), mesh)
  state = fresh_state()

  # FLOPs of one step: analytic (jaxpr) and what XLA compiled.
  batch = batches.sample_batch(jax.random.key(0), data, batch_spec)
  flops = analytic_flops(state.params, lambda p: train.compute_loss(
      p, state.apply_fn, batch, jax.random.key(1), spec)[0])

  # The fused epoch: compile, first epoch, steady state.
  unroll = train.unroll_steps(config.train.unroll, config.model.encoder)  # as main.py does
  epoch_fn = train.make_train_epoch(spec, batch_spec, steps, mesh, unroll=unroll)
  start = time.perf_counter()
  epoch = epoch_fn.lower(state, data, jax.random.key(0)).compile()
  compile_s = time.perf_counter() - start
  one_step = epoch if steps == 1 else train.make_train_epoch(spec, batch_spec, 1, mesh, unroll=unroll).lower(
      fresh_state(), data, jax.random.key(1)).compile()
  flops["hlo_dot_conv"] = hlo_dot_conv_flops(one_step.as_text())
  flops["xla_cost_analysis"] = _cost_flops(one_step)
  (state, _), first_run_s = timed(epoch, state, data, jax.random.key(1))
  calls = max(1, math.ceil(min_seconds / first_run_s))
  epoch_times = [first_run_s] if case.fused_repeats == 0 else []
  for r in range(repeats if case.fused_repeats is None else case.fused_repeats):
    start = time.perf_counter()
    for c in range(calls):
      state, metrics = epoch(state, data, jax.random.key(100 * r + c + 2))
    jax.block_until_ready(metrics)
    epoch_times.append((time.perf_counter() - start) / calls)
  if profile_dir:
    with jax.profiler.trace(os.path.join(profile_dir, f"case_{case.name}")):
      state, metrics = epoch(state, data, jax.random.key(999))
      jax.block_until_ready(metrics)

  # The same steps as a plain jit step from a Python loop.
  step = train.make_train_step(spec, mesh)

  @jax.jit
  def draw(data, key, i):
    batch_key, dropout_key = jax.random.split(jax.random.fold_in(key, i))
    return batches.sample_batch(batch_key, data, batch_spec), dropout_key

  loop, loop_steps = {}, case.loop_steps or steps
  for mode in ("async", "sync"):
    key = jax.random.key(7)
    batch, dropout_key = draw(data, key, 0)
    state, metrics = jax.block_until_ready(step(state, batch, dropout_key))  # compiles
    best = math.inf
    for _ in range(repeats if case.loop_steps is None else 1):
      start = time.perf_counter()
      for i in range(loop_steps):
        batch, dropout_key = draw(data, key, i)
        state, metrics = step(state, batch, dropout_key)
        if mode == "sync":
          float(metrics["loss"])
      jax.block_until_ready(state)
      best = min(best, (time.perf_counter() - start) / loop_steps)
    loop[mode] = best

  ablation_ms = (ablation(case, data, batch_spec, steps, repeats)
                 if with_ablation and case.data == "fashion_mnist" else None)
  if peak_seconds >= 0.1:  # not in --quick
    peaks.append(matmul_peak(sizes, seconds=peak_seconds))
  best_epoch, median_epoch = min(epoch_times), statistics.median(epoch_times)
  return {
      "case": case.name, "title": case.title, "data": source, "examples_per_step": examples,
      "steps_per_epoch": steps, "unrolled": unroll, "image_shape": list(images.shape[1:]),
      "config": json.loads(config.to_json_best_effort()),
      "compile_s": compile_s, "first_epoch_s": compile_s + first_run_s,
      "epoch_s_best": best_epoch, "epoch_s_median": median_epoch, "epoch_calls": calls,
      "examples_per_s_best": steps * examples / best_epoch,
      "examples_per_s_median": steps * examples / median_epoch,
      "jit_loop_examples_per_s": {m: examples / s for m, s in loop.items()},
      "flops_per_step": flops,
      "gflops_per_s_best": flops["total"] * steps / best_epoch / 1e9,
      "gflops_per_s_median": flops["total"] * steps / median_epoch / 1e9,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "matmul_peak_gflops": {str(n): max(p[n] for p in peaks) for n in peaks[0]},
      "ablation_ms_per_step": ablation_ms,
  }


# ----------------------------------------------------------------------------- ablation

def ablation(case: Case, data, batch_spec, steps: int, repeats: int) -> dict:
  """ms a step of the MLP case with parts of the step removed, each a scan of ``steps`` steps
  timed interleaved (best of ``repeats``): where the time of a step goes."""
  spec = train.loss_spec_from_config(case_config(case))
  rows = 2 * batch_spec.batch_size

  def state_with(dropout: bool, optimizer: str):
    config = case_config(case)
    if not dropout:  # keras_mlp's layers as the generic "mlp" encoder, without its dropout
      config.model.encoder, config.model.features = "mlp", (128, 128, 128)
      config.model.dropout_rates, config.model.final_activation = (0.0, 0.0, 0.0), True
    config.optimizer.name = optimizer
    model = models.build_model(config.model)
    tx = train.make_optimizer(config.optimizer, 100 * steps)
    return train.create_train_state(jax.random.key(0), model, (28, 28, 1), tx)

  pool = jax.jit(jax.vmap(lambda k: batches.sample_batch(k, data, batch_spec)))(
      jax.random.split(jax.random.key(1), 4))

  def pooled_epoch(state, pool):
    def body(state, i):
      batch = jax.tree.map(lambda x: x[i % 4], pool)
      return train.train_step(state, batch, jax.random.fold_in(jax.random.key(0), i), spec)
    return jax.lax.scan(body, state, jnp.arange(steps))

  def sampling_only(data):
    def body(total, i):
      batch = batches.sample_batch(jax.random.fold_in(jax.random.key(0), i), data, batch_spec)
      return total + sum(jnp.sum(scoring.to_float_images(batch[k])) for k in ("x_a", "x_b")), None
    return jax.lax.scan(body, 0.0, jnp.arange(steps))[0]

  def dropout_masks_only(total):
    def body(total, i):
      keep = jax.random.bernoulli(jax.random.fold_in(jax.random.key(0), i), 0.9, (2, rows, 128))
      return total + jnp.sum(keep), None
    return jax.lax.scan(body, total, jnp.arange(steps))[0]

  def matmuls_only(weights, x0):
    w1, w2, w3 = weights
    def body(carry, i):  # forward, weight gradients, input gradients of layers 2 and 3
      x = x0 + carry[0, 0]
      h1 = jax.nn.relu(x @ w1)
      h2 = jax.nn.relu(h1 @ w2)
      g3 = h2 @ w3
      g2 = (g3 @ w3.T) * (h2 > 0)
      g1 = (g2 @ w2.T) * (h1 > 0)
      grads = (x.T @ g1, h1.T @ g2, h2.T @ g3)
      return carry + 1e-9 * sum(g[:1, :1] for g in grads), None
    return jax.lax.scan(body, jnp.zeros((1, 1)), jnp.arange(steps))[0]

  key = jax.random.key(3)
  weights = tuple(jax.random.normal(key, shape) * 0.05 for shape in ((784, 128), (128, 128),
                                                                       (128, 128)))
  def unrolled_dropout_epoch(state, data, key):  # train.make_train_epoch but for the dropout key
    def body(state, i):
      batch_key, dropout_key = jax.random.split(jax.random.fold_in(key, i))
      dropout_key = random_bits.unrolled(dropout_key)  # the same bits, the hash unrolled
      return train.train_step(state, batches.sample_batch(batch_key, data, batch_spec),
                              dropout_key, spec)
    return jax.lax.scan(body, state, jnp.arange(steps))

  epoch = lambda: train.make_train_epoch(spec, batch_spec, steps, sharding.make_mesh())
  variants = {
      "as configured (dropout, RMSprop)": (epoch(), (state_with(True, "rmsprop"), data, key)),
      "dropout bits by an unrolled threefry": (jax.jit(unrolled_dropout_epoch),
                                               (state_with(True, "rmsprop"), data, key)),
      "no dropout": (epoch(), (state_with(False, "rmsprop"), data, key)),
      "no dropout, SGD": (epoch(), (state_with(False, "sgd"), data, key)),
      "no dropout, SGD, 4 batches drawn before": (jax.jit(pooled_epoch),
                                                  (state_with(False, "sgd"), pool)),
      "the 8 matmuls + relu alone": (jax.jit(matmuls_only),
                                     (weights, jax.random.uniform(key, (rows, 784)))),
      "dropout masks alone": (jax.jit(dropout_masks_only), (jnp.int32(0),)),
      "pair sampling + gather alone": (jax.jit(sampling_only), (data,)),
  }
  compiled = {name: fn.lower(*args).compile() for name, (fn, args) in variants.items()}
  same = [compiled[name](*jax.tree.map(jnp.copy, variants[name][1]))[1]["loss"]
          for name in list(variants)[:2]]
  if not np.array_equal(np.asarray(same[0]), np.asarray(same[1])):
    raise AssertionError("the unrolled threefry must give the same dropout masks, hence losses")
  best = dict.fromkeys(variants, math.inf)
  for _ in range(repeats):
    for name, (_, args) in variants.items():
      args = jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, args)
      _, seconds = timed(compiled[name], *args)  # the epochs donate their state: copies
      best[name] = min(best[name], seconds)
  return {name: 1e3 * seconds / steps for name, seconds in best.items()}


# --------------------------------------------------------------------------------- main

def machine() -> dict:
  import flax
  import optax
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), platform.processor())
  return {"cpu": cpu, "cores": os.cpu_count(), "devices": [str(d) for d in jax.devices()],
          "backend": jax.default_backend(), "python": platform.python_version(),
          "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
          "numpy": np.__version__, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
          "load_average_at_start": os.getloadavg()}


def print_table(results: list[dict], peak: float) -> None:
  print(f"\nmatmul peak (float32, best of the run): {peak:.0f} GFLOP/s")
  head = (f"{'case':<44}{'compile':>8}{'1st ep':>8}{'steady ex/s':>13}{'loop async':>11}"
          f"{'loop sync':>10}{'GFLOP/s':>9}{'% peak':>8}{'RSS MB':>8}")
  print(head)
  print("-" * len(head))
  rate = lambda x, width: f"{x:>{width}.0f}" if x >= 100 else f"{x:>{width}.2f}"
  for r in results:
    loop = r["jit_loop_examples_per_s"]
    print(f"{r['case'] + ' ' + r['title']:<44}{r['compile_s']:>7.1f}s{r['first_epoch_s']:>7.1f}s"
          f"{rate(r['examples_per_s_best'], 13)}{rate(loop['async'], 11)}{rate(loop['sync'], 10)}"
          f"{r['gflops_per_s_best']:>9.1f}"
          f"{100 * r['gflops_per_s_best'] / peak:>7.1f}%{r['peak_rss_mb']:>8.0f}")
  print("\nFLOPs per step (dot + conv): analytic (forward + backward) | XLA's compiled dots and "
        "convs | XLA cost_analysis (all ops)")
  for r in results:
    f = r["flops_per_step"]
    print(f"  {r['case']}: {f['forward'] / 1e6:10.1f} + {f['backward'] / 1e6:10.1f} = "
          f"{f['total'] / 1e6:10.1f} MFLOP | {f['hlo_dot_conv'] / 1e6:10.1f} | "
          f"{f['xla_cost_analysis'] / 1e6:10.1f}   ({r['steps_per_epoch']} steps of "
          f"{r['examples_per_step']}; median {r['examples_per_s_median']:.0f} ex/s)")
  for r in results:
    if r.get("ablation_ms_per_step"):
      total = r["flops_per_step"]["total"]
      print(f"\nablation, case {r['case']} ({r['title']}): ms a step, dot GFLOP/s, % of peak")
      for name, ms in r["ablation_ms_per_step"].items():
        with_dots = not name.endswith("alone") or "matmul" in name
        rate = f"{total / ms / 1e6:7.1f} {100 * total / ms / 1e6 / peak:6.1f}%" if with_dots else ""
        print(f"  {name:<42}{ms:8.3f}  {rate}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(__doc__.split("\n")[2:]))
  parser.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
  parser.add_argument("--repeats", type=int, default=3, help="steady-state epochs timed")
  parser.add_argument("--min_seconds", type=float, default=1.0,
                      help="each timed repeat calls the epoch until it lasts this long")
  parser.add_argument("--quick", action="store_true",
                      help="shortened epochs, Koch at batch 8, one repeat: a smoke test")
  parser.add_argument("--peak_seconds", type=float, default=0.3,
                      help="length of each timed batch of matmuls when measuring the peak")
  parser.add_argument("--ablation", action="store_true",
                      help="cases a, b: also time the step with dropout, RMSprop, sampling removed")
  parser.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace per case")
  result_files.add_smoke_and_out(parser, "train_throughput.json", "cases a and d, 1 step on the embedded MNIST sample")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.child:  # one case in this process: print its result as JSON
    name, mode = args.child.split(":")
    case = CASES[name]
    if mode in ("quick", "smoke"):
      case = dataclasses.replace(case, **{"quick": QUICK, "smoke": SMOKE}[mode][name])
    print("RESULT " + json.dumps(run_case(case, args.repeats, args.min_seconds, args.profile,
                                                args.peak_seconds, args.ablation)))
    return

  if args.quick or args.smoke:
    args.repeats, args.min_seconds, args.peak_seconds = 1, 0.0, 0.05
  if args.smoke:
    args.cases, args.peak_seconds = SMOKE_CASES, 0.01
  mode = "smoke" if args.smoke else "quick" if args.quick else "full"
  out = result_files.results_path(args, "train_throughput.json")
  results = []
  for name in args.cases.split(","):
    command = [sys.executable, __file__, f"--child={name}:{mode}",
               f"--repeats={args.repeats}", f"--min_seconds={args.min_seconds}",
               f"--peak_seconds={args.peak_seconds}"]
    if args.profile:
      command.append(f"--profile={args.profile}")
    if args.ablation:
      command.append("--ablation")
    print(f"case {name}: {CASES[name].title} ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if done.returncode or line is None:
      sys.exit(f"case {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    results.append(json.loads(line[len("RESULT "):]))
  peak = max(v for r in results for v in r["matmul_peak_gflops"].values())
  for r in results:
    r["fraction_of_peak_best"] = r["gflops_per_s_best"] / peak
    r["fraction_of_peak_median"] = r["gflops_per_s_median"] / peak
  print_table(results, peak)
  report = {"benchmark": "train_throughput", "command": " ".join(sys.argv),
            "quick": args.quick, "smoke": args.smoke, "machine": machine(),
            "matmul_peak_gflops": peak, "load_average_at_end": os.getloadavg(), "cases": results}
  if out:
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
  main()
