"""Where a training step's time goes on this machine: the Omniglot default's call (or ResNet-18 at
64 x 64) profiled op by op, grouped by what each op does, beside the machine's matrix-product peak.

    .venv/bin/python benchmarks/profile_step.py                  # convnet4, conv_impl=matmul
    .venv/bin/python benchmarks/profile_step.py --model resnet18 --conv_impl xla
    .venv/bin/python benchmarks/profile_step.py --smoke          # tiny sizes: that it runs

It builds the call as ``benchmarks/convnet_vs_torch.py`` does (``train.make_train_epoch`` on
device-resident random images), times ``--calls`` calls (best per-step ms of ``--repeats``), then
runs two calls under ``jax.profiler.trace`` and sums the durations of every XLA op (thunk) by the
``op_name`` its HLO instruction carries:

- **matmul**: dot products (the convolutions as patches x kernel, the Dense layers, the
  classifier), with the FLOPs of the step's dot and convolution instructions (``hlo_dot_conv_flops``
  of train_throughput.py) and the GFLOP/s they reach;
- **patches**: building and folding back the patches (pad, slice, concatenate of a convolution);
  **convolution** where XLA's own convolution runs (``conv_impl=xla``);
- **normalization**, **pool** (with the tie counts of its gradient), **bias and activation**
  (the convolutions' bias adds and their gradients, relu), **augment** (the random views), **sampling**
  (drawing and gathering the batch), **loss and optimizer**, **other**.

It prints the table, the float32 matmul peak of ``a @ b`` (n = 1024, 2048) measured in the same
process, and the floor it implies: the step's dot FLOPs at that peak plus the time of every
non-matmul op as measured. ``--out`` writes the figures as JSON.
"""

import argparse
import collections
import glob
import json
import pathlib
import re
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import jax  # noqa: E402

from result_files import add_smoke_and_out  # noqa: E402

# (category, pattern on the op's op_name metadata), first match wins; the op's HLO opcode decides
# "matmul" (dot) and "convolution" before these.
CATEGORIES = (
    ("augment", r"map_coordinates|_resize|transform_view|random_flip|random_resized_crop"),
    ("sampling", r"_randint|_uniform|sample_|gather_images|threefry|random_bits|/gather$"),
    ("normalization", r"GroupNorm|BatchNorm|LayerNorm|_norm/|standardi[sz]e|input_normalization"),
    ("pool", r"reduce_window|select_and_scatter|max_pool|avg_pool|"
             r"encoder/(reduce_max|reduce_sum|convert_element_type|eq|div|(jit\(_pad\)/)?pad)$"),
    ("patches", r"(Conv_?\d*|_conv)/.*(pad|slice|concatenate|reshape)|conv_as_matmul"),
    ("bias and activation", r"relu|gelu|select_n|/max$|Conv_?\d*/(add|reduce_sum)$"),
    ("loss and optimizer", r"adam|optax|classifier|loss|log_softmax|logsumexp|integer_pow|"
                           r"sqrt|normalize|Dense|closed_call/(add|mul|sub|div|max|select_n)$"),
)


def build_call(model: str, conv_impl: str, smoke: bool):
  """(compiled call, state, data, key, steps, images per step) of the benchmark's program."""
  from convnet_vs_torch import training_call  # noqa: PLC0415

  call = training_call(model, conv_impl, smoke)
  key = jax.random.key(1)
  compiled = call["epoch"].lower(call["state"], call["data"], key).compile()
  return (compiled, call["state"], call["data"], key, call["steps"],
          call["batch_spec"].examples)


def op_categories(hlo_text: str) -> dict[str, str]:
  """{instruction name: category} for every instruction of an optimised HLO module."""
  found = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ (\w[\w\-]*)\(", line)
    if not match:
      continue
    name, opcode = match.groups()
    op_name = re.search(r'op_name="([^"]+)"', line)
    op_name = op_name.group(1) if op_name else ""
    if opcode == "dot" or "__ynn_fusion" in line and "dot_general" in op_name:
      found[name] = "matmul"
    elif opcode == "convolution" or op_name.endswith("conv_general_dilated"):
      found[name] = "convolution"
    else:
      found[name] = next((category for category, pattern in CATEGORIES
                          if re.search(pattern, op_name)), "other")
  return found


def profile(compiled, state, data, key, steps: int) -> dict[str, float]:
  """Milliseconds per step of the ops of two traced calls, by op name (thunks of XLA's threads)."""
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for i in range(2):
        state, _ = compiled(state, data, jax.random.fold_in(key, 100 + i))
      jax.block_until_ready(state)
    trace = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
    profile_data = jax.profiler.ProfileData.from_file(trace)
  per_op = collections.Counter()
  for plane in profile_data.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLA"):
        continue
      for event in line.events:
        if not event.name.startswith(("ThunkExecutor", "SlinkyThreadPool", "Threadpool", "end:",
                                      "while")):
          per_op[event.name] += event.duration_ns / 1e6 / (2 * steps)
  return dict(per_op)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", choices=("convnet4", "resnet18"), default="convnet4")
  parser.add_argument("--conv_impl", choices=("matmul", "xla"), default="matmul")
  parser.add_argument("--calls", type=int, default=4, help="timed calls per repeat")
  parser.add_argument("--repeats", type=int, default=3)
  add_smoke_and_out(parser, "profile_step.json", "tiny model, one timed call")
  args = parser.parse_args()
  if args.smoke:
    args.calls, args.repeats = 1, 1
  from train_throughput import hlo_dot_conv_flops, matmul_peak  # noqa: PLC0415

  compiled, state, data, key, steps, images = build_call(args.model, args.conv_impl, args.smoke)
  state, _ = jax.block_until_ready(compiled(state, data, key))
  best = float("inf")
  for repeat in range(args.repeats):
    start = time.perf_counter()
    for i in range(args.calls):
      state, _ = compiled(state, data, jax.random.fold_in(key, 10 * repeat + i))
    jax.block_until_ready(state)
    best = min(best, (time.perf_counter() - start) / (args.calls * steps) * 1e3)
  hlo = compiled.as_text()
  categories = op_categories(hlo)
  per_category = collections.Counter()
  for op, ms in profile(compiled, state, data, key, steps).items():
    per_category[categories.get(op, "other")] += ms
  flops = hlo_dot_conv_flops(hlo)  # the loop body's instructions: one step's
  peak = max(matmul_peak((256,) if args.smoke else (1024, 2048)).values())
  matmul_ms = per_category["matmul"] + per_category["convolution"]
  rest_ms = sum(per_category.values()) - matmul_ms
  floor_ms = flops / peak / 1e6 + rest_ms
  print(f"{args.model}, conv_impl={args.conv_impl}, batch {images}, {steps} steps a call: "
        f"{best:.1f} ms/step (best of {args.repeats} x {args.calls} calls), "
        f"{images / best * 1e3:.0f} images/s")
  print(f"{'category':<20} {'ms/step':>8} {'share':>6}")
  total = sum(per_category.values())
  for category, ms in per_category.most_common():
    print(f"{category:<20} {ms:8.2f} {ms / total:6.1%}")
  print(f"{'sum of ops':<20} {total:8.2f}")
  print(f"dot/conv FLOPs per step {flops / 1e9:.2f} G; matmul ops reach "
        f"{flops / matmul_ms / 1e6 if matmul_ms else float('nan'):.0f} GFLOP/s; the float32 "
        f"matmul peak here {peak:.0f} GFLOP/s")
  print(f"floor (dot FLOPs at the peak + every other op as measured): {floor_ms:.1f} ms/step")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps({
        "model": args.model, "conv_impl": args.conv_impl, "images_per_step": images,
        "ms_per_step": round(best, 2), "per_category_ms": {k: round(v, 3) for k, v in
                                                           per_category.items()},
        "dot_flops_per_step": flops, "matmul_peak_gflops": round(peak, 1),
        "floor_ms": round(floor_ms, 2), "jax": jax.__version__}, indent=1) + "\n")


if __name__ == "__main__":
  main()
