"""Every script in benchmarks/ runs in its ``--smoke`` mode (tiny sizes on the embedded MNIST
sample, seconds each) and prints its figures, so a benchmark that rots fails the suite instead of
its next user (slow: subprocesses, two at a time: about 4 CPU-minutes, 2-3 minutes on 2 idle
cores). The peers' scripts need torch and are skipped without it."""

import concurrent.futures
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, repo_env

BENCHMARKS = REPO_ROOT / "benchmarks"

# script: what its printout must match (its figures), longest run first (they run two at a time
# in this order).
PRINTS = {
    "whole_run.py": r"warm epochs= 1: wall +[\d.]+ s .*compile requests \d+",
    "scaling.py": r"\n1 +[\d.]+s +\d+ +1\.00x.*\n2 processes x 1 +[\d.]+s +\d+",
    "unroll_convnet.py": (r"unrolled: first call [\d.]+ s, then [\d.]+ ms/step\n +scan: first "
                          r"call [\d.]+ s, then [\d.]+ ms/step\n jit loop: first call"),
    "train_throughput.py": (r"\na MLP contrastive \(smoke\) +[\d.]+s.*\nd triplet batch-hard "
                            r"\(smoke\) +[\d.]+s.*\n\nFLOPs per step"),
    "reported_throughput.py": r"main.py / fused \(median of rounds\): [\d.]+",
    "memory_fashion_mnist.py": r"peak RSS \(ru_maxrss\) +\d+ MiB",
    "data_pipeline.py": r"train.make_train_epoch +[\d.]+ s.*\ninput side: [-\d.]+ %",
    "cpu_devices.py": r'repeat 0: \{"devices": 1, "first_call_s": [\d.]+, "ms_per_step": [\d.]+',
    "streaming.py": (r"\ndevice +[\d,]+ .*\nstreamed +[\d,]+ .*\nstreamed, no prefetch +[\d,]+ "
                     r".*\nhost draw only +[\d,]+"),
    "small_folder_threshold.py": (r"seed 0: \d+ validation classes.*\n  best accuracy \(before\) +"
                                  r"threshold [-\d.]+: test FAR [\d.]+"),
    "eval_knn.py": r"embed \+ 500 x 500 k-NN: [\d.]+ s",
    "inference.py": r"search +200 x 2,000 \(exact, k=5\) +[\d.]+ s +top-1 label accuracy",
    "pretrained_speed.py": (r"(?s)resnet50 +siamese_jax +fwd +[\d.]+ img/s +fwd\+bwd +[\d.]+ "
                            r"img/s.*vit_small_patch16_224 +siamese_jax +fwd"),
    "dropout_bits.py": r"(?s) unrolled: [\d.]+ ms a step.*\nunrolled masks equal threefry's: True",
    "peers/compare_fashion_mnist.py": r"siamese_jax / PyTorch wall: [\d.]+",
    "peers/torch_contrastive.py": r"test pair accuracy [\d.]+, ROC AUC [\d.]+",
    "convnet_vs_torch.py": (r"round 0 matmul: +[\d.]+ ms/step +[\d.]+ images/s .*compile [\d.]+ s"
                            r"[\s\S]*round 0 +torch: +[\d.]+ ms/step[\s\S]*matmul / torch images/s, "
                            r"per round: [\d.]+"),
    "profile_step.py": (r"convnet4, conv_impl=matmul, batch \d+, \d+ steps a call: [\d.]+ ms/step"
                        r"[\s\S]*\nmatmul +[\d.]+ [\s\S]*floor \(dot FLOPs.*\): [\d.]+ ms/step"),
    "peers/torch_convnet.py": r'"ms_per_step": [\d.]+, "images_per_s": [\d.]+',
}
# The scripts that write a results JSON where --out says.
WRITE_OUT = ("whole_run.py", "scaling.py", "train_throughput.py", "reported_throughput.py",
             "memory_fashion_mnist.py", "streaming.py", "eval_knn.py", "inference.py",
             "peers/compare_fashion_mnist.py")
NEEDS_TORCH = ("peers/compare_fashion_mnist.py", "peers/torch_contrastive.py",
               "convnet_vs_torch.py", "peers/torch_convnet.py")
# Modules the scripts import, not scripts themselves.
SHARED_MODULES = ("result_files.py", "noise_images.py")
TIMEOUT_S = 600


def test_every_benchmark_has_a_smoke_run():
  scripts = {str(path.relative_to(BENCHMARKS)) for folder in (BENCHMARKS, BENCHMARKS / "peers")
             for path in folder.glob("*.py")}
  assert scripts - set(SHARED_MODULES) == set(PRINTS), ("add each benchmark (and its --smoke mode) "
                                                       "to PRINTS")


def torch_python() -> str | None:
  """An interpreter with torch, as compare_fashion_mnist.py --smoke looks for one: this one, else
  benchmarks/peers/.venv's."""
  if importlib.util.find_spec("torch") is not None:
    return sys.executable
  venv = BENCHMARKS / "peers" / ".venv" / "bin" / "python"
  if venv.exists() and subprocess.run([venv, "-c", "import torch"],
                                      capture_output=True).returncode == 0:
    return str(venv)
  return None


def smoke_command(script: str, out) -> list[str]:
  peers = ("peers/torch_contrastive.py", "peers/torch_convnet.py")
  python = torch_python() if script in peers else sys.executable
  command = [python, str(BENCHMARKS / script), "--smoke"]
  if script == "convnet_vs_torch.py":
    command += ["--peer-python", torch_python()]
  if script == "peers/torch_contrastive.py":
    command += ["--workdir", str(out.parent / "torch_run")]
  return command + (["--out", str(out)] if script in WRITE_OUT else [])


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
  """{script: Future of (CompletedProcess, the --out path)}: the selected scripts' smoke runs,
  two at a time, in one tfds folder with the MNIST sample prepared first (so no two runs prepare
  it at once)."""
  selected = [item.callspec.params["script"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")]
  selected = [script for script in PRINTS if script in selected
              and (script not in NEEDS_TORCH or torch_python() is not None)]
  scratch = tmp_path_factory.mktemp("benchmarks")
  env = repo_env(TFDS_DATA_DIR=str(scratch / "tfds"), JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  subprocess.run([sys.executable, "-c", "from siamese_jax import data; "
                  "data.load('mnist', 'train'); data.load('mnist', 'test')"], env=env,
                 cwd=REPO_ROOT, check=True, capture_output=True, timeout=TIMEOUT_S)

  def run(script):
    out = scratch / script.replace("/", "_").replace(".py", "") / "result.json"
    out.parent.mkdir()
    done = subprocess.run(smoke_command(script, out), env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    return done, out

  with concurrent.futures.ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
    yield {script: pool.submit(run, script) for script in selected}


@pytest.mark.slow
@pytest.mark.parametrize("script", list(PRINTS))
def test_benchmark_smoke_run_prints_its_figures(smoke_runs, script):
  if script in NEEDS_TORCH and torch_python() is None:
    pytest.skip("torch is not installed (the peers' benchmarks compare against it)")
  done, out = smoke_runs[script].result()
  tail = f"\n--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
  assert done.returncode == 0, f"benchmarks/{script} --smoke failed{tail}"
  assert re.search(PRINTS[script], done.stdout), (
      f"benchmarks/{script} --smoke printed no figures{tail}")
  if script in WRITE_OUT:
    assert isinstance(json.loads(out.read_text()), dict)
