"""The pairs/s that main.py reports against the fused epoch's, measured alternately (issue 17,
target 3), and the fused epoch's share of the float32 matmul peak measured in the same process.

    .venv/bin/python benchmarks/reported_throughput.py               # 3 alternating rounds
    .venv/bin/python benchmarks/reported_throughput.py --repeats 5 --epochs 5
    .venv/bin/python benchmarks/reported_throughput.py --smoke     # one round of :tiny on MNIST

Each round runs two children, one after the other:
  fused     train.make_train_epoch of experiments/contrastive.py on Fashion-MNIST (60,000 less the
            10 % validation part, 421 steps of 128 pairs: main.py's epoch), compiled first, then
            timed over --epochs epochs (best and median pairs/s); beside it the matmul peak
            (train_throughput.matmul_peak) and the dot FLOPs per step counted from the compiled
            HLO (train_throughput.hlo_dot_conv_flops), so the fraction of peak is of this process.
  main.py   python main.py --config experiments/contrastive.py --config.data.name=fashion_mnist
            --config.train.epochs=<--epochs> (warm user cache, every default output); its
            reported figure: summary.json's examples_per_second (the mean over the epochs after
            the first) and every epoch's from metrics.jsonl.
Prints each round, the median ratio reported / fused (target: within 5 %) and the load average;
writes benchmarks/results/reported_throughput.json (--out). ``--smoke``: one round of
``experiments/contrastive.py:tiny`` on the embedded MNIST sample (6 steps of 32 an epoch, 2
epochs); no file written unless --out is given.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

import result_files

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"

FUSED = """
import json, sys, time
sys.path.insert(0, "benchmarks")
import jax
import numpy as np
from experiments import contrastive
from siamese_jax import batches, models, sharding, train
from siamese_jax.data import protocol
from train_throughput import hlo_dot_conv_flops, matmul_peak
epochs, smoke = int(sys.argv[1]), sys.argv[2] == "smoke"
config = contrastive.get_config("tiny" if smoke else None)
config.data.name = "mnist" if smoke else "fashion_mnist"
datasets = protocol.load_datasets(config)
spec = train.loss_spec_from_config(config)
batch_spec = batches.batch_spec_from_config(config, spec.batch_kind)
steps = config.train.steps_per_epoch or len(datasets.train.labels) // batch_spec.examples
mesh = sharding.make_mesh()
data = sharding.device_data(datasets.train.images, datasets.train.labels,
                            datasets.train.num_classes, mesh)
model = models.build_model(config.model)
state = train.create_train_state(jax.random.key(0), model, (28, 28, 1),
                                 train.make_optimizer(config.optimizer, steps * epochs))
epoch = train.make_train_epoch(spec, batch_spec, steps, mesh)
compiled = epoch.lower(state, data, jax.random.key(1)).compile()
step = train.make_train_step(spec, mesh)
one = jax.jit(lambda s, k: batches.sample_batch(k, data, batch_spec))(state, jax.random.key(2))
flops = hlo_dot_conv_flops(step.lower(state, one, jax.random.key(3)).compile().as_text())
peak_of = lambda: max((matmul_peak((256,), seconds=0.01) if smoke else matmul_peak()).values())
peak_before = peak_of()
rates = []
for e in range(epochs):
  start = time.perf_counter()
  state, metrics = compiled(state, data, jax.random.key(10 + e))
  jax.block_until_ready(metrics)
  rates.append(steps * batch_spec.examples / (time.perf_counter() - start))
peak = max(peak_before, peak_of())
best = max(rates)
print(json.dumps({"steps": steps, "rates": rates, "best": best, "median": float(np.median(rates)),
                  "flops_per_step": flops, "peak_gflops": peak,
                  "fraction_of_peak_best": best / batch_spec.examples * flops / 1e9 / peak}))
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--epochs", type=int, default=3)
  result_files.add_smoke_and_out(parser, "reported_throughput.json", "one round of experiments/contrastive.py:tiny on MNIST")
  args = parser.parse_args()
  if args.smoke:
    args.repeats, args.epochs = 1, 2
  out = result_files.results_path(args, "reported_throughput.json")
  config, data_name = (("experiments/contrastive.py:tiny", "mnist") if args.smoke else
                       ("experiments/contrastive.py", "fashion_mnist"))
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  rounds = []
  with tempfile.TemporaryDirectory(prefix="reported_") as tmp:
    for i in range(args.repeats):
      load = os.getloadavg()[0]
      fused = json.loads(subprocess.run(
          [sys.executable, "-c", FUSED, str(args.epochs), "smoke" if args.smoke else "full"],
          cwd=REPO_ROOT, env=env, check=True,
          capture_output=True, text=True).stdout.strip().splitlines()[-1])
      workdir = pathlib.Path(tmp) / f"run{i}"
      subprocess.run([sys.executable, "main.py", "--config", config,
                      f"--config.data.name={data_name}", f"--config.train.epochs={args.epochs}",
                      "--workdir", str(workdir)], cwd=REPO_ROOT, env=env, check=True,
                     capture_output=True)
      summary = json.loads((workdir / "summary.json").read_text())
      per_epoch = [json.loads(line)["examples_per_second"]
                   for line in (workdir / "metrics.jsonl").read_text().splitlines()]
      reported = summary["examples_per_second"]
      rounds.append({"fused": fused, "reported": reported, "reported_per_epoch": per_epoch,
                     "ratio_to_fused_median": reported / fused["median"],
                     "ratio_to_fused_best": reported / fused["best"],
                     "load_average_1min_before": load})
      print(f"round {i + 1}: fused {fused['median']:,.0f} pairs/s median, {fused['best']:,.0f} best "
            f"({100 * fused['fraction_of_peak_best']:.1f} % of {fused['peak_gflops']:.0f} GFLOP/s, "
            f"{fused['flops_per_step'] / 1e6:.1f} MFLOP/step); main.py reports {reported:,.0f} "
            f"(epochs {', '.join(f'{r:,.0f}' for r in per_epoch)}): "
            f"{reported / fused['median']:.3f} of the fused median; load {load:.2f}", flush=True)
  ratio = statistics.median(r["ratio_to_fused_median"] for r in rounds)
  print(f"main.py / fused (median of rounds): {ratio:.3f} (target >= 0.95: "
        f"{'met' if ratio >= 0.95 else 'missed'})")
  if out:
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps({"epochs": args.epochs, "rounds": rounds,
                                             "median_ratio": ratio, "smoke": args.smoke,
                                             "load_average_after": os.getloadavg()}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
  main()
