"""Whole-process wall time of the default command, with a cold and a warm user cache, and the
number of XLA compilations it asks for (issue 17, targets 1 and 5).

    .venv/bin/python benchmarks/whole_run.py                 # 2 x (cold, warm) of the default run
    .venv/bin/python benchmarks/whole_run.py --repeats 3 --epochs 20 2
    .venv/bin/python benchmarks/whole_run.py --quick         # the :tiny variant, once each
    .venv/bin/python benchmarks/whole_run.py --smoke         # the same, 1 epoch, no result file

Runs ``python main.py --config experiments/contrastive.py`` as a user would (every output: metrics,
TensorBoard events, checkpoints, per-epoch latent plots and their GIF) into a fresh --workdir each
time, in a child process timed from fork to exit (interpreter start and imports included; the
tfds preparation of the embedded sample is not: it is done once, before timing, in the usual
~/tensorflow_datasets). Cold: a new empty user cache (SIAMESE_JAX_CACHE_DIR; every program is
compiled and the sample decoded with TensorFlow); warm: the same cache again (what every run after
the first one on a machine sees). Runs alternate cold, warm, cold, warm... so load from other jobs
hits both alike.

Compilations are counted in the child through ``jax.monitoring``: every compile request
(``/jax/core/compile/backend_compile_duration``, one per program lowered to XLA, cache hit or not)
and the persistent-cache hits among them; the difference is what XLA compiled. ``--epochs 20 2``
shows the count does not grow with the epochs. Also printed: the child's CPU seconds (user +
system: on a machine shared with other jobs the wall time stretches with their load, the CPU time
much less), its peak RSS, whether it
imported TensorFlow, and the run's own ``train_seconds`` / ``wall_seconds`` from summary.json.
Results: a table and benchmarks/results/whole_run.json (--out), with the load average.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import result_files

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
TARGET_SECONDS = 8.0

# main.py in the child, counting compile requests and persistent-cache hits.
COUNTING_MAIN = """
import atexit, json, os, sys
import jax.monitoring
counts = {"requests": 0, "cache_hits": 0, "compile_seconds": 0.0}
def on_duration(event, seconds, **kwargs):
  if event == "/jax/core/compile/backend_compile_duration":
    counts["requests"] += 1
    counts["compile_seconds"] += seconds
def on_event(event, **kwargs):
  if event == "/jax/compilation_cache/cache_hits":
    counts["cache_hits"] += 1
jax.monitoring.register_event_duration_secs_listener(on_duration)
jax.monitoring.register_event_listener(on_event)
def report():
  counts["tensorflow_imported"] = "tensorflow" in sys.modules
  with open(os.environ["WHOLE_RUN_COUNTS"], "w") as f:
    json.dump(counts, f)
atexit.register(report)
sys.path.insert(0, os.getcwd())
sys.argv = ["main.py"] + sys.argv[1:]
import main
main.run()
"""


def run_once(cache_dir: pathlib.Path, epochs: int | None, variant: str, scratch: pathlib.Path,
             label: str) -> dict:
  """One child run of main.py; its wall, peak RSS, compile counts and summary figures."""
  workdir = scratch / f"run_{label}_{time.time_ns()}"
  counts_file = scratch / f"counts_{label}.json"
  config = "experiments/contrastive.py" + (f":{variant}" if variant else "")
  command = [sys.executable, "-c", COUNTING_MAIN, "--config", config, "--workdir", str(workdir)]
  if epochs is not None:
    command.append(f"--config.train.epochs={epochs}")
  env = {**os.environ, "SIAMESE_JAX_CACHE_DIR": str(cache_dir),
         "WHOLE_RUN_COUNTS": str(counts_file)}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  _, status, usage = os.wait4(child.pid, 0)
  wall = time.perf_counter() - start
  stderr = child.stderr.read()
  child.stderr.close()
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"main.py failed ({label}):\n{stderr[-3000:]}")
  counts = json.loads(counts_file.read_text())
  summary = json.loads((workdir / "summary.json").read_text())
  frames = len(list((workdir / "plots").glob("latent_epoch*.png")))
  return {"label": label, "wall_seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
          "cpu_seconds": usage.ru_utime + usage.ru_stime,
          "compile_requests": counts["requests"], "cache_hits": counts["cache_hits"],
          "xla_compilations": counts["requests"] - counts["cache_hits"],
          "compile_seconds": counts["compile_seconds"],
          "tensorflow_imported": counts["tensorflow_imported"],
          "train_seconds": summary["train_seconds"], "run_wall_seconds": summary["wall_seconds"],
          "epochs": summary["epochs"], "latent_frames": frames,
          "gif": (workdir / "plots" / "latent.gif").is_file(),
          "events": bool(list(workdir.glob("events.out.tfevents.*"))),
          "load_average_1min_before": load_before}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=2, help="(cold, warm) pairs per epoch count")
  parser.add_argument("--epochs", type=int, nargs="*", default=[None],
                      help="train.epochs values to run (default: the config's, 20)")
  parser.add_argument("--quick", action="store_true", help="the :tiny variant, one pair")
  result_files.add_smoke_and_out(parser, "whole_run.json", "the :tiny variant for 1 epoch, one pair")
  args = parser.parse_args()
  if args.smoke:
    args.quick, args.epochs = True, [1]
  out = result_files.results_path(args, "whole_run.json")
  variant = "tiny" if args.quick else ""
  repeats = 1 if args.quick else args.repeats
  # The embedded sample prepared once (as on any machine after its first run), not timed.
  subprocess.run([sys.executable, "-c", "from siamese_jax import data; "
                  "data.load('mnist', 'train'); data.load('mnist', 'test')"],
                 cwd=REPO_ROOT, check=True, capture_output=True,
                 env={**os.environ, "SIAMESE_JAX_CACHE_DIR": "off"})
  runs = []
  with tempfile.TemporaryDirectory(prefix="whole_run_") as tmp:
    scratch = pathlib.Path(tmp)
    for epochs in args.epochs:
      for repeat in range(repeats):
        cache = scratch / f"cache_{epochs}_{repeat}"  # empty: cold
        for kind in ("cold", "warm"):
          result = run_once(cache, epochs, variant, scratch, f"{kind}{repeat}")
          result.update(kind=kind, repeat=repeat)
          runs.append(result)
          print(f"{kind:>4} epochs={result['epochs']:>2}: wall {result['wall_seconds']:6.2f} s "
                f"(CPU {result['cpu_seconds']:.1f} s) "
                f"(run's own {result['run_wall_seconds']:.2f} s, training {result['train_seconds']:.2f} s), "
                f"peak RSS {result['peak_rss_mib']:6.0f} MiB, compile requests "
                f"{result['compile_requests']} ({result['cache_hits']} cache hits, "
                f"{result['xla_compilations']} compiled, {result['compile_seconds']:.2f} s), "
                f"TensorFlow imported: {result['tensorflow_imported']}, frames "
                f"{result['latent_frames']}, GIF {result['gif']}, load {result['load_average_1min_before']:.2f}",
                flush=True)
  table = {}
  for run in runs:
    table.setdefault((run["epochs"], run["kind"]), []).append(run)
  print("\nepochs  cache  median wall (s)  min   median CPU (s)  compile requests  peak RSS (MiB)")
  for (epochs, kind), group in sorted(table.items()):
    walls = [r["wall_seconds"] for r in group]
    print(f"{epochs:>6}  {kind:>5}  {statistics.median(walls):15.2f}  {min(walls):5.2f}  "
          f"{statistics.median(r['cpu_seconds'] for r in group):14.1f}  "
          f"{sorted({r['compile_requests'] for r in group})!s:>16}  "
          f"{statistics.median(r['peak_rss_mib'] for r in group):14.0f}")
  warm = [r["wall_seconds"] for r in runs if r["kind"] == "warm" and r["epochs"] == 20]
  if warm:
    print(f"target: warm default run <= {TARGET_SECONDS} s: median {statistics.median(warm):.2f} s "
          f"({'met' if statistics.median(warm) <= TARGET_SECONDS else 'missed'})")
  if not out:
    return
  pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(out).write_text(json.dumps({
      "command": "python main.py --config experiments/contrastive.py" + (":tiny" if variant else ""),
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "python": platform.python_version()},
      "load_average_after": os.getloadavg(), "runs": runs}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
