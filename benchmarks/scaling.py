"""Data-parallel scaling over 1, 2, 4 and 8 fake CPU devices, and 2 processes x 4 devices.

    .venv/bin/python benchmarks/scaling.py                 # ~3 min on 2 cores
    .venv/bin/python benchmarks/scaling.py --quick         # 20 steps a run, under a minute
    .venv/bin/python benchmarks/scaling.py --devices 1,8 --batch 1024 --no_multiprocess
    .venv/bin/python benchmarks/scaling.py --smoke         # 1 device and 2 processes x 1, 2 steps

Each configuration is a fresh subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=N
(the "2 x 4" row: two processes joined by jax.distributed.initialize on localhost, CPU
collectives over gloo, 4 devices each) that trains case b of train_throughput.py (the Keras
mnist_siamese MLP, contrastive loss, RMSprop, dropout 0.1, Fashion-MNIST) with the project's
unchanged code: a Mesh over all devices, the batch of --batch pairs split over them
(strong scaling), parameters replicated, one fused epoch (train.make_train_epoch) per call.
Reported: compile time, steady pairs/s (best of --repeats epochs), speed-up over 1 device, and
the largest parameter difference from the 1-device run after the same steps (identical up to
the order of the gradient all-reduce).

Fake devices share the machine's cores: on 2 cores, N > 2 devices cannot run faster than 2; the
numbers measure what partitioning and the all-reduce cost, and show that the same program runs
unchanged. On a real pod slice each device brings its own compute.
Results: a table and benchmarks/results/scaling.json (--out).
``--smoke``: 1 device, then 2 processes x 1 device, 2 steps of 64 pairs on the embedded MNIST
sample (any machine); no file written unless --out is given.
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import result_files

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"


def child(args) -> None:
  """One configuration, in this process: prints RESULT <json>, writes params to --params."""
  if args.num_processes > 1:
    import jax
    jax.distributed.initialize(f"localhost:{args.port}", args.num_processes, args.process_id)
  sys.path.insert(0, str(REPO_ROOT))
  sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
  import dataclasses

  import jax
  import numpy as np
  from siamese_jax import batches, models, sharding, train
  from train_throughput import CASES, case_config, load_data

  case = CASES["b"]
  if args.smoke:
    case = dataclasses.replace(case, data="mnist_sample")
  images, labels, num_classes, _ = load_data(case.data)
  config = case_config(case)
  config.optimizer.name = args.optimizer or config.optimizer.name
  spec = train.loss_spec_from_config(config)
  batch_spec = batches.BatchSpec(kind="pairs", batch_size=args.batch)
  steps = args.steps or len(labels) // args.batch
  mesh = sharding.make_mesh()
  data = sharding.device_data(images, labels, num_classes, mesh)
  model = models.build_model(config.model)
  tx = train.make_optimizer(config.optimizer, 100 * steps)
  fresh_state = lambda: sharding.put_replicated(
      train.create_train_state(jax.random.key(0), model, images.shape[1:], tx), mesh)
  flat = lambda state, prefix: {prefix + jax.tree_util.keystr(p): np.asarray(leaf)
                                for p, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
  one_step, _ = train.make_train_epoch(spec, batch_spec, 1, mesh)(fresh_state(), data,
                                                                  jax.random.key(1))
  params = flat(one_step, "step1")
  state = fresh_state()
  epoch_fn = train.make_train_epoch(spec, batch_spec, steps, mesh)
  start = time.perf_counter()
  epoch = epoch_fn.lower(state, data, jax.random.key(1)).compile()
  compile_s = time.perf_counter() - start
  state, metrics = epoch(state, data, jax.random.key(1))  # the run compared across configs
  params.update(flat(state, "epoch"))
  losses = np.asarray(metrics["loss"])
  times = []
  for r in range(args.repeats):
    start = time.perf_counter()
    state, metrics = epoch(state, data, jax.random.key(2 + r))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  if jax.process_index() == 0:
    np.savez(args.params, losses=losses, **params)
    print("RESULT " + json.dumps({
        "devices": len(jax.devices()), "processes": jax.process_count(),
        "local_devices": len(jax.local_devices()), "steps": steps, "compile_s": compile_s,
        "epoch_s_best": min(times), "pairs_per_s": steps * args.batch / min(times),
        "first_epoch_loss": float(np.mean(losses))}), flush=True)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(devices_per_process: int, processes: int, params: str, args) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO_ROOT),
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                       f" --xla_force_host_platform_device_count={devices_per_process}").strip()}
  port = free_port()
  common = [sys.executable, __file__, "--child", f"--params={params}", f"--batch={args.batch}",
            f"--repeats={args.repeats}", f"--steps={args.steps or 0}",
            f"--num_processes={processes}", f"--port={port}"] + ["--smoke"] * args.smoke
  if args.optimizer:
    common.append(f"--optimizer={args.optimizer}")
  procs = [subprocess.Popen(common + [f"--process_id={i}"], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(processes)]
  try:
    outputs = [proc.communicate(timeout=900) for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, (out, err) in zip(procs, outputs):
    if proc.returncode:
      sys.exit(f"{devices_per_process} x {processes} failed:\n{out[-2000:]}\n{err[-3000:]}")
  line = next(l for l in outputs[0][0].splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(__doc__.split("\n")[2:]))
  parser.add_argument("--devices", default="1,2,4,8", help="device counts, one process each")
  parser.add_argument("--batch", type=int, default=1024, help="global batch (pairs)")
  parser.add_argument("--steps", type=int, default=None, help="steps an epoch (default: 60000 "
                      "// batch)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--optimizer", default=None, help="instead of the config's (RMSprop), "
                      "e.g. momentum: whose updates do not amplify rounding differences")
  parser.add_argument("--no_multiprocess", action="store_true", help="skip the 2 x 4 row")
  parser.add_argument("--quick", action="store_true", help="20 steps, one repeat")
  result_files.add_smoke_and_out(parser, "scaling.json", "1 device and 2 processes x 1, 2 steps of 64 pairs")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--params", help=argparse.SUPPRESS)
  parser.add_argument("--num_processes", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    args.steps = args.steps or None
    return child(args)
  if args.quick:
    args.steps, args.repeats = 20, 1
  if args.smoke:
    args.steps, args.repeats, args.batch, args.devices = 2, 1, 64, "1"
  out = result_files.results_path(args, "scaling.json")

  import numpy as np
  configs = [(int(n), 1) for n in args.devices.split(",")]
  if not args.no_multiprocess:
    configs.append((1, 2) if args.smoke else (4, 2))
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    for per_process, processes in configs:
      label = f"{per_process}" if processes == 1 else f"{processes} processes x {per_process}"
      print(f"running {label} device(s) ...", flush=True)
      params = os.path.join(scratch, f"{per_process}x{processes}.npz")
      result = launch(per_process, processes, params, args)
      result["label"], result["params"] = label, params
      rows.append(result)
    reference = next((r for r in rows if r["devices"] == 1), rows[0])
    ref_params = np.load(reference["params"])
    for r in rows:
      theirs = np.load(r.pop("params"))
      for prefix in ("step1", "epoch"):
        names = [k for k in ref_params.files if k.startswith(prefix)]
        r[f"max_abs_param_difference_{prefix}"] = max(
            float(np.max(np.abs(theirs[k] - ref_params[k]))) for k in names)
      r["max_param_magnitude"] = max(float(np.max(np.abs(ref_params[k])))
                                     for k in ref_params.files)
      r["max_relative_loss_difference"] = float(np.max(
          np.abs(theirs["losses"] - ref_params["losses"]) / np.abs(ref_params["losses"])))
      r["speedup"] = r["pairs_per_s"] / reference["pairs_per_s"]

  print(f"\nglobal batch {args.batch} pairs, {rows[0]['steps']} steps an epoch, "
        f"{os.cpu_count()} CPU cores; best of {args.repeats} epochs")
  print(f"{'devices':<22}{'compile':>9}{'pairs/s':>10}{'speed-up':>10}"
        f"{'|dparam| 1 step':>17}{'|dparam| epoch':>16}{'rel dloss':>11}")
  for r in rows:
    print(f"{r['label']:<22}{r['compile_s']:>8.1f}s{r['pairs_per_s']:>10.0f}{r['speedup']:>9.2f}x"
          f"{r['max_abs_param_difference_step1']:>17.1e}{r['max_abs_param_difference_epoch']:>16.1e}"
          f"{r['max_relative_loss_difference']:>11.1e}")
  print(f"differences from the 1-device run, same initial state and keys: largest parameter "
        f"difference after 1 step and after the {rows[0]['steps']}-step epoch (parameters up to "
        f"{rows[0]['max_param_magnitude']:.2f}), largest relative difference of a step's loss")

  import jax
  report = {"benchmark": "scaling", "command": " ".join(sys.argv), "quick": args.quick,
            "smoke": args.smoke, "batch": args.batch, "cpu_count": os.cpu_count(),
            "jax": jax.__version__, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "rows": rows,
            "load_average_at_end": os.getloadavg()}
  if out:
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(report, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
  main()
