"""A run's folder: created and checked before training, compared with the config of a run it may
hold, and written atomically (JSON and metrics.jsonl) by process 0 only."""

import json
import os
import pathlib
import shutil

import jax

from siamese_jax import config_checks, config_keys

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CALIBRATION_FILE = "calibration.json"  # the verification thresholds inference uses
CONFIG_FILE = "config.json"
# Keys that may change between a run and its resumption (epochs, resume, overwrite, ...).
RESUMABLE_SECTIONS = ("train",)


def is_primary() -> bool:
  """Whether this process writes the run's files: process 0 of a multi-process run (every
  process runs the same computations; checkpoints are written by orbax from all of them)."""
  return jax.process_index() == 0


def write_json(path: pathlib.Path, obj) -> None:
  """``obj`` as indented JSON at ``path``, replaced atomically (never half-written)."""
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
  os.replace(tmp, path)


def write_metrics(workdir: pathlib.Path, records: list[dict]) -> None:
  """metrics.jsonl holding exactly ``records`` (on resume: the epochs of the checkpoint)."""
  path = workdir / METRICS_FILE
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text("".join(json.dumps(record) + "\n" for record in records))
  os.replace(tmp, path)


def append_metrics(workdir: pathlib.Path, record: dict) -> None:
  with open(workdir / METRICS_FILE, "a") as f:
    f.write(json.dumps(record) + "\n")


def prepare(config, workdir: pathlib.Path) -> bool:
  """Creates ``workdir`` and writes config.json; True if it holds a run of this config to resume.

  A workdir holding a run of another config is refused (ConfigError) unless
  train.overwrite, which deletes that run's checkpoints, metrics and summary.
  """
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise config_checks.ConfigError(f"cannot create --workdir {workdir} ({error.strerror}); "
                                    "choose a writable folder") from None
  if is_primary():
    config_checks.check_writable(workdir)
  saved = workdir / CONFIG_FILE
  current = json.loads(config.to_json_best_effort())
  if saved.exists():
    previous = config_keys.upgrade(json.loads(saved.read_text()))
    differs = {k for k in set(previous) | set(current) if k not in RESUMABLE_SECTIONS
               and previous.get(k) != current.get(k)}
    if differs and not config.train.overwrite:
      raise config_checks.ConfigError(
          f"{workdir} holds a run of another config (differs in: {', '.join(sorted(differs))}); "
          "choose another --workdir or pass --config.train.overwrite=True")
    if differs and is_primary():
      shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
      for name in (METRICS_FILE, SUMMARY_FILE):
        (workdir / name).unlink(missing_ok=True)
  if is_primary():
    write_json(saved, current)
  return (workdir / "checkpoints").exists() and config.train.resume
