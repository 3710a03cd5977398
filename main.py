"""Trains a Siamese / metric-learning model from an experiment config.

  python main.py --config experiments/contrastive.py
  python main.py --config experiments/triplet.py --workdir runs/triplet --config.train.epochs=3
  python main.py --config experiments/contrastive.py --config.data.name=fashion_mnist

Every config key can be overridden as --config.<section>.<key>=value; siamese_jax/config_keys.py
lists them all. Outputs go to --workdir: metrics.jsonl, summary.json, TensorBoard events,
checkpoints/ (orbax: the last N and the best) and plots/. Rerunning into the same workdir
resumes from its last checkpoint.

Multi-process (one process per host of a Cloud TPU pod slice, or several on one machine): add
--distributed to every process; it calls jax.distributed.initialize() before anything touches a
device. TPU pods, SLURM and Open MPI need nothing else; elsewhere also give --coordinator_address
(host:port of process 0), --num_processes and --process_id. All processes train one model on the
mesh of all their devices; process 0 writes the outputs, checkpoints go to the shared --workdir.

Compiled programs and decoded datasets are kept in a user cache folder (~/.cache/siamese_jax, or
$SIAMESE_JAX_CACHE_DIR; SIAMESE_JAX_CACHE_DIR=off turns it off), so a second run starts sooner.
"""

import gc
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # tfds imports TensorFlow: keep it quiet
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from siamese_jax import config_keys  # noqa: E402



def _config_help() -> str:
  """Every declared key with its default, meaning and (for names) the accepted choices."""
  from siamese_jax import config_checks, losses  # the tables that resolve names
  choices, readers, own = config_checks.choices(), losses.readers(), losses.own_defaults()
  lines = ["", "Config keys (siamese_jax/config_keys.py; override with --config.<key>=value):"]
  for key in config_keys.KEYS:
    value = key.default.get() if hasattr(key.default, "get") else key.default
    text = key.help + (f"; one of {', '.join(choices[key.path])}" if key.path in choices else "")
    text += f" (read by loss.name {', '.join(readers[key.path])})" if key.path in readers else ""
    text += (f"; unless set, the loss's own: {', '.join(f'{n} {v}' for n, v in own[key.path].items())}"
             if key.path in own else "")
    lines.append(f"  {key.path:<28} {value!s:<16} {text}")
  return "\n".join(lines)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. experiments/contrastive.py. Override any key "
    "with --config.<section>.<key>=value (see siamese_jax/config_keys.py for all keys).",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Output folder (default: runs/<config name>). Rerunning "
                    "into the same folder resumes from its last checkpoint.")
flags.DEFINE_bool("distributed", False, "Join a multi-process run: jax.distributed.initialize() "
                  "before touching devices (auto-detected on TPU pods, SLURM, Open MPI).")
flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0 "
                    "where auto-detection does not apply (e.g. localhost:12345).")
flags.DEFINE_integer("num_processes", None, "With --distributed: how many processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index, 0 to "
                     "num_processes - 1.")
flags.DEFINE_integer("distributed_timeout", 120, "With --distributed: seconds to wait for the "
                     "coordinator (and the other processes) before giving up with one error line.")


def _default_workdir(config_path: str) -> str:
  return str(pathlib.Path("runs") / pathlib.Path(config_path).stem)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.distributed:
    problem = _join_distributed()
    if problem is not None:
      print(f"error: {problem}", file=sys.stderr)
      return 2
  from siamese_jax import (caches, checkpoints, config_checks, data, experiment,  # after flags:
                           program_memory)  # fast --help
  caches.enable_compilation_cache()  # ~/.cache/siamese_jax/jax; SIAMESE_JAX_CACHE_DIR=off: none
  config_path = FLAGS["config"].config_filename
  workdir = FLAGS.workdir or _default_workdir(config_path)
  try:
    experiment.train_and_evaluate(FLAGS.config, workdir)
  except (config_checks.ConfigError, data.DataFileError, checkpoints.CheckpointError,
          experiment.TrainingDiverged) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except experiment.Preempted as stop:
    print(f"preempted: {stop}", file=sys.stderr)
    return 0
  except (RuntimeError, MemoryError) as error:  # XLA's RESOURCE_EXHAUSTED is a RuntimeError
    if program_memory.out_of_memory_error(error) is None:
      raise
    print("error: " + program_memory.out_of_memory_advice(
        program_memory.out_of_memory_error(error), FLAGS.config), file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"\ninterrupted: finished epochs are checkpointed in {workdir}; rerun the same "
          "command to resume", file=sys.stderr)
    return 130
  return 0


def _coordinator_problem(address: str, timeout: float) -> str | None:
  """Why --coordinator_address cannot be joined (malformed, or nothing answers there within
  ``timeout`` seconds), or None. JAX itself would abort the process (SIGABRT) after its own
  timeout rather than raise."""
  import socket
  import time
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    return (f"--coordinator_address={address!r} is not host:port; pass process 0's address, e.g. "
            "localhost:12345")
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=max(
          0.1, min(2.0, deadline - time.monotonic()))):
        return None
    except OSError as error:
      if time.monotonic() >= deadline:
        return (f"--coordinator_address={address}: nothing answers there after {timeout:g} s "
                f"({error.strerror or error}); start process 0 first, check host:port, or raise "
                "--distributed_timeout")
      time.sleep(0.2)


def _join_distributed() -> str | None:
  """jax.distributed.initialize() before anything touches a device; a one-line problem instead
  of a traceback or an abort (None: joined)."""
  import jax
  address, timeout = FLAGS.coordinator_address, FLAGS.distributed_timeout
  if address is not None and FLAGS.process_id not in (None, 0):  # process 0 is the coordinator
    problem = _coordinator_problem(address, timeout)
    if problem is not None:
      return problem
  elif address is not None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
      return _coordinator_problem(address, 0)
  try:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               initialization_timeout=int(timeout))
  except Exception as error:  # noqa: BLE001 - jax raises ValueError, IndexError, RuntimeError
    text = " ".join(str(error).split())[:200] or type(error).__name__
    return (f"--distributed: cannot join ({text}); give --coordinator_address host:port, "
            "--num_processes and --process_id where the cluster is not detected")
  return None


def _config_argument(argv) -> str | None:
  """The value of --config (``--config X`` or ``--config=X``) in ``argv``, else None."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _fail(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _last_traceback_line(message: str) -> str:
  """The exception line at the end of a traceback's text, without its class name."""
  lines = [line.strip() for line in message.replace("\\n", "\n").splitlines() if line.strip()]
  last = lines[-1].strip("'\"") if lines else message
  head, _, rest = last.partition(": ")
  return rest if rest and head.replace(".", "").replace("_", "").isalnum() else last


def _parse_flags(argv):
  """absl flag parsing, with a one-line error for bad flags and config overrides."""
  if any(arg in ("-h", "--help", "-?", "--helpshort") for arg in argv[1:]):
    global __doc__
    __doc__ += _config_help()
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)  # absl's own --help exits 1
  config_argument = _config_argument(argv)
  if config_argument is not None:
    config_file = config_argument.split(":", 1)[0]
    if not os.path.isfile(config_file):
      _fail(f"--config {config_file!r}: no such file; pass an experiment config such as "
            "experiments/contrastive.py (optionally :tiny)")
  try:
    return FLAGS(argv)
  except Exception as error:  # config_flags raises AttributeError/KeyError/TypeError too
    if "Traceback (most recent call last)" in str(error):  # get_config(variant) raised
      _fail(f"--config {config_argument}: {_last_traceback_line(str(error))}")
    message = str(error).replace("\\'", "'").replace("\\n", " ")
    if len(message) > 1 and message[0] in "'\"" and message[-1] == message[0]:
      message = message[1:-1]
    message = " ".join(message.split())
    if isinstance(error, (AttributeError, KeyError)):
      message = f"unknown config key {message}"
    print(f"error: {message} (see python main.py --help for the config keys)", file=sys.stderr)
    sys.exit(2)


def run():
  flags.mark_flag_as_required("config")
  logging.set_verbosity(logging.WARNING)
  try:
    app.run(main, flags_parser=_parse_flags)
  finally:
    # JAX, flax, scikit-learn and matplotlib leave ~1M objects whose collection at interpreter
    # exit took 0.6 s of every run (0.74 -> 0.15 s frozen); exit handlers and threads still run.
    gc.freeze()


if __name__ == "__main__":
  run()
