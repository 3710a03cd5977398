"""The accelerator run of issue 30, as one command (``benchmarks/device/run.sh`` installs the
carried wheels, then calls this): each part in its own process with its own time budget, its
results as JSON in the output folder, a short table at the end.

    python benchmarks/device/run.py [--dry-run] [--out DIR] [--omniglot-dir DIR] [--budget S]

Parts, in order (PARTS): peak (matmul and copy ceilings), throughput (MLP, convnet4, ResNet-18
in float32 and bfloat16 at several batch sizes), koch (Koch et al.'s 105 x 105 convnet),
pretrained (experiments/cub200.py's ResNet-50 and a ViT-S/16 tower at 224 x 224), omniglot
(the Omniglot default trained to the end), tests (the tests that touch devices and sharding).
A part that fails, or runs past its budget, is recorded as such and the next one runs; time a
part leaves unused goes to the next. ``--dry-run``: the same parts at tiny sizes on the CPU
backend, with the packages that the device image lacks made unimportable (``device_image``).

Output (at most 8 files, as the device tool brings back): summary.json, one <part>.json per
part and log.txt (every part's output; run.sh writes the wheel install into it first).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import NamedTuple

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
DEFAULT_OUT = HERE / "out"
DEFAULT_OMNIGLOT = REPO_ROOT / ".device_data" / "omniglot"
GRACE_S = 10  # past its budget a part may still write its JSON before it is killed


class Part(NamedTuple):
  module: str  # benchmarks/device/<module>.py, whose run(ctx) the part calls
  budget_s: float  # on the device; unused seconds go to the next part
  dry_run_budget_s: float  # on 2 CPU cores


PARTS = {
    "peak": Part("matmul_peak", 20, 60),
    "throughput": Part("throughput", 125, 240),
    "koch": Part("throughput", 40, 90),
    "pretrained": Part("throughput", 55, 90),
    "omniglot": Part("omniglot_default", 150, 420),
    "tests": Part("device_tests", 60, 180),
}
TOTAL_BUDGET_S = sum(p.budget_s for p in PARTS.values())  # 450 s: run.sh's 8 minutes less margin
DRY_RUN_BUDGET_S = sum(p.dry_run_budget_s for p in PARTS.values())
THROUGHPUT_CASES = {"throughput": ("mlp", "convnet4", "resnet18"), "koch": ("koch",),
                    "pretrained": ("resnet50", "vit_small")}


def write_json(path: pathlib.Path, value: dict) -> None:
  """Writes ``value`` to ``path`` atomically (a reader never sees half a file)."""
  partial = path.with_suffix(".partial")
  partial.write_text(json.dumps(value, indent=1, default=str))
  partial.replace(path)


def read_json(path: pathlib.Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


class PartContext(NamedTuple):
  """What a part's run(ctx) gets: its name, the output folder, the dry-run flag, its deadline
  (time.monotonic()) and the Omniglot zips' folder; ``write(result)`` saves its JSON."""
  name: str
  out: pathlib.Path
  dry_run: bool
  deadline: float
  omniglot_dir: pathlib.Path

  def write(self, result: dict) -> None:
    write_json(self.out / f"{self.name}.json", {"part": self.name, **result})


# ------------------------------------------------------------------------------ one part

def machine() -> dict:
  """The backend, devices and package versions this process sees (imports jax)."""
  import importlib.metadata
  import jax
  versions = {}
  for name in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "chex",
               "numpy", "clu", "ml_collections", "tensorflow", "tensorflow-datasets"):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "device_kind": jax.devices()[0].device_kind, "python": sys.version.split()[0],
          "versions": versions, "nvidia_smi": nvidia_smi()}


def nvidia_smi() -> str | None:
  """The GPU's name, driver, clocks, power and memory as nvidia-smi reads them (None without
  one): the card's state is measured as found, never changed."""
  query = ("name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,"
           "temperature.gpu,memory.used,memory.total")
  try:
    return subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
                          capture_output=True, text=True, timeout=20).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def run_throughput(ctx: PartContext) -> None:
  import throughput
  peak = (read_json(ctx.out / "peak.json") or {}).get("matmul_tflops")
  rows = []

  def record(row):
    rows.append(row)
    ctx.write({"status": "running", "matmul_peak_tflops": peak, "rows": rows})

  ctx.write({"status": "running", "matmul_peak_tflops": peak, "rows": rows})
  throughput.run_cases(THROUGHPUT_CASES[ctx.name], ctx.deadline, ctx.dry_run, peak, record)
  failed = [r for r in rows if "error" in r]
  ctx.write({"status": "ok" if not failed else "partial" if len(failed) < len(rows) else "error",
             "matmul_peak_tflops": peak, "rows": rows, "notes": [
                 "bfloat16: params and images cast to bfloat16 inside the model call, outputs "
                 "back to float32 (benchmarks/device/throughput.py)",
                 "pct_of_matmul_peak: cost-analysis FLOPs/s over the measured matmul rate of the "
                 "same dtype at JAX's default precision"]})


def run_peak(ctx: PartContext) -> None:
  import matmul_peak
  found = machine()
  ctx.write({"status": "running", "machine": found})
  ctx.write({"status": "ok", "machine": found, **matmul_peak.measure(ctx.dry_run)})


def run_part(name: str, ctx: PartContext) -> None:
  """Runs part ``name`` in this process (the orchestrator starts one process per part)."""
  if name == "peak":
    run_peak(ctx)
  elif name in THROUGHPUT_CASES:
    run_throughput(ctx)
  else:
    __import__(PARTS[name].module).run(ctx)


# ------------------------------------------------------------------------- orchestration

def workdir_progress(result: dict) -> dict:
  """For a part stopped early that had named its run's ``workdir``: the epochs it finished."""
  metrics = pathlib.Path(result.get("workdir", "")) / "metrics.jsonl"
  if not result.get("workdir") or not metrics.is_file():
    return {}
  lines = metrics.read_text().splitlines()
  return {"epochs_done": len(lines), "last_epoch": json.loads(lines[-1]) if lines else None}


def launch(name: str, budget: float, args, log) -> dict:
  """Runs part ``name`` in a child process for at most ``budget`` (+ GRACE_S) seconds and returns
  its JSON, completed with how it ended."""
  path = args.out / f"{name}.json"
  path.unlink(missing_ok=True)
  command = [sys.executable, "-u", str(pathlib.Path(__file__)), "--part", name, "--out",
             str(args.out), "--omniglot-dir", str(args.omniglot_dir), "--budget", str(budget)]
  if args.dry_run:
    command.append("--dry-run")
  log.write(f"\n===== part {name}: budget {budget:.0f} s =====\n")
  log.flush()
  start = time.monotonic()
  try:
    child = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                           timeout=budget + GRACE_S)
    ended = None if child.returncode == 0 else f"exited with code {child.returncode}"
  except subprocess.TimeoutExpired:
    ended = f"stopped after its budget of {budget:.0f} s (+{GRACE_S} s)"
  seconds = time.monotonic() - start
  result = read_json(path) or {"part": name}
  if ended:
    result["status"] = ("timed_out" if "budget" in ended
                        else "error" if result.get("status") in (None, "running")
                        else result["status"])
    result["ended"] = ended
    result.update(workdir_progress(result))
  result.update(seconds=seconds, budget_s=budget)
  write_json(path, result)
  return result


def summary_lines(results: dict) -> list[str]:
  """The short human table printed at the end."""
  lines = []
  for name, result in results.items():
    lines.append(f"{name:<11} {result.get('status', '?'):<10} {result.get('seconds', 0):6.1f} s"
                 + (f"  ({result['ended']})" if result.get("ended") else "")
                 + (f"  {result['error'][:200]}" if result.get("error") else ""))
    if name == "peak" and "matmul_tflops" in result:
      lines.append("    matmul TFLOP/s " + ", ".join(
          f"{k} {v:.1f}" for k, v in result["matmul_tflops"].items())
          + f"; copy {result['copy_gb_per_s']:.0f} GB/s; {result['machine']['device_kind']}")
    for row in result.get("rows", []):
      head = f"    {row['model']:<9} {row['dtype']:<9} batch {row['examples_per_step']:>5}"
      if "skipped" in row or "error" in row:
        lines.append(f"{head}  {row.get('skipped') or row.get('error')[:150]}")
        continue
      pct = row.get("pct_of_matmul_peak")
      lines.append(f"{head}  {row['steps_per_s']:9.1f} steps/s {row['images_per_s']:11.0f} "
                   f"images/s  compile {row['compile_s']:5.1f} s"
                   + (f"  {row['tflops_per_s']:7.2f} TFLOP/s" if row.get("tflops_per_s") else "")
                   + (f" = {pct:5.1f} % of peak" if pct is not None else ""))
    if name == "omniglot" and result.get("status") == "ok":
      way = result.get("test_20_way")
      lines.append(f"    {result['epochs']} epochs: wall {result['wall_seconds']:.1f} s, train "
                   f"{result['train_seconds']:.1f} s, {result['examples_per_second'] or 0:.0f} "
                   f"images/s, test 20-way one-shot "
                   + (f"{100 * way:.1f} %" if way is not None else "not measured"))
    if name == "omniglot" and "epochs_done" in result:
      lines.append(f"    epochs finished before the stop: {result['epochs_done']}")
    if name == "tests" and "counts" in result:
      lines.append(f"    {result['counts']}")
      lines.extend(f"    {t['outcome']}: {t['test']}" for t in result.get("tests", [])
                   if t["outcome"] == "failed")
  return lines


def orchestrate(args) -> int:
  args.out.mkdir(parents=True, exist_ok=True)
  scale = args.budget / (DRY_RUN_BUDGET_S if args.dry_run else TOTAL_BUDGET_S)
  deadline = time.monotonic() + args.budget
  results, banked = {}, 0.0
  with open(args.out / "log.txt", "a") as log:
    for name, part in PARTS.items():
      planned = (part.dry_run_budget_s if args.dry_run else part.budget_s) * scale
      budget = min(planned + banked, deadline - time.monotonic())
      if budget < 5:
        results[name] = {"part": name, "status": "skipped", "seconds": 0.0,
                         "ended": "no time left in the run's budget"}
        write_json(args.out / f"{name}.json", results[name])
        continue
      print(f"part {name}: budget {budget:.0f} s", flush=True)
      results[name] = launch(name, budget, args, log)
      banked = planned + banked - results[name]["seconds"]
      print(f"part {name}: {results[name].get('status')} in {results[name]['seconds']:.1f} s",
            flush=True)
  summary = {"dry_run": args.dry_run, "budget_s": args.budget,
             "parts": {name: {k: r.get(k) for k in ("status", "seconds", "budget_s", "ended")}
                       for name, r in results.items()},
             "files": sorted({p.name for p in args.out.iterdir()} | {"summary.json"})}
  summary["table"] = summary_lines(results)
  write_json(args.out / "summary.json", summary)
  print("\n".join(["", f"siamese_jax device run{' (dry run)' if args.dry_run else ''}: "
                   f"{args.out}", *summary["table"]]), flush=True)
  return 1 if any(r.get("status") in ("error", "failed") for r in results.values()) else 0


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dry-run", action="store_true",
                      help="tiny sizes on the CPU backend, device image simulated")
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path(os.environ.get("OUT") or DEFAULT_OUT),
                      help="output folder (default: $OUT, else benchmarks/device/out)")
  parser.add_argument("--omniglot-dir", type=pathlib.Path, default=pathlib.Path(
      os.environ.get("SIAMESE_JAX_DEVICE_OMNIGLOT") or DEFAULT_OMNIGLOT),
                      help="folder with images_background_small1.zip and _small2.zip (default: "
                      "$SIAMESE_JAX_DEVICE_OMNIGLOT, else .device_data/omniglot)")
  parser.add_argument("--budget", type=float,
                      help=f"seconds for all parts (default {TOTAL_BUDGET_S:.0f}, dry run "
                      f"{DRY_RUN_BUDGET_S:.0f}), shared in the parts' proportions; with --part: "
                      "that part's")
  parser.add_argument("--part", choices=tuple(PARTS), help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  args.out, args.omniglot_dir = args.out.resolve(), args.omniglot_dir.resolve()
  if args.budget is None:
    args.budget = DRY_RUN_BUDGET_S if args.dry_run else TOTAL_BUDGET_S
  if args.part is None:
    return orchestrate(args)
  if args.dry_run:  # before anything imports them
    import device_image
    print("device image simulated: blocked", ", ".join(device_image.block_absent_modules()))
    os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path.insert(0, str(REPO_ROOT))
  ctx = PartContext(args.part, args.out, args.dry_run, time.monotonic() + args.budget,
                    args.omniglot_dir)
  try:
    run_part(args.part, ctx)
  except BaseException as e:  # recorded, then the orchestrator goes on with the next part
    import traceback
    traceback.print_exc()
    previous = read_json(args.out / f"{args.part}.json") or {}
    ctx.write({**previous, "status": "error", "error": f"{type(e).__name__}: {e}"[:4000]})
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
