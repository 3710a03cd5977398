"""The user cache folder: XLA's compiled programs and decoded datasets, kept between runs.

A run spends seconds compiling the same programs and decoding the same PNGs every time; both are
kept in ``cache_dir()``: ``$SIAMESE_JAX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/siamese_jax``,
else ``~/.cache/siamese_jax``. ``SIAMESE_JAX_CACHE_DIR=off`` (or empty) turns both off.

- ``<cache>/jax``: JAX's persistent compilation cache (``enable_compilation_cache``). JAX keys an
  entry on the program, the compiler options, the devices and the jax/jaxlib versions, so a stale
  entry is never used; ``JAX_COMPILATION_CACHE_DIR`` (JAX's own setting) wins where it is set.
- ``<cache>/arrays``: a prepared tfds split decoded to NumPy (``load_arrays`` / ``save_arrays``),
  keyed by the split's files (path, size, mtime) and the resize asked for, so reading it needs
  neither TensorFlow nor a PNG decoder; re-preparing the dataset changes the key.

Everything here is best effort: a cache folder that cannot be written is skipped silently, never
an error, and a run is identical with and without the caches.
"""

import contextlib
import hashlib
import os
import pathlib

import numpy as np

ENV = "SIAMESE_JAX_CACHE_DIR"
_OFF = ("", "off", "0", "false", "none")


def cache_dir() -> pathlib.Path | None:
  """The cache folder (see the module docstring), or None when the caches are off."""
  value = os.environ.get(ENV)
  if value is not None:
    return None if value.strip().lower() in _OFF else pathlib.Path(value).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
  return pathlib.Path(base).expanduser() / "siamese_jax"


def enable_compilation_cache() -> str | None:
  """Turns JAX's persistent compilation cache on in ``<cache>/jax`` (every program, however quick
  to compile) unless a cache folder is already set (JAX_COMPILATION_CACHE_DIR, or by the caller,
  e.g. the tests' conftest) or the caches are off. Returns the folder in use, or None. Call it
  before the first compilation."""
  import jax
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  root = cache_dir()
  if root is None:
    return None
  folder = root / "jax"
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(folder))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return str(folder)


def files_key(paths, *parts) -> str:
  """A key naming ``paths`` as they are now (path, size, mtime) and ``parts`` (e.g. the split and
  image size): it changes when any of the files is written again."""
  digest = hashlib.sha256()
  for path in paths:
    stat = os.stat(path)
    digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
  digest.update(repr(parts).encode())
  return digest.hexdigest()[:32]


def _arrays_path(key: str) -> pathlib.Path | None:
  root = cache_dir()
  return None if root is None else root / "arrays" / f"{key}.npz"


def load_arrays(key: str) -> dict[str, np.ndarray] | None:
  """The arrays saved under ``key``, or None (none saved, caches off, or unreadable)."""
  path = _arrays_path(key)
  if path is None or not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as saved:
      return {name: saved[name] for name in saved.files}
  except (OSError, ValueError):
    return None


def save_arrays(key: str, arrays: dict[str, np.ndarray]) -> None:
  """Saves ``arrays`` under ``key`` (uncompressed .npz, written atomically); skipped silently
  where the cache folder cannot be written."""
  path = _arrays_path(key)
  if path is None:
    return
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except OSError:
    with contextlib.suppress(OSError):
      tmp.unlink(missing_ok=True)
