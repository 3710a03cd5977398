"""Does splitting a CPU into several XLA devices speed up the Omniglot train step?

    .venv/bin/python benchmarks/cpu_devices.py [--devices 1 2] [--repeats 3] [--calls 4]
    .venv/bin/python benchmarks/cpu_devices.py --smoke     # tiny sizes, one process: does it run

XLA:CPU runs one device's small convolutions on about one core: a run of
``experiments/omniglot.py`` on 2 cores keeps ~1 busy, and two runs side by side each go
nearly as fast as one alone. With ``--xla_force_host_platform_device_count=N`` the same
program is data-parallel over N CPU devices (the mesh of ``siamese_jax.sharding``), each
device's half of the batch on its own thread. Each setting runs in its own process (the flag is
read once, when jax starts), alternating over ``--repeats``; every process times ``--calls``
calls of the default config's train call (8 unrolled steps of 64 on 976 classes of random
28 x 28 images, as small1 with its rotated and mirrored classes) after a first, compiling call.
``--smoke``: one process of 1 device, one call of 2 steps of 16 on 16 classes, width 8, no
augmentation.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def child(calls: int, smoke: bool = False) -> dict:
  sys.path.insert(0, str(ROOT))
  import jax

  from experiments import omniglot
  from noise_images import noise_training
  from siamese_jax import train

  config = omniglot.get_config()
  classes = 976
  if smoke:
    classes = 16
    config.model.update(filters=8, embedding_dim=16)
    config.train.update(batch_size=16, augment=False, steps_per_call=2)
  config.model.num_classes = classes
  mesh, data, spec, batch_spec, fresh_state = noise_training(config, classes, 16)
  steps = config.train.steps_per_call
  state = fresh_state()
  epoch = train.make_train_epoch(spec, batch_spec, steps, mesh, unroll=True)
  key = jax.random.key(1)
  start = time.perf_counter()
  state, _ = jax.block_until_ready(epoch(state, data, key))
  first = time.perf_counter() - start
  start, cpu = time.perf_counter(), time.process_time()
  for i in range(calls):
    state, _ = epoch(state, data, jax.random.fold_in(key, i))
  jax.block_until_ready(state)
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  return {"devices": jax.device_count(), "first_call_s": round(first, 2),
          "ms_per_step": round(wall / (calls * steps) * 1e3, 1),
          "cpu_per_wall": round(cpu / wall, 2)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--calls", type=int, default=4, help="timed calls of 8 steps")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: that it runs")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.calls, args.smoke)))
    return
  if args.smoke:
    args.devices, args.repeats, args.calls = [1], 1, 1
  print(f"{os.cpu_count()} cores; default Omniglot train call, {args.calls} calls timed")
  for repeat in range(args.repeats):
    for devices in args.devices:
      env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                 JAX_PLATFORMS="cpu", SIAMESE_JAX_CACHE_DIR="off")
      out = subprocess.run([sys.executable, __file__, "--child", "--calls", str(args.calls)]
                           + ["--smoke"] * args.smoke, env=env, capture_output=True, text=True,
                           check=True)
      print(f"repeat {repeat}: {out.stdout.strip().splitlines()[-1]}", flush=True)


if __name__ == "__main__":
  main()
