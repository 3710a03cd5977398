"""Faults survived and bad input answered clearly (issue: reliability).

Each test is marked ``fault`` (an injected fault) or ``bad_input`` (a bad input), and ``slow``
where it trains or starts main.py; ``scripts/reliability_report.py`` runs this file and counts
them by marker. Bad command-line flags are tested once, in test_main.py.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import PIL.Image
import orbax.checkpoint as ocp
import pytest
from hypothesis import given, strategies as st

from experiments import contrastive
from siamese_jax import (checkpoints, config_checks, evaluators, experiment, idx, models, train,
                         workdir as workdir_lib)
from siamese_jax.data import protocol
from tests.helpers import REPO_ROOT, main_command, repo_env, tiny_config


def tiny(tfds_dir, epochs=2, **train_overrides):
  return tiny_config("contrastive", tfds_dir, **{
      "train.epochs": epochs, "plots.latent": False,
      **{f"train.{key}": value for key, value in train_overrides.items()}})


def saved_params(workdir, epoch):
  tree = ocp.PyTreeCheckpointer().restore(str(pathlib.Path(workdir) / "checkpoints" / str(epoch)
                                              / "state"))
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree["params"])}


# ----------------------------------------------------------------------------- faults

@pytest.mark.fault
@pytest.mark.slow
def test_fault_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, tfds_dir):
  args = ["--config.train.epochs=3", "--config.train.steps_per_epoch=400",
          "--config.train.steps_per_call=20"]
  env = repo_env()
  reference = tmp_path / "reference"
  subprocess.run(main_command(reference, tfds_dir, *args), cwd=REPO_ROOT, env=env, check=True,
                 capture_output=True, timeout=600)
  killed = tmp_path / "killed"
  process = subprocess.Popen(main_command(killed, tfds_dir, *args), cwd=REPO_ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed / "checkpoints" / "400").exists() and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(0.5)  # well inside epoch 2
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (killed / "checkpoints" / "1200").exists(), "killed too late to test anything"
  subprocess.run(main_command(killed, tfds_dir, *args), cwd=REPO_ROOT, env=env, check=True,
                 capture_output=True, timeout=600)
  want, got = saved_params(reference, 1200), saved_params(killed, 1200)
  assert want.keys() == got.keys()
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  epochs = [json.loads(line)["epoch"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
  assert epochs == [1, 2, 3]


@pytest.mark.fault
@pytest.mark.slow
def test_fault_interrupted_checkpoint_write_leaves_previous_usable(tmp_path, tfds_dir):
  workdir = tmp_path / "run"
  experiment.train_and_evaluate(tiny(tfds_dir, epochs=1), str(workdir))
  # What a kill during orbax's write of checkpoint 2 leaves: a temporary folder, never renamed.
  partial = workdir / "checkpoints" / "12.orbax-checkpoint-tmp-1234567"  # step 12 = epoch 2
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "partial_file").write_bytes(b"\x00" * 100)
  summary = experiment.train_and_evaluate(tiny(tfds_dir, epochs=2), str(workdir))
  assert summary["steps"] == 12 and summary["epochs"] == 2
  assert saved_params(workdir, 12)


@pytest.mark.fault
@pytest.mark.slow
def test_fault_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tfds_dir, monkeypatch):
  real_make_train_epoch = train.make_train_epoch
  calls = {"n": 0}

  def make_poisoned_epoch(*args, **kwargs):
    run = real_make_train_epoch(*args, **kwargs)

    def poisoned(state, data, key):
      state, metrics = run(state, data, key)
      calls["n"] += 1
      if calls["n"] == 3:  # epoch 2's first call: the params and the loss turn NaN
        state = state.replace(params=jax.tree_util.tree_map(lambda p: p * np.nan, state.params))
        metrics = {**metrics, "loss": metrics["loss"].at[1].set(np.nan)}
      return state, metrics
    return poisoned

  monkeypatch.setattr(train, "make_train_epoch", make_poisoned_epoch)
  workdir = tmp_path / "run"
  with pytest.raises(experiment.TrainingDiverged, match=r"contrastive loss became nan at step 8"):
    experiment.train_and_evaluate(tiny(tfds_dir, epochs=3), str(workdir))
  kept = sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert kept == ["6"]  # epoch 1 ends at step 6
  assert all(np.all(np.isfinite(v)) for v in saved_params(workdir, 6).values())


@pytest.mark.fault
def test_fault_unwritable_workdir_is_refused_before_training(tmp_path, tfds_dir):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  with pytest.raises(config_checks.ConfigError, match="cannot create --workdir"):
    experiment.train_and_evaluate(tiny(tfds_dir), str(blocker / "run"))


@pytest.mark.fault
def test_fault_full_disk_is_refused_before_training(tmp_path, tfds_dir, monkeypatch):
  monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 1024))
  with pytest.raises(config_checks.ConfigError, match="MiB free under"):
    experiment.train_and_evaluate(tiny(tfds_dir), str(tmp_path / "run"))


@pytest.mark.fault
@pytest.mark.slow
def test_fault_checkpoint_from_another_model_is_a_clear_error(tmp_path, tfds_dir):
  trained = tmp_path / "trained"
  experiment.train_and_evaluate(tiny(tfds_dir, epochs=1), str(trained))
  other = tiny(tfds_dir, epochs=2)
  other.model.encoder = "mlp_2d"
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  shutil.copytree(trained / "checkpoints", foreign / "checkpoints")
  # Without a config.json the checkpoints' config is unknown: refused before any restore.
  with pytest.raises(config_checks.ConfigError, match="config.json is missing"):
    experiment.train_and_evaluate(other, str(foreign))
  # A config.json that claims this model beside checkpoints of another: the restore names it.
  saved = json.loads((trained / "config.json").read_text())
  saved["model"]["encoder"] = "mlp_2d"
  (foreign / "config.json").write_text(json.dumps(saved))
  with pytest.raises(checkpoints.CheckpointError, match="does not fit this model"):
    experiment.train_and_evaluate(other, str(foreign))


@pytest.mark.fault
@pytest.mark.slow
def test_fault_same_seed_gives_same_metrics(tmp_path, tfds_dir):
  first = experiment.train_and_evaluate(tiny(tfds_dir), str(tmp_path / "a"))
  second = experiment.train_and_evaluate(tiny(tfds_dir), str(tmp_path / "b"))
  timing = ("epoch_seconds", "examples_per_second")
  strip = lambda record: {k: v for k, v in record.items() if k not in timing}
  assert strip(first["final"]) == strip(second["final"])
  assert first["seed"] == 0 == json.loads((tmp_path / "a" / "summary.json").read_text())["seed"]


# ------------------------------------------------------------------------- bad input

BAD_CONFIGS = [
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate=0.0 must be a positive number"),
    ("optimizer.learning_rate", -1e-3, "must be a positive number"),
    ("loss.margin", 0.0, "loss.margin=0.0 must be a positive number"),
    ("loss.margin", -2.0, "loss.margin=-2.0 must be a positive number"),
    ("model.embedding_dim", 0, "model.embedding_dim=0 must be a positive number"),
    ("model.encoder", "resnet", "model.encoder='resnet' is not known"),
    ("loss.name", "arc_face", "loss.name='arc_face' is not known"),
    ("train.batch_size", 0, "train.batch_size=0 must be a positive number"),
    ("data.name", "not_a_dataset", "data.name='not_a_dataset' is not known"),
    ("train.unroll", "yes", "train.unroll='yes' is not known; choose one of auto, always, never"),
    ("model.conv_impl", "fft",
     "model.conv_impl='fft' is not known; choose one of auto, xla, matmul"),
    ("model.dropout_rates", (1.5, 0.0, 0.0), "model.dropout_rates[0]=1.5 must be in [0, 1)"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("key,value,message", BAD_CONFIGS)
def test_bad_input_config_value(key, value, message, tfds_dir, tmp_path):
  config = tiny(tfds_dir)
  section, name = key.split(".")
  with config.unlocked():
    config[section][name] = value
  with pytest.raises(config_checks.ConfigError) as error:
    experiment.train_and_evaluate(config, str(tmp_path / "run"))
  assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.bad_input
@pytest.mark.parametrize("overrides,message", [
    ({"batch_size": 100000}, "larger than the 7201 training images"),
])
def test_bad_input_batch_larger_than_dataset(overrides, message, tfds_dir, tmp_path):
  with pytest.raises(config_checks.ConfigError, match=message):
    experiment.train_and_evaluate(tiny(tfds_dir, **overrides), str(tmp_path / "run"))


@pytest.mark.bad_input
def test_bad_input_pk_that_classes_cannot_fill(tfds_dir, tmp_path):
  config = tiny(tfds_dir)
  config.loss.name = "triplet"
  config.train.classes_per_batch = 11
  with pytest.raises(config_checks.ConfigError, match=r"P x K = 11 x 4 cannot be filled"):
    experiment.train_and_evaluate(config, str(tmp_path / "run"))


CONFIG_KEYS = [(s, k) for s in ("data", "model", "loss", "optimizer", "train", "eval")
               for k in contrastive.get_config()[s]]
random_values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6),
                          st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                          st.tuples(st.floats(-1, 2)))


@pytest.mark.bad_input
@given(changes=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), random_values), max_size=3))
def test_bad_input_fuzzed_configs_are_refused_in_one_line_or_usable(changes):
  config = contrastive.get_config()
  changed = []
  with config.unlocked():
    for (section, key), value in changes:
      try:
        config[section][key] = value
      except (TypeError, ValueError):
        continue  # ml_collections refuses a wrong type at assignment: a clean error too
      changed.append(f"{section}.{key}")
  try:
    config_checks.validate(config)
  except config_checks.ConfigError as error:
    message = str(error)
    assert "\n" not in message and any(key in message for key in changed), (changed, message)
  else:  # accepted: what the run builds from the config next must work
    models.build_model(config.model)
    train.make_optimizer(config.optimizer, 10)
    assert np.isfinite(float(train.make_schedule(config.optimizer, 10)(0)))
    config_checks.unused_keys(config)


IDX_ITEM_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


@st.composite
def idx_like_bytes(draw) -> bytes:
  """A real IDX header (or one with an unknown type code), then a body that may be cut short,
  too long, or exact."""
  code = draw(st.sampled_from([*IDX_ITEM_BYTES, 0x0A]))
  shape = draw(st.lists(st.integers(0, 3), max_size=3))
  size = int(np.prod(shape)) * IDX_ITEM_BYTES.get(code, 1) + draw(st.sampled_from([0, 0, -1, 2]))
  header = bytes([0, 0, code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
  return header + draw(st.binary(min_size=max(size, 0), max_size=max(size, 0)))


@pytest.mark.bad_input
@given(raw=st.one_of(st.binary(max_size=64), idx_like_bytes()))
def test_bad_input_fuzzed_idx_bytes_fail_cleanly_or_round_trip(raw):
  try:
    array = idx.read_idx_bytes(raw, "fuzz")
  except idx.DataFileError as error:
    assert "fuzz" in str(error) and "\n" not in str(error)
  else:  # the declared shape, native byte order, and exactly the bytes after the header
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3]))
    assert array.shape == shape and array.dtype.isnative
    assert array.astype(array.dtype.newbyteorder(">")).tobytes() == raw[4 + 4 * raw[3]:]


# ----------------------------------------------------- damaged run folders and signals (issue 27)

@pytest.fixture
def saved_run(tmp_path, tfds_dir):
  """A run folder as two epochs of ``tiny`` leave it, without training (seconds): config.json and
  the checkpoints of epoch 1 (step 6, the best) and epoch 2 (step 12)."""
  config = tiny(tfds_dir)
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort())
  tx = train.optimizer_from_config(config, total_steps=12)
  state = train.create_train_state(jax.random.key(0), models.build_model(config.model),
                                   [28, 28, 1], tx)
  manager = checkpoints.make_manager(str(workdir / "checkpoints"))
  history = []
  for epoch, step, auc in ((1, 6, 0.9), (2, 12, 0.8)):
    history.append({"epoch": epoch, "step": step, "val_roc_auc": auc})
    checkpoints.save(manager, state.replace(step=step), {"val_roc_auc": auc}, {
        "epoch": epoch, "next_call": 0, "history": list(history), "image_shape": [28, 28, 1],
        "train_seconds": 0.0, "partial": None})
  manager.close()
  return workdir


DAMAGES = {"truncated": lambda raw: raw[:len(raw) // 2], "emptied": lambda raw: b"",
           "garbled": lambda raw: b"\xff\xfe" + raw[2:]}
CHECKPOINT_FILES = ["progress/metadata", "state/_METADATA", "state/_sharding", "metrics/metrics",
                    "state/array_metadatas/process_0", "_CHECKPOINT_METADATA", "state/manifest.ocdbt"]


def damage(workdir, step, name, how):
  path = pathlib.Path(workdir) / "checkpoints" / str(step) / name
  path.write_bytes(DAMAGES[how](path.read_bytes()))


def one_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  assert len(lines) == 1, text
  return lines[0]


@pytest.mark.fault
@pytest.mark.parametrize("how", sorted(DAMAGES))
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_fault_damaged_latest_checkpoint_loads_the_previous_one(saved_run, name, how, capsys):
  damage(saved_run, 12, name, how)
  _, state = checkpoints.load_trained(saved_run, "latest")
  assert int(state.step) == 6
  warning = one_line(capsys.readouterr().err)
  assert warning.startswith("warning: checkpoint 12 in ") and "damaged" in warning


@pytest.mark.fault
def test_fault_every_checkpoint_damaged_is_one_line(saved_run):
  damage(saved_run, 6, "progress/metadata", "garbled")
  damage(saved_run, 12, "state/_METADATA", "emptied")
  for epoch in ("best", "latest"):
    with pytest.raises(checkpoints.CheckpointError, match="no readable checkpoint") as error:
      checkpoints.load_trained(saved_run, epoch)
    assert "\n" not in str(error.value) and "overwrite=True" in str(error.value)


@pytest.mark.fault
def test_fault_predict_and_export_fall_back_from_a_damaged_checkpoint(saved_run, tmp_path):
  damage(saved_run, 6, "state/_METADATA", "truncated")  # the best one
  image = tmp_path / "digit.png"
  PIL.Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
  for command in (["predict", "embed", "--workdir", str(saved_run), "--out",
                   str(tmp_path / "e.npz"), str(image)],
                  ["export", "--workdir", str(saved_run), "--out", str(tmp_path / "out"),
                   "--no_saved_model"]):
    done = subprocess.run([sys.executable, "-m", f"siamese_jax.{command[0]}", *command[1:]],
                          cwd=REPO_ROOT, env=repo_env(), capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "warning: checkpoint 6 in " in done.stderr and "damaged" in done.stderr


@pytest.mark.fault
def test_fault_resume_sets_damaged_and_stray_checkpoints_aside(saved_run):
  damage(saved_run, 12, "progress/metadata", "emptied")
  (saved_run / "checkpoints" / "999999").mkdir()
  aside = saved_run / "damaged_checkpoints"
  lines = checkpoints.set_aside_damaged(saved_run / "checkpoints", aside)
  assert len(lines) == 2 and "999999" in lines[0] and "removed and ignored" in lines[0]
  assert "checkpoint 12" in lines[1] and "resuming from the previous one" in lines[1]
  assert sorted(p.name for p in (saved_run / "checkpoints").iterdir()) == ["6"]
  assert (aside / "12" / "state").is_dir()  # kept for inspection


@pytest.mark.fault
def test_fault_resume_with_damaged_arrays_restores_the_previous_checkpoint(saved_run, tfds_dir):
  damage(saved_run, 12, "state/manifest.ocdbt", "garbled")
  config = tiny(tfds_dir)
  state = train.create_train_state(jax.random.key(1), models.build_model(config.model),
                                   [28, 28, 1], train.optimizer_from_config(config, 12))
  said = []
  manager = checkpoints.make_manager(str(saved_run / "checkpoints"))
  restored, progress = checkpoints.restore_latest_good(
      manager, state, saved_run / "damaged_checkpoints", say=said.append)
  manager.close()
  assert int(restored.step) == 6 and progress["epoch"] == 1
  assert len(said) == 1 and "checkpoint 12" in said[0] and "moved to" in said[0]


@pytest.mark.fault
def test_fault_every_checkpoint_damaged_refuses_to_resume(saved_run):
  damage(saved_run, 6, "state/_METADATA", "emptied")
  damage(saved_run, 12, "state/_METADATA", "emptied")
  with pytest.raises(checkpoints.CheckpointError, match="no readable checkpoint"):
    checkpoints.set_aside_damaged(saved_run / "checkpoints", saved_run / "damaged_checkpoints")


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "", "\xff"])
def test_bad_input_unreadable_config_json_refuses_to_resume(saved_run, tfds_dir, text):
  (saved_run / "config.json").write_bytes(text.encode("latin-1"))
  with pytest.raises(config_checks.ConfigError, match="config.json is not a run's config") as error:
    workdir_lib.prepare(tiny(tfds_dir), saved_run)
  assert "\n" not in str(error.value) and "overwrite=True" in str(error.value)
  assert workdir_lib.prepare(tiny(tfds_dir, overwrite=True), saved_run) is False  # afresh


@pytest.mark.bad_input
def test_bad_input_missing_config_json_with_checkpoints_refuses_to_resume(saved_run, tfds_dir):
  (saved_run / "config.json").unlink()
  with pytest.raises(config_checks.ConfigError, match="config.json is missing"):
    workdir_lib.prepare(tiny(tfds_dir), saved_run)


@pytest.mark.fault
def test_fault_checkpoints_that_is_a_file_is_refused_before_training(saved_run, tfds_dir):
  shutil.rmtree(saved_run / "checkpoints")
  (saved_run / "checkpoints").write_text("not a folder")
  with pytest.raises(config_checks.ConfigError, match="checkpoints is a file"):
    experiment.train_and_evaluate(tiny(tfds_dir), str(saved_run))


@pytest.mark.bad_input
def test_bad_input_workdir_name_not_utf8_is_one_line(tmp_path, tfds_dir):
  workdir = pathlib.Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
  with pytest.raises(config_checks.ConfigError, match="not UTF-8"):
    workdir_lib.prepare(tiny(tfds_dir), workdir)


@pytest.mark.bad_input
@pytest.mark.parametrize("config,message", [
    ("experiments/nonexistent.py", "no such file"),
    ("experiments/contrastive.py:nosuch", "unknown config variant 'nosuch'")])
def test_bad_input_config_file_is_one_line(config, message):
  done = subprocess.run([sys.executable, "main.py", "--config", config], cwd=REPO_ROOT,
                        env=repo_env(), capture_output=True, text=True, timeout=120)
  line = one_line(done.stderr)
  assert done.returncode == 2 and line.startswith("error: --config ") and message in line
  assert "Traceback" not in line and "File " not in line


def signal_at(monkeypatch, module, name, signum=signal.SIGTERM):
  """``module.name`` sends this process ``signum`` before doing what it does."""
  original = getattr(module, name)

  def sending(*args, **kwargs):
    os.kill(os.getpid(), signum)
    return original(*args, **kwargs)
  monkeypatch.setattr(module, name, sending)


@pytest.mark.fault
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_fault_signal_during_data_preparation_stops_cleanly(tmp_path, tfds_dir, monkeypatch,
                                                            signum):
  signal_at(monkeypatch, protocol, "load_datasets", signum)
  with pytest.raises(experiment.Preempted, match="during data preparation"):
    experiment.train_and_evaluate(tiny(tfds_dir), str(tmp_path / "run"))
  assert signal.getsignal(signal.SIGTERM) is not experiment.preemption.StopRequests.handle


@pytest.mark.fault
@pytest.mark.slow
def test_fault_sigterm_during_final_evaluation_stops_and_a_rerun_completes(tmp_path, tfds_dir,
                                                                          monkeypatch):
  workdir = tmp_path / "run"
  with monkeypatch.context() as patch:
    signal_at(patch, evaluators, "summary_figures")
    with pytest.raises(experiment.Preempted, match="during the final evaluation"):
      experiment.train_and_evaluate(tiny(tfds_dir), str(workdir))
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["12", "6"]
  summary = experiment.train_and_evaluate(tiny(tfds_dir), str(workdir))
  assert summary["epochs"] == 2 and summary["steps"] == 12


@pytest.mark.fault
@pytest.mark.slow
def test_fault_sigterm_early_in_main_exits_0_and_a_rerun_completes(tmp_path, tfds_dir):
  workdir = tmp_path / "run"
  command = main_command(workdir, tfds_dir, "--config.train.epochs=1")
  command[3] += ":tiny"
  process = subprocess.Popen(command, cwd=REPO_ROOT, env=repo_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  assert process.stdout.readline().startswith("backend ")  # data preparation starts
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-2000:]
  assert stderr.strip().splitlines()[-1].startswith("preempted: stopped by SIGTERM")
  done = subprocess.run(command, cwd=REPO_ROOT, env=repo_env(), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert json.loads((workdir / "summary.json").read_text())["epochs"] == 1
