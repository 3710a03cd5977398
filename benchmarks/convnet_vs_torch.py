"""The Omniglot default's training step (or ResNet-18 at 64 x 64) in siamese_jax and in a plain
PyTorch loop, side by side: alternated rounds of one process per arm on the same machine.

    .venv/bin/python benchmarks/convnet_vs_torch.py --peer-python /work/refenv/bin/python
    .venv/bin/python benchmarks/convnet_vs_torch.py --model resnet18 --peer-python ...
    .venv/bin/python benchmarks/convnet_vs_torch.py --smoke    # tiny sizes: that it runs

Arms (each its own process, so peak RSS is its own): siamese_jax with ``model.conv_impl``
"matmul" (what "auto" picks on CPU: ``siamese_jax.conv``) and "xla" (XLA's convolutions, the
steps unrolled as ``train.unroll="auto"`` then decides), each running ``train.make_train_epoch``
as ``main.py`` does (calls of ``train.steps_per_call`` steps on device-resident random uint8
images: 2,720 as Omniglot small1, 976 classes as its rotated and mirrored characters), and
``peers/torch_convnet.py`` (the same model and step: warp by ``grid_sample``, convnet4, CosFace,
Adam; 2 threads). The arms' order rotates every round. Each arm prints its first call's seconds
(compile and one call; siamese_jax also its init program's and the ``compile()`` alone), ms per
step and images per second over ``--calls`` calls after one untimed, and its peak RSS; at the end
the median per arm, each round's siamese_jax / PyTorch images/s ratio and the 1-minute load
average when each arm started (the machine is shared: compare the ratios of a round).
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

PEER = HERE / "peers" / "torch_convnet.py"


def configure(model: str, impl: str, smoke: bool):
  """(config, image shape (H, W, C)) of the benchmarked step: the Omniglot default with 976
  classes, or ResNet-18 at 64 x 64 x 3 without the warp; tiny widths with ``smoke``."""
  from experiments import omniglot  # noqa: PLC0415  (the driver itself needs no JAX)

  config = omniglot.get_config()
  config.model.update(num_classes=976, conv_impl=impl)
  shape = (28, 28, 1)
  if model == "resnet18":
    config.model.update(encoder="resnet18", filters=64, norm_groups=8, embedding_dim=128)
    config.train.update(augment=False, augment_elastic=0.0)
    shape = (64, 64, 3)
  if smoke:
    config.model.update(filters=4, norm_groups=4, filter_growth=1, embedding_dim=8)
    config.train.update(batch_size=8, steps_per_call=2)
  return config, shape


def training_call(model: str, impl: str, smoke: bool) -> dict:
  """The benchmarked program, built as ``main.py`` builds it: {"epoch": the call of
  ``train.make_train_epoch``, "state" (initialised), "data" (device-resident random images),
  "batch_spec", "steps" per call, "unrolled", "init_s": seconds to build and initialise}."""
  import jax  # noqa: PLC0415  (the driver itself needs no JAX)

  from noise_images import noise_training  # noqa: PLC0415
  from siamese_jax import train  # noqa: PLC0415

  config, shape = configure(model, impl, smoke)
  start = time.perf_counter()
  mesh, data, spec, batch_spec, fresh = noise_training(config, 136, 20, shape)
  state = jax.block_until_ready(fresh())
  init_s = time.perf_counter() - start
  steps = config.train.steps_per_call
  unroll = train.unroll_steps(config.train.unroll, config.model.encoder, conv_impl=impl)
  return {"epoch": train.make_train_epoch(spec, batch_spec, steps, mesh, unroll=unroll),
          "state": state, "data": data, "batch_spec": batch_spec, "steps": steps,
          "unrolled": unroll, "init_s": init_s}


def jax_arm(model: str, impl: str, calls: int, smoke: bool) -> dict:
  """One siamese_jax arm in this process: its figures as a dict."""
  import jax  # noqa: PLC0415  (the driver itself needs no JAX)

  call = training_call(model, impl, smoke)
  epoch, state, data, steps = call["epoch"], call["state"], call["data"], call["steps"]
  batch_spec, unroll, init_s = call["batch_spec"], call["unrolled"], call["init_s"]
  key = jax.random.key(1)
  start = time.perf_counter()
  compiled = epoch.lower(state, data, key).compile()
  compile_s = time.perf_counter() - start
  state, _ = jax.block_until_ready(compiled(state, data, key))
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  for i in range(calls):
    state, _ = compiled(state, data, jax.random.fold_in(key, i))
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  return {"framework": f"siamese_jax (jax {jax.__version__})", "conv_impl": impl,
          "unrolled": unroll, "steps_per_call": steps, "batch": batch_spec.examples,
          "init_s": round(init_s, 2), "compile_s": round(compile_s, 2),
          "first_call_s": round(first_s, 2),
          "ms_per_step": round(seconds / (calls * steps) * 1e3, 2),
          "images_per_s": round(batch_spec.examples * calls * steps / seconds, 1),
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def run_arm(arm: str, args) -> dict:
  """One arm as a subprocess: its JSON line, with the load average when it started."""
  load = os.getloadavg()[0]
  steps = 2 if args.smoke else 8
  if arm == "torch":
    command = [args.peer_python, str(PEER), "--model", args.model, "--threads", "2",
               "--steps", str(args.calls * steps), "--warmup", str(steps)]
    command += ["--smoke"] if args.smoke else []
  else:
    command = [sys.executable, __file__, "--arm", arm, "--model", args.model,
               "--calls", str(args.calls)] + (["--smoke"] if args.smoke else [])
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    raise SystemExit(f"{arm} failed:\n{done.stderr[-3000:]}")
  return {"arm": arm, "load_1min": round(load, 2), **json.loads(done.stdout.strip().splitlines()[-1])}


def default_peer_python() -> str | None:
  """This interpreter if it imports torch, else benchmarks/peers/.venv's if it does."""
  for python in (sys.executable, HERE / "peers" / ".venv" / "bin" / "python"):
    if pathlib.Path(python).exists() and subprocess.run(
        [str(python), "-c", "import torch"], capture_output=True).returncode == 0:
      return str(python)
  return None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("convnet4", "resnet18"), default="convnet4")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--calls", type=int, default=4, help="timed calls of 8 steps per arm")
  parser.add_argument("--arms", default="matmul,xla,torch",
                      help="comma-separated: matmul, xla (siamese_jax's conv_impl), torch")
  parser.add_argument("--peer-python", default=None,
                      help="an interpreter with torch (default: this one or peers/.venv's)")
  parser.add_argument("--out", default=None, help="write every arm's figures here (JSON)")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: that it runs")
  parser.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # one arm, in-process
  args = parser.parse_args()
  if args.arm:
    print(json.dumps(jax_arm(args.model, args.arm, args.calls, args.smoke)))
    return
  if args.smoke:
    args.rounds, args.calls = 1, 1
  arms = args.arms.split(",")
  if "torch" in arms:
    args.peer_python = args.peer_python or default_peer_python()
    if args.peer_python is None:
      raise SystemExit("no interpreter with torch: pass --peer-python (e.g. a virtualenv with "
                       "CPU torch) or drop torch from --arms")
  results = []
  for round_ in range(args.rounds):
    order = arms[round_ % len(arms):] + arms[:round_ % len(arms)]
    for arm in order:
      result = {"round": round_, **run_arm(arm, args)}
      results.append(result)
      print(f"round {round_} {arm:>6}: {result['ms_per_step']:8.1f} ms/step "
            f"{result['images_per_s']:8.1f} images/s  first call {result.get('first_call_s', result.get('first_step_s'))} s"
            f"  compile {result.get('compile_s', '-')} s  init {result.get('init_s', '-')} s  "
            f"peak RSS {result['peak_rss_mib']} MiB  load {result['load_1min']}", flush=True)
  print(f"\n{args.model}: median images/s per arm")
  median = {arm: statistics.median(r["images_per_s"] for r in results if r["arm"] == arm)
            for arm in arms}
  for arm in arms:
    print(f"  {arm:>6}: {median[arm]:.1f}")
  if "torch" in arms:
    for arm in (a for a in arms if a != "torch"):
      ratios = [next(r for r in results if r["round"] == k and r["arm"] == arm)["images_per_s"]
                / next(r for r in results if r["round"] == k and r["arm"] == "torch")["images_per_s"]
                for k in range(args.rounds)]
      print(f"  {arm} / torch images/s, per round: " + ", ".join(f"{x:.2f}" for x in ratios))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
  main()
