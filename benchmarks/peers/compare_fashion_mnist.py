"""siamese_jax against a plain PyTorch loop on the 3-epoch Fashion-MNIST contrastive job: whole
process wall time and peak RSS, run alternately in one script (issue 17, target 2).

    .venv/bin/python benchmarks/peers/compare_fashion_mnist.py                # 3 alternating pairs
    .venv/bin/python benchmarks/peers/compare_fashion_mnist.py --repeats 5 --torch_threads 1
    .venv/bin/python benchmarks/peers/compare_fashion_mnist.py --smoke    # needs torch: runs?

siamese_jax: ``python main.py --config experiments/contrastive.py --config.data.name=fashion_mnist
--config.train.epochs=3`` with every default output (metrics, TensorBoard events, checkpoints,
latent plots and GIF), into a fresh --workdir, with the user cache warm (one untimed run first:
Fashion-MNIST prepared by tfds from Debian's dataset-fashion-mnist, decoded once, programs
compiled once), as on any machine after its first run. PyTorch: ``torch_contrastive.py`` beside
this file (the same model, loss, optimiser, batch and pairs per epoch; per-epoch validation and
torch.save), in its own virtualenv ``benchmarks/peers/.venv`` that this script makes on first use
(``pip install torch numpy``; ``--torch_spec`` to pin another, e.g. ``torch==2.13.0+cpu``), never
a project dependency. Each child is timed from fork to exit and its peak RSS read from
``wait4``'s ``ru_maxrss``. Prints every run, the median ratios siamese_jax / PyTorch of wall time
and peak RSS (targets: <= 0.4 and <= 0.6)
and of steady training pairs/s (the epochs after the first: summary.json ``examples_per_second``
and the peer's per-epoch figure; issue 30's target >= 3), the load average, and writes
benchmarks/results/peers_fashion_mnist.json (--out). ``--smoke``: one pair of runs of seconds on
the embedded MNIST sample (``experiments/contrastive.py:tiny`` for 1 epoch; the peer's
``--smoke``), with torch from this interpreter or an existing ``peers/.venv`` (nothing is
installed); no file written unless --out is given.
"""

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
VENV = HERE / ".venv"
FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")
TARGETS = {"wall": 0.4, "peak_rss": 0.6}  # issue 17; issue 30: steady pairs/s >= 3x
AT_LEAST = {"steady_pairs_per_second": 3.0}


def installed_torch_python() -> pathlib.Path | None:
  """An interpreter that imports torch already: this one, else peers/.venv's; None if neither."""
  for python in (pathlib.Path(sys.executable), VENV / "bin" / "python"):
    if python.exists() and subprocess.run([python, "-c", "import torch"],
                                          capture_output=True).returncode == 0:
      return python
  return None


def ensure_torch_venv(spec: str) -> pathlib.Path:
  """benchmarks/peers/.venv with torch (CPU) and numpy; made on first use."""
  python = VENV / "bin" / "python"
  if python.exists() and subprocess.run([python, "-c", "import torch"],
                                        capture_output=True).returncode == 0:
    return python
  subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
  attempts = [[spec, "numpy", "--index-url", "https://download.pytorch.org/whl/cpu",
               "--extra-index-url", "https://pypi.org/simple"], [spec, "numpy"]]
  for args in attempts:
    if subprocess.run([python, "-m", "pip", "install", "-q", *args]).returncode == 0:
      return python
  raise SystemExit(f"could not pip install {spec} into {VENV}; install it there by hand")


def timed(command, env=None, cwd=REPO_ROOT) -> dict:
  load = os.getloadavg()[0]
  start = time.perf_counter()
  child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  output = child.stdout.read()
  _, status, usage = os.wait4(child.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"{command[:3]} failed:\n{output[-3000:]}")
  last = [line for line in output.splitlines() if "test pair accuracy" in line]
  epoch_rates = [float(rate) for rate in re.findall(r"^epoch \d+:.*?(\d+) pairs/s$", output, re.M)]
  return {"wall_seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
          "cpu_seconds": usage.ru_utime + usage.ru_stime,
          "load_average_1min_before": load, "last_line": last[-1].strip() if last else "",
          "steady_pairs_per_second": steady(epoch_rates)}


def steady(epoch_rates: list[float]) -> float | None:
  """Mean pairs/s over the epochs after the first (as main.py's summary.json
  ``examples_per_second``: the first epoch also compiles or warms up)."""
  rates = epoch_rates[1:] or epoch_rates
  return statistics.mean(rates) if rates else None


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--torch_spec", default="torch")
  parser.add_argument("--torch_threads", type=int, default=None,
                      help="torch.set_num_threads in the peer (default: torch's own)")
  parser.add_argument("--smoke", action="store_true",
                      help="one pair of runs of seconds on the MNIST sample: that it runs")
  parser.add_argument("--out", help="results JSON (default: benchmarks/results/"
                      "peers_fashion_mnist.json; none with --smoke)")
  args = parser.parse_args()
  out = args.out or (None if args.smoke else str(REPO_ROOT / "benchmarks" / "results" /
                                                 "peers_fashion_mnist.json"))
  if args.smoke:
    args.repeats, args.epochs = 1, 1
    torch_python = installed_torch_python()
    if torch_python is None:
      raise SystemExit("--smoke needs torch installed in this interpreter or in "
                       f"{VENV} (it installs nothing)")
  elif not FASHION.is_dir():
    raise SystemExit(f"{FASHION} not found: apt-get install -y dataset-fashion-mnist")
  else:
    torch_python = ensure_torch_venv(args.torch_spec)
  torch_version = subprocess.run([torch_python, "-c", "import torch; print(torch.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  runs = {"siamese_jax": [], "pytorch": []}
  with tempfile.TemporaryDirectory(prefix="peers_") as tmp:
    tmp = pathlib.Path(tmp)

    def jax_command(i):
      config, data_name = (("experiments/contrastive.py:tiny", "mnist") if args.smoke else
                           ("experiments/contrastive.py", "fashion_mnist"))
      return [sys.executable, "main.py", "--config", config, f"--config.data.name={data_name}",
              f"--config.train.epochs={args.epochs}", "--workdir", str(tmp / f"jax{i}")]

    def torch_command(i):
      command = [str(torch_python), str(HERE / "torch_contrastive.py"), "--data", str(FASHION),
                 "--epochs", str(args.epochs), "--workdir", str(tmp / f"torch{i}")]
      return (command + (["--threads", str(args.torch_threads)] if args.torch_threads else [])
              + ["--smoke"] * args.smoke)

    if not args.smoke:
      timed(jax_command("warmup"), env)  # user cache warm, as after a first run
    for i in range(args.repeats):
      for name, command in (("siamese_jax", jax_command(i)), ("pytorch", torch_command(i))):
        result = timed(command, env)
        if name == "siamese_jax":
          summary = json.loads((tmp / f"jax{i}" / "summary.json").read_text())
          result["steady_pairs_per_second"] = summary["examples_per_second"]
        runs[name].append(result)
        print(f"{name:>11} run {i + 1}: wall {result['wall_seconds']:6.2f} s (CPU "
              f"{result['cpu_seconds']:.1f} s), peak RSS "
              f"{result['peak_rss_mib']:6.0f} MiB, load {result['load_average_1min_before']:.2f}; "
              f"{result['last_line']}", flush=True)
  median = {name: {key: statistics.median(r[key] for r in group)
                   for key in ("wall_seconds", "cpu_seconds", "peak_rss_mib")}
            for name, group in runs.items()}
  for name, group in runs.items():
    rates = [r["steady_pairs_per_second"] for r in group if r["steady_pairs_per_second"]]
    median[name]["steady_pairs_per_second"] = statistics.median(rates) if rates else None
  ratios = {"wall": median["siamese_jax"]["wall_seconds"] / median["pytorch"]["wall_seconds"],
            "peak_rss": median["siamese_jax"]["peak_rss_mib"] / median["pytorch"]["peak_rss_mib"],
            "cpu": median["siamese_jax"]["cpu_seconds"] / median["pytorch"]["cpu_seconds"]}
  if median["pytorch"]["steady_pairs_per_second"] and median["siamese_jax"]["steady_pairs_per_second"]:
    ratios["steady_pairs_per_second"] = (median["siamese_jax"]["steady_pairs_per_second"]
                                         / median["pytorch"]["steady_pairs_per_second"])
  for key, ratio in ratios.items():
    verdict = (f" (target <= {TARGETS[key]}: {'met' if ratio <= TARGETS[key] else 'missed'})"
               if key in TARGETS else
               f" (target >= {AT_LEAST[key]}: {'met' if ratio >= AT_LEAST[key] else 'missed'})"
               if key in AT_LEAST else "")
    print(f"siamese_jax / PyTorch {key}: {ratio:.2f}{verdict}")
  if not out:
    return
  pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(out).write_text(json.dumps({
      "epochs": args.epochs, "torch": torch_version, "torch_threads": args.torch_threads,
      "cpus": os.cpu_count(), "runs": runs, "median": median, "ratios": ratios,
      "load_average_after": os.getloadavg()}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
