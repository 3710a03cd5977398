"""Pretrained backbones: forward and forward+backward images/s of siamese_jax.pretrained against
timm's PyTorch networks on the same machine, and each side's peak memory.

    .venv/bin/python benchmarks/pretrained_speed.py --peer-python /path/to/torch/venv/bin/python
    .venv/bin/python benchmarks/pretrained_speed.py                 # siamese_jax only
    .venv/bin/python benchmarks/pretrained_speed.py --smoke         # reduced networks, 32 px

For each architecture (resnet50, vit_small_patch16_224) and round, one fresh process per side
(this script as ``--worker jax``, and as ``--worker torch`` under the peer's Python with timm),
alternating jax, torch, jax, torch, ... so a change of load on a shared machine falls on both.
A worker builds the randomly initialised network, runs one warm-up call of each function (JAX:
the compilation), then times ``--repeats`` calls of a batch of ``--batch`` random 224 px images:
``forward`` (the pre-logits features; torch in eval mode under no_grad) and ``forward+backward``
(the gradient of the features' sum with respect to every parameter; BatchNorm in inference mode
on both sides, as siamese_jax's frozen BatchNorm). Peak memory: the worker's ru_maxrss. Printed
as the median over rounds; ``--out FILE`` writes the rounds as JSON.
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

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCHS = ("resnet50", "vit_small_patch16_224")
# --smoke: reduced networks (the same code) at 32 px.
SMOKE_FIELDS = {"resnet50": {"stage_sizes": (1, 1, 1, 1), "widths": (8, 16, 32, 64)},
                "vit_small_patch16_224": {"embed_dim": 32, "depth": 2, "num_heads": 2}}


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, repeats: int) -> float:
  """Seconds per call of ``fn`` (after one warm-up call)."""
  fn()
  start = time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.perf_counter() - start) / repeats


def worker_jax(arch: str, batch: int, size: int, repeats: int, smoke: bool) -> dict:
  sys.path.insert(0, str(REPO_ROOT))
  import jax
  import jax.numpy as jnp

  from siamese_jax import pretrained
  module = pretrained.build(arch, **(SMOKE_FIELDS[arch] if smoke else {}))
  x = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
  params = jax.jit(module.init)(jax.random.key(1), x)
  forward = jax.jit(module.apply)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply(p, x))))
  fwd = _time(lambda: forward(params, x).block_until_ready(), repeats)
  bwd = _time(lambda: jax.block_until_ready(grad(params, x)), repeats)
  return {"forward": batch / fwd, "forward+backward": batch / bwd, "peak_mib": _peak_mib()}


def worker_torch(arch: str, batch: int, size: int, repeats: int, smoke: bool) -> dict:
  import timm
  import torch
  if smoke and arch == "resnet50":
    from timm.models.resnet import Bottleneck, ResNet
    model = ResNet(Bottleneck, [1, 1, 1, 1], channels=(8, 16, 32, 64))
  elif smoke:
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=size, embed_dim=32, depth=2, num_heads=2)
  else:
    model = timm.create_model(arch, pretrained=False)
  model.eval()
  x = torch.randn(batch, 3, size, size)
  features = lambda: model.forward_head(model.forward_features(x), pre_logits=True)

  def forward():
    with torch.no_grad():
      features()

  def backward():
    model.zero_grad(set_to_none=True)
    features().sum().backward()

  fwd = _time(forward, repeats)
  bwd = _time(backward, repeats)
  return {"forward": batch / fwd, "forward+backward": batch / bwd, "peak_mib": _peak_mib(),
          "threads": torch.get_num_threads()}


def _run(python: str, side: str, arch: str, args) -> dict:
  command = [python, str(pathlib.Path(__file__).resolve()), "--worker", side, "--arch", arch,
             "--batch", str(args.batch), "--size", str(args.size), "--repeats", str(args.repeats)]
  command += ["--smoke"] if args.smoke else []
  done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT,
                        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  if done.returncode:
    raise SystemExit(f"{side} worker failed on {arch}: {done.stderr.strip().splitlines()[-1]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--smoke", action="store_true", help="reduced networks at 32 px, 1 round")
  parser.add_argument("--peer-python", help="a Python with torch and timm (the timm side)")
  parser.add_argument("--archs", default=",".join(ARCHS))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--out", help="write the rounds here as JSON")
  parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  parser.add_argument("--arch", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.smoke:
    args.size, args.batch, args.repeats, args.rounds = 32, 2, 1, 1
  if args.worker:
    work = worker_jax if args.worker == "jax" else worker_torch
    print(json.dumps(work(args.arch, args.batch, args.size, args.repeats, args.smoke)))
    return
  sides = [("siamese_jax", sys.executable, "jax")]
  if args.peer_python:
    sides.append(("timm", args.peer_python, "torch"))
  rounds = {arch: {name: [] for name, _, _ in sides} for arch in args.archs.split(",")}
  for _ in range(args.rounds):
    for arch in rounds:
      for name, python, side in sides:
        rounds[arch][name].append(_run(python, side, arch, args))
  print(f"images/s at {args.size} px, batch {args.batch}, median of {args.rounds} round(s) of "
        f"{args.repeats} calls{' (smoke: reduced networks)' if args.smoke else ''}; "
        f"{os.cpu_count()} CPUs")
  for arch, by_side in rounds.items():
    for name, results in by_side.items():
      med = lambda key: statistics.median(r[key] for r in results)
      peak = max(r["peak_mib"] for r in results)
      print(f"{arch:24s} {name:12s} fwd {med('forward'):8.2f} img/s   fwd+bwd "
            f"{med('forward+backward'):8.2f} img/s   peak RSS {peak:7.0f} MiB")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(
        {"size": args.size, "batch": args.batch, "repeats": args.repeats, "rounds": rounds},
        indent=1) + "\n")


if __name__ == "__main__":
  main()
