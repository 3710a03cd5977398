"""Peak host memory of a full Fashion-MNIST contrastive run (main.py, 20 epochs) in a subprocess.

    .venv/bin/python benchmarks/memory_fashion_mnist.py            # the full run, ~2-4 min
    .venv/bin/python benchmarks/memory_fashion_mnist.py --quick    # 1 epoch, under a minute
    .venv/bin/python benchmarks/memory_fashion_mnist.py --epochs 5 --keep /tmp/run
    .venv/bin/python benchmarks/memory_fashion_mnist.py --smoke    # :tiny on the MNIST sample

Runs ``main.py --config experiments/contrastive.py --config.data.name=fashion_mnist`` exactly as
a user would (every default: per-epoch evaluation, latent plots and their GIF, checkpoints), in a
fresh temporary --workdir and tfds data folder (so the tfds preparation of the 60,000 + 10,000
images from the local IDX files is part of the run), and reports the child's peak resident set
size (``ru_maxrss`` of the finished child, and the VmRSS sampled every 0.1 s, to show when it
peaks). The images stay uint8 on the device (47 MB for the training set); pairs are drawn as
indices on device and never materialised. Target: under 1.0 GB (10^9 bytes).

--prepared measures the run as it is after a machine's first one: the default tfds folder with
Fashion-MNIST already prepared there and the user cache (siamese_jax.caches) warm, so the run
reads the decoded arrays and never imports TensorFlow (one untimed run first fills the cache).

--without_tensorflow measures a counterfactual, not the project as it is: the same main.py run
with TensorFlow made unimportable, the data read straight from the IDX files
(siamese_jax.data.files, no tfds) and TensorBoard writing replaced by nothing (metrics.jsonl is
still written): what the run needs when neither data loading nor metric writing imports
TensorFlow, whose import alone holds about 800 MB resident.
Results: a table and benchmarks/results/memory_fashion_mnist.json (--out). ``--smoke``: the same
measurement of ``experiments/contrastive.py:tiny`` for one epoch on the embedded MNIST sample (any
machine, seconds); no file written unless --out is given.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import result_files

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
TARGET_BYTES = 1.0e9

# Runs main.py with TensorFlow unimportable: IDX data (no tfds), no TensorBoard writer.
WITHOUT_TENSORFLOW = """
import sys, types
sys.modules["tensorflow"] = None  # import tensorflow raises ImportError; find_spec says absent
class NoWriter:
  write_scalars = flush = close = lambda self, *args, **kwargs: None
writers = types.ModuleType("clu.metric_writers")
writers.create_default_writer = lambda *args, **kwargs: NoWriter()
sys.modules["clu.metric_writers"] = writers
from siamese_jax import data
from siamese_jax.data import files
def load_idx(name, split, **kwargs):
  folder = next(p for p in files.known_places(name) if p.is_dir())
  spec = files.IDX_DATASETS[name]
  images, labels = files.read_idx_pair(folder, *spec.parts[split], spec.num_classes)
  return data.LabelledImages(images[..., None], labels.astype("int32"), spec.num_classes,
                             f"IDX files in {folder} (no tfds)", class_names=list(spec.class_names))
data.load = load_idx
sys.argv = ["main.py"] + sys.argv[1:]
import main
main.run()
"""


def sample_rss(pid: int, samples: list, stop: threading.Event) -> None:
  """Appends (seconds since start, VmRSS bytes) of ``pid`` every 0.1 s until ``stop``."""
  start = time.perf_counter()
  while not stop.is_set():
    try:
      for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
          samples.append((time.perf_counter() - start, int(line.split()[1]) * 1024))
    except OSError:
      return
    stop.wait(0.1)


def versions() -> dict:
  out = subprocess.run([sys.executable, "-c", "import jax, flax, optax, numpy, platform; print("
                        "platform.python_version(), jax.__version__, flax.__version__, "
                        "optax.__version__, numpy.__version__)"], capture_output=True, text=True)
  names = ("python", "jax", "flax", "optax", "numpy")
  return dict(zip(names, out.stdout.split()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(__doc__.split("\n")[2:]))
  parser.add_argument("--epochs", type=int, default=20)
  parser.add_argument("--quick", action="store_true", help="one epoch")
  parser.add_argument("--without_tensorflow", action="store_true",
                      help="counterfactual: the same run with TensorFlow unimportable")
  parser.add_argument("--prepared", action="store_true",
                      help="the default tfds folder and a warm user cache (a run after the first)")
  parser.add_argument("--keep", metavar="DIR", help="workdir to keep (default: a temporary one)")
  result_files.add_smoke_and_out(parser, "memory_fashion_mnist.json", "contrastive.py:tiny, 1 epoch on the MNIST sample")
  args = parser.parse_args()
  epochs = 1 if args.quick or args.smoke else args.epochs
  out = result_files.results_path(args, "memory_fashion_mnist.json")
  config, data_name = (("experiments/contrastive.py:tiny", "mnist") if args.smoke else
                       ("experiments/contrastive.py", "fashion_mnist"))

  with tempfile.TemporaryDirectory() as scratch:
    workdir = args.keep or os.path.join(scratch, "run")
    tfds_dir = os.path.join(scratch, "tfds")
    program = ["-c", WITHOUT_TENSORFLOW] if args.without_tensorflow else ["main.py"]
    command = [sys.executable, *program, "--config", config,
               f"--config.data.name={data_name}", f"--config.data.tfds_data_dir={tfds_dir}",
               f"--config.train.epochs={epochs}", f"--workdir={workdir}"]
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
           "PYTHONPATH": str(REPO_ROOT)}
    if args.prepared:  # the default tfds folder; one untimed epoch fills the user cache
      command = [c for c in command if not c.startswith("--config.data.tfds_data_dir")]
      subprocess.run([*command[:-2], "--config.train.epochs=1",
                      f"--workdir={os.path.join(scratch, 'warmup')}"], cwd=REPO_ROOT, env=env,
                     check=True, capture_output=True)
    shown = ["main.py", *command[len(program) + 1:]]
    print(("running, TensorFlow blocked: " if args.without_tensorflow else "running: ")
          + " ".join(shown), flush=True)
    start = time.perf_counter()
    log_path = os.path.join(scratch, "run.log")
    with open(log_path, "w") as log:
      child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
      samples, stop = [], threading.Event()
      sampler = threading.Thread(target=sample_rss, args=(child.pid, samples, stop), daemon=True)
      sampler.start()
      _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the warm-up's
      returncode = os.waitstatus_to_exitcode(status)
      stop.set()
      sampler.join()
    wall = time.perf_counter() - start
    if returncode:
      sys.exit(f"main.py failed ({returncode}):\n" + pathlib.Path(log_path).read_text()[-3000:])
    peak = usage.ru_maxrss * 1024
    summary = json.loads((pathlib.Path(workdir) / "summary.json").read_text())

  sampled_peak_s, sampled_peak = max(samples, key=lambda s: s[1]) if samples else (0.0, 0)
  final = summary["final"]
  print(f"{epochs} epochs of {summary['steps'] // max(epochs, 1)} steps, "
        f"{summary['splits']['train']['shape']} uint8 training images; wall {wall:.1f} s "
        f"(training {summary['train_seconds']:.1f} s)")
  print(f"test pair accuracy {summary['test']['accuracy_tuned']:.4f} (tuned threshold), ROC AUC "
        f"{summary['test']['roc_auc']:.4f}")
  print(f"peak RSS (ru_maxrss)        {peak / 2**20:8.0f} MiB = {peak / 1e9:.3f} GB")
  print(f"peak RSS (sampled VmRSS)    {sampled_peak / 2**20:8.0f} MiB at {sampled_peak_s:.1f} s "
        f"of {wall:.1f} s")
  print(f"target < 1.0 GB: {'met' if peak < TARGET_BYTES else 'missed'} "
        f"({100 * peak / TARGET_BYTES:.0f} % of it)")
  step = max(1, len(samples) // 20)
  timeline = [(round(t, 1), round(rss / 2**20)) for t, rss in samples[::step]]
  print("RSS timeline (s, MiB): " + ", ".join(f"{t}:{m}" for t, m in timeline))

  report = {"benchmark": "memory_fashion_mnist", "command": " ".join(sys.argv),
            "run_command": " ".join(shown), "without_tensorflow": args.without_tensorflow,
            "prepared": args.prepared,
            "quick": args.quick, "smoke": args.smoke, "epochs": epochs,
            "cpu_count": os.cpu_count(), "versions": versions(), "wall_s": wall,
            "peak_rss_bytes": peak, "peak_rss_sampled_bytes": sampled_peak,
            "peak_rss_sampled_at_s": sampled_peak_s, "target_bytes": TARGET_BYTES,
            "target_met": peak < TARGET_BYTES, "rss_timeline_s_mib": timeline,
            "train_seconds": summary["train_seconds"], "final": final,
            "test_roc_auc": summary["test"]["roc_auc"], "devices": summary["devices"],
            "load_average_at_end": os.getloadavg()}
  if out:
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
  main()
