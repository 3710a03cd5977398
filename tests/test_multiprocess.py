"""Multi-process training with unchanged code: ``main.py --distributed`` in two processes on
localhost (joined by ``jax.distributed.initialize``, CPU collectives over gloo), each with 4 fake
CPU devices, reaches the same parameters as one process with 8 fake devices.

The three processes run at once; each prepares its own tfds folder (``TFDS_DATA_DIR``, so the
configs, and hence the workdirs' config.json, are identical) and the test compares the final
orbax checkpoints and the metrics of the two workdirs.
"""

import json
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from siamese_jax import checkpoints
from tests.helpers import REPO_ROOT, repo_env

pytestmark = pytest.mark.slow
TIMEOUT_S = 180  # generous for a loaded machine; the test takes about 30 s on 2 idle cores

TINY_RUN = ["--config", "experiments/contrastive.py", "--config.train.epochs=2",
            "--config.train.steps_per_epoch=4", "--config.train.steps_per_call=2",
            "--config.train.batch_size=32", "--config.eval.pairs=200",
            "--config.plots.latent=False"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(workdir, tfds_dir, devices, log, extra=()):
  env = repo_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                 JAX_PLATFORMS="cpu", TFDS_DATA_DIR=str(tfds_dir))
  return subprocess.Popen([sys.executable, str(REPO_ROOT / "main.py"), *TINY_RUN,
                           f"--workdir={workdir}", *extra],
                          env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_all(processes, logs):
  try:
    for proc in processes:
      proc.wait(timeout=TIMEOUT_S)
  finally:
    for proc in processes:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for proc, log in zip(processes, logs):
    tail = pathlib.Path(log.name).read_text()[-3000:]
    assert proc.returncode == 0, f"{log.name} exited with {proc.returncode}:\n{tail}"


def flat_params(workdir):
  _, state = checkpoints.load_trained(workdir)
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}


def test_two_processes_of_four_devices_match_one_process_of_eight(tmp_path):
  one, two = tmp_path / "one_process", tmp_path / "two_processes"
  distributed = ["--distributed", f"--coordinator_address=localhost:{free_port()}",
                 "--num_processes=2"]
  logs = [open(tmp_path / name, "w") for name in ("one.log", "two_0.log", "two_1.log")]
  try:
    processes = [launch(one, tmp_path / "tfds_one", 8, logs[0])]
    processes += [launch(two, tmp_path / f"tfds_{i}", 4, logs[1 + i],
                         [*distributed, f"--process_id={i}"]) for i in (0, 1)]
    wait_all(processes, logs)
  finally:
    for log in logs:
      log.close()

  log_0 = (tmp_path / "two_0.log").read_text()
  assert "8 device(s)" in log_0 and "2 process(es)" in log_0
  summary = json.loads((two / "summary.json").read_text())
  assert summary["steps"] == 8 and "2 process(es)" in summary["devices"]
  lines = (two / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2, "process 1 must not write metrics"
  reference = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
  for ours, theirs in zip(map(json.loads, lines), reference):
    for key in ("train_loss", "val_accuracy", "val_roc_auc"):
      np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, err_msg=key)

  expected, got = flat_params(one), flat_params(two)
  assert expected.keys() == got.keys() and expected
  for name in expected:  # the same steps; only the order of the gradient all-reduce may differ
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
