"""benchmarks/device: the accelerator run's dry run on the CPU (slow: every part at tiny sizes,
the device image's missing packages hidden) and the pieces it rests on: the tfds-free Omniglot
reader, the hidden packages, the bfloat16 wrapper, the tests plugin's reading of a failure."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import REPO_ROOT

DEVICE_DIR = REPO_ROOT / "benchmarks" / "device"
sys.path.insert(0, str(DEVICE_DIR))

import device_tests  # noqa: E402
import omniglot_zips  # noqa: E402


def test_resize_area_by_a_whole_factor_is_the_block_mean_rounded():
  """The resize the zips' reader uses (the library's NumPy one, no TensorFlow on the device)."""
  from siamese_jax.data import pixels
  images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
  expected = np.round(images.reshape(3, 4, 2, 4, 2, 1).astype(np.float64).mean((2, 4)))
  np.testing.assert_array_equal(pixels.resize_area(images, 4), expected.astype(np.uint8))
  assert pixels.resize_area(images, 8) is images


@pytest.mark.slow  # prepares a tfds dataset from the zip (TensorFlow)
def test_omniglot_from_the_zips_is_the_librarys_omniglot(shared_data, tfds_dir):
  """The same drawings, pixels, labels, alphabets and class names as data.load (in another
  order: tfds shuffles)."""
  from siamese_jax import data
  ours = omniglot_zips.load_split(shared_data / "omniglot", "small1", 28)
  theirs = data.load("omniglot", "small1", image_size=28, data_dir=tfds_dir,
                     source_dir=shared_data / "omniglot")
  assert (ours.num_classes, ours.group_names, ours.class_names) == (
      theirs.num_classes, theirs.group_names, theirs.class_names)

  def in_one_order(split):
    keys = np.concatenate([split.labels[:, None], split.images.reshape(len(split.labels), -1)], 1)
    order = np.lexsort(keys.T[::-1])
    return split.images[order], split.labels[order], split.groups[order]

  for a, b in zip(in_one_order(ours), in_one_order(theirs)):
    np.testing.assert_array_equal(a, b)


def test_the_simulated_device_image_hides_tensorflow_as_if_not_installed():
  script = ("import importlib.util, device_image\n"
            "hidden = device_image.block_absent_modules()\n"
            "assert 'tensorflow' in hidden and 'tensorflow_datasets' in hidden\n"
            "assert importlib.util.find_spec('tensorflow') is None\n"
            "try:\n  import tensorflow_datasets\nexcept ModuleNotFoundError as e:\n"
            "  assert e.name == 'tensorflow_datasets'\nelse:\n  raise AssertionError\n"
            "import numpy, jax, flax, ml_collections, clu.metrics\n")
  subprocess.run([sys.executable, "-c", script], check=True, cwd=DEVICE_DIR, timeout=120,
                 env={**os.environ, "PYTHONPATH": str(DEVICE_DIR)})


def test_bfloat16_compute_runs_the_model_in_bfloat16_and_answers_float32():
  import throughput
  seen = {}

  def apply_fn(variables, x, train=False):
    seen["dtypes"] = (variables["params"]["w"].dtype, x.dtype, train)
    return x @ variables["params"]["w"]

  params = {"w": jnp.ones((3, 2), jnp.float32)}
  x = jnp.full((4, 3), 1.0 / 3, jnp.float32)
  out = throughput.bfloat16_compute(apply_fn)({"params": params}, x, train=True)
  assert seen["dtypes"] == (jnp.bfloat16, jnp.bfloat16, True) and out.dtype == jnp.float32
  grads = jax.grad(lambda p: throughput.bfloat16_compute(apply_fn)({"params": p}, x).sum())(params)
  assert grads["w"].dtype == jnp.float32


def test_a_failure_for_want_of_tfds_is_told_apart_from_other_failures():
  class Info:
    def __init__(self, value):
      self.value = value

  try:
    try:
      raise ModuleNotFoundError("No module named 'tensorflow_datasets'", name="tensorflow_datasets")
    except ModuleNotFoundError as e:
      raise RuntimeError("loading mnist failed") from e
  except RuntimeError as e:
    wrapped = e
  assert device_tests._needs_missing_package(Info(wrapped)) == "tensorflow_datasets"
  assert device_tests._needs_missing_package(Info(ModuleNotFoundError("x", name="torch"))) is None
  assert device_tests._needs_missing_package(Info(AssertionError())) is None


@pytest.mark.slow  # every part at tiny sizes: a few minutes on 2 cores
def test_dry_run_writes_every_parts_json(tmp_path):
  """``run.sh --dry-run`` on the CPU: every part ends "ok" (omniglot may be "skipped" without
  the zips), each throughput row is measured, the tfds-needing test is skipped, not failed."""
  out = tmp_path / "out"
  completed = subprocess.run(
      ["bash", str(DEVICE_DIR / "run.sh"), "--dry-run", "--out", str(out)], cwd=REPO_ROOT,
      env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=1500)
  assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
  files = sorted(p.name for p in out.iterdir())
  assert len(files) <= 8 and "summary.json" in files and "log.txt" in files, files
  summary = json.loads((out / "summary.json").read_text())
  parts = {name: json.loads((out / f"{name}.json").read_text())
           for name in ("peak", "throughput", "koch", "pretrained", "omniglot", "tests")}
  log_tail = (out / "log.txt").read_text()[-4000:]
  for name, result in parts.items():
    allowed = ("ok", "skipped") if name == "omniglot" else ("ok",)
    assert result["status"] in allowed, (name, result, log_tail)
    assert summary["parts"][name]["status"] == result["status"]
  assert set(parts["peak"]["matmul_tflops"]) == {"bfloat16", "float32", "float32_highest"}
  rows = parts["throughput"]["rows"] + parts["koch"]["rows"] + parts["pretrained"]["rows"]
  assert {(r["model"], r["dtype"]) for r in rows} == {
      ("mlp", "float32"), ("mlp", "bfloat16"), ("convnet4", "bfloat16"), ("resnet18", "float32"),
      ("koch", "float32"), ("resnet50", "float32"), ("vit_small", "bfloat16")}
  for row in rows:
    assert row["steps_per_s"] > 0 and row["flops_per_step"] > 0, row
    assert row["pct_of_matmul_peak"] > 0 and np.isfinite(row["last_loss"]), row
  if parts["omniglot"]["status"] == "ok":
    assert parts["omniglot"]["epochs"] == 2 and 0 <= parts["omniglot"]["test_20_way"] <= 1
  tests = parts["tests"]
  assert tests["counts"] == {"passed": 2, "skipped": 1}, tests
  assert "absent on the device image" in next(t["reason"] for t in tests["tests"]
                                               if t["outcome"] == "skipped")
  assert "siamese_jax device run (dry run)" in completed.stdout
