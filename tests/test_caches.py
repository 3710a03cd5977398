"""siamese_jax.caches: where the user cache is, decoded arrays kept and found again (and read
without TensorFlow), keys that change with the files, and the compilation cache switch."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from siamese_jax import caches, data

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["off", "", "0", "OFF"])
def test_cache_dir_off(monkeypatch, value):
  monkeypatch.setenv(caches.ENV, value)
  assert caches.cache_dir() is None
  assert caches.load_arrays("anything") is None
  caches.save_arrays("anything", {"a": np.zeros(2)})  # no error, nothing written


def test_cache_dir_from_env_then_xdg(monkeypatch, tmp_path):
  monkeypatch.setenv(caches.ENV, str(tmp_path / "c"))
  assert caches.cache_dir() == tmp_path / "c"
  monkeypatch.delenv(caches.ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert caches.cache_dir() == tmp_path / "xdg" / "siamese_jax"


def test_arrays_round_trip_and_key_follows_the_files(monkeypatch, tmp_path):
  monkeypatch.setenv(caches.ENV, str(tmp_path / "cache"))
  source = tmp_path / "split.tfrecord"
  source.write_bytes(b"one")
  key = caches.files_key([source], "train", 28)
  assert key == caches.files_key([source], "train", 28)
  assert key != caches.files_key([source], "train", 32)
  assert caches.load_arrays(key) is None
  arrays = {"image": np.arange(12, dtype=np.uint8).reshape(3, 2, 2, 1), "label": np.arange(3)}
  caches.save_arrays(key, arrays)
  got = caches.load_arrays(key)
  assert set(got) == {"image", "label"}
  for name in arrays:
    np.testing.assert_array_equal(got[name], arrays[name])
    assert got[name].dtype == arrays[name].dtype
  os.utime(source, ns=(1, 1))  # prepared again: another key
  assert caches.files_key([source], "train", 28) != key
  assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_unwritable_cache_is_skipped(monkeypatch, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  monkeypatch.setenv(caches.ENV, str(blocker / "cache"))
  caches.save_arrays("k", {"a": np.zeros(1)})
  assert caches.load_arrays("k") is None


def test_compilation_cache_keeps_a_folder_already_set(tmp_path):
  before = jax.config.jax_compilation_cache_dir  # tests/conftest.py sets pytest's (or None)
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "set_before"))
  try:
    assert caches.enable_compilation_cache() == str(tmp_path / "set_before")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "set_before")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


def test_second_read_of_a_split_needs_no_tensorflow(monkeypatch, tmp_path):
  monkeypatch.setenv(caches.ENV, str(tmp_path / "cache"))
  first = data.load("mnist", "test", data_dir=tmp_path / "tfds", download=False)
  assert list((tmp_path / "cache" / "arrays").glob("*.npz"))
  script = textwrap.dedent(f"""
      import sys
      import numpy as np
      from siamese_jax import data
      again = data.load("mnist", "test", data_dir={str(tmp_path / 'tfds')!r}, download=False)
      np.save({str(tmp_path / 'again.npy')!r}, again.images)
      print("tensorflow" in sys.modules)
  """)
  env = {**os.environ, caches.ENV: str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       check=True, cwd=ROOT)
  assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
  np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), first.images)
