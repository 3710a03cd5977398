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


def is_utf8(path) -> bool:
  """Whether ``path``'s name encodes as UTF-8 (a name of other bytes decodes to surrogates)."""
  try:
    os.fspath(path).encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def prepare(config, workdir: pathlib.Path) -> bool:
  """Creates ``workdir`` and writes config.json; True if it holds a run of this config to resume.

  A workdir holding a run of another config is refused (ConfigError) unless
  train.overwrite, which deletes that run's checkpoints, metrics and summary.
  """
  if not is_utf8(workdir):  # tensorstore (orbax's writer) takes UTF-8 paths only
    raise config_checks.ConfigError(f"--workdir {str(workdir)!r}: its name is not UTF-8, which "
                                    "orbax cannot write to; choose a folder name in UTF-8")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise config_checks.ConfigError(f"cannot create --workdir {workdir} ({error.strerror}); "
                                    "choose a writable folder") from None
  if is_primary():
    config_checks.check_writable(workdir)
  saved = workdir / CONFIG_FILE
  current = json.loads(config.to_json_best_effort())
  if _check_run_files(workdir, config.train.overwrite):  # {} when unreadable and overwrite
    previous = _read_previous_config(saved, config.train.overwrite) if saved.exists() else {}
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


OVERWRITE = "--config.train.overwrite=True"


def _check_run_files(workdir: pathlib.Path, overwrite: bool) -> bool:
  """Whether ``workdir`` holds a run (config.json or checkpoints); ConfigError (one line) for a run folder whose files cannot be resumed: ``checkpoints`` that
  is not a folder (orbax would wait forever at the first save), or checkpoints without the
  config.json that says what they are.

  A workdir holding checkpoints but no config.json is refused rather than resumed with the
  current config: the config decides which model, loss and data the checkpoints continue, a
  config that differs in the loss, the data or the optimiser restores without an error (only
  the model's shapes are checked), and the run's predict/export read config.json, so resuming
  would silently pair the checkpoints with a config they were not trained with. Restoring
  config.json (or starting afresh with train.overwrite) is the user's call, not ours."""
  checkpoint_dir = workdir / "checkpoints"
  if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
    raise config_checks.ConfigError(
        f"{checkpoint_dir} is a file, not the checkpoint folder; move it out of {workdir} (or "
        "delete it), or choose another --workdir")
  holds_checkpoints = checkpoint_dir.is_dir() and any(
      path.name.isdigit() for path in checkpoint_dir.iterdir())
  if holds_checkpoints and not (workdir / CONFIG_FILE).exists() and not overwrite:
    raise config_checks.ConfigError(
        f"{workdir / CONFIG_FILE} is missing, so the config of the checkpoints in "
        f"{checkpoint_dir} is unknown; put that run's config.json back to resume it, pass "
        f"{OVERWRITE} to train afresh, or choose another --workdir")
  return holds_checkpoints or (workdir / CONFIG_FILE).exists()


def _read_previous_config(path: pathlib.Path, overwrite: bool) -> dict:
  """The config a run in the workdir saved, upgraded to the present key names; {} (a config
  that differs from any) when it is unreadable and ``overwrite``, else ConfigError (one line)."""
  try:
    previous = json.loads(path.read_bytes().decode("utf-8"))
    reason = None if isinstance(previous, dict) and previous else "not a JSON object of sections"
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else "empty"
  if reason is None:
    return config_keys.upgrade(previous)
  if overwrite:
    return {}
  raise config_checks.ConfigError(
      f"{path} is not a run's config ({reason}); put that run's config.json back to resume it, "
      f"pass {OVERWRITE} to train afresh, or choose another --workdir")
