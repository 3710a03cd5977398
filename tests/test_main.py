"""main.py and the run loop end to end: outputs, resume, a workdir of another config, clear
one-line errors for bad flags. Every test trains or starts main.py: all are slow."""

import json
import subprocess
import sys
import time

import pytest

from siamese_jax import config_checks, experiment
from tests.helpers import REPO_ROOT, main_command, repo_env, tiny_config

pytestmark = pytest.mark.slow


def tiny(experiment, tfds_dir, epochs=2):
  return tiny_config(experiment, tfds_dir, **{"train.epochs": epochs})


def test_run_writes_every_output(tmp_path, tfds_dir):
  workdir = tmp_path / "run"
  summary = experiment.train_and_evaluate(tiny("contrastive", tfds_dir), str(workdir))
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
  record = json.loads(lines[-1])
  for key in ("train_loss", "val_accuracy", "val_roc_auc", "examples_per_second", "step"):
    assert key in record
  assert not any(key.startswith("test") for key in record), "test data is not looked at per epoch"
  saved = json.loads((workdir / "summary.json").read_text())
  assert saved["steps"] == 12 == summary["steps"]
  assert saved["seed"] == 0 and saved["config"]["loss"]["name"] == "contrastive"
  assert 0.0 <= saved["test"]["accuracy_fixed"] <= 1.0 and "jax" in saved["versions"]
  assert saved["best"]["metric"] == "val_roc_auc" and saved["best"]["epoch"] in (1, 2)
  best_record = json.loads(lines[saved["best"]["epoch"] - 1])
  assert saved["best"]["value"] == max(json.loads(line)["val_roc_auc"] for line in lines)
  assert best_record["val_roc_auc"] == saved["best"]["value"]
  validation = saved["splits"]["validation"]
  assert validation["held_out_of"] == "train" and validation["by"] == "images"
  assert len(validation["validation_indices"]) == saved["splits"]["validation"]["shape"][0]
  assert saved["splits"]["test"]["split"] == "test"
  calibration = json.loads((workdir / "calibration.json").read_text())
  assert set(calibration["checkpoints"]) >= {"12"} and "far" in calibration["checkpoints"]["12"]["test"]
  assert list(workdir.glob("events.out.tfevents.*")), "no TensorBoard events"
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [6, 12]  # numbered by step: 6 steps an epoch
  for name in ("latent_epoch001.png", "latent_epoch002.png", "latent.gif", "curves.png",
               "distances.png", "roc.png"):
    assert (workdir / "plots" / name).stat().st_size > 0, name
  assert not list(workdir.rglob("*.tmp"))


def test_resume_continues_the_step_count(tmp_path, tfds_dir):
  workdir = tmp_path / "run"
  experiment.train_and_evaluate(tiny("contrastive", tfds_dir, epochs=1), str(workdir))
  summary = experiment.train_and_evaluate(tiny("contrastive", tfds_dir, epochs=3),
                                          str(workdir))
  assert summary["steps"] == 18 and summary["epochs"] == 3
  epochs = [json.loads(line)["epoch"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert epochs == [1, 2, 3]


def test_triplet_config_runs(tmp_path, tfds_dir):
  config = tiny("triplet", tfds_dir, epochs=1)
  config.plots.latent = False
  summary = experiment.train_and_evaluate(config, str(tmp_path / "triplet"))
  assert summary["steps"] == 6 and "fraction_active" in str(summary["final"])


def test_workdir_of_another_config_is_refused_unless_overwrite(tmp_path, tfds_dir):
  workdir = tmp_path / "run"
  config = tiny("contrastive", tfds_dir, epochs=1)
  config.plots.latent = False
  experiment.train_and_evaluate(config, str(workdir))
  finished = {name: (workdir / name).read_bytes() for name in ("summary.json", "metrics.jsonl")}
  config.loss.margin = 2.0
  with pytest.raises(config_checks.ConfigError, match="another config.*loss.*overwrite=True"):
    experiment.train_and_evaluate(config, str(workdir))
  config.loss.margin = 1.0
  config.model.encoder = "mlp_2d"
  with pytest.raises(config_checks.ConfigError, match="another config .*model"):
    experiment.train_and_evaluate(config, str(workdir))
  assert finished == {name: (workdir / name).read_bytes() for name in finished}  # untouched
  config.train.overwrite = True
  assert experiment.train_and_evaluate(config, str(workdir))["steps"] == 6


@pytest.mark.parametrize("override,message", [
    ("--config.loss.margin=-1", "loss.margin=-1.0 must be a positive number"),
    ("--config.optimizer.name=lamb", "optimizer.name='lamb' is not known"),
    ("--config.train.batch_size=100000", "larger than the 7201 training images"),
    ("--config.train.epochs=abc", "invalid literal for int()"),
    ("--config.train.nosuch=1", "unknown config key 'nosuch'"),
])
def test_bad_flags_fail_with_one_line(tmp_path, tfds_dir, override, message):
  result = subprocess.run(
      main_command(tmp_path / "cli", tfds_dir, "--config.train.epochs=1",
                   "--config.train.steps_per_epoch=2", override),
      cwd=REPO_ROOT, env=repo_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert message in result.stderr and "Traceback" not in result.stderr
  error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(error_lines) == 1, result.stderr


def test_help_explains_the_flags():
  result = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0
  for text in ("--config", "--workdir", "loss.margin", "train.resume"):
    assert text in result.stdout
  from siamese_jax import losses
  for name in losses.OBJECTIVES:  # every loss.name, and the defaults a loss declares
    assert f" {name}," in result.stdout or f" {name}\n" in result.stdout, name
  assert "unless set, the loss's own: " in result.stdout and "arcface 28.6" in result.stdout


def test_omniglot_default_tiny_trains_the_cosine_classifier_and_reports_one_shot(tmp_path,
                                                                                  tfds_dir):
  """experiments/omniglot.py:tiny end to end (issue 16's default): a cosine classifier over the
  small1 characters and their rotations, one-shot on small2's unseen alphabets and on the
  validation classes."""
  from tests.helpers import SHARED_DATA
  if not (SHARED_DATA / "omniglot").is_dir():
    pytest.skip(f"{SHARED_DATA / 'omniglot'} not found")
  config = tiny_config("omniglot", tfds_dir, **{
      "data.dir": str(SHARED_DATA / "omniglot"), "plots.latent": False, "model.filters": 8,
      "model.embedding_dim": 16})
  assert config.model.head == "cosine_classifier" and config.data.rotation_classes
  summary = experiment.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["steps"] == 12
  assert summary["splits"]["validation"]["by"] == "classes"
  per_character = 8 if config.data.mirror_classes else 4  # 4 rotations, each also mirrored
  trained_classes = per_character * (
      136 - len(summary["splits"]["validation"]["validation_classes"]))
  assert summary["config"]["model"]["num_classes"] == trained_classes
  for way in ("5_way", "20_way"):
    assert 0.0 <= summary["test"]["one_shot"][way] <= 1.0
  assert set(summary["validation"]["one_shot"]) == {"5_way", "10_way"}


@pytest.mark.bad_input
@pytest.mark.parametrize("flags,message", [
    (["--coordinator_address=localhost:1", "--num_processes=2", "--process_id=1",
      "--distributed_timeout=2"], "--coordinator_address=localhost:1: nothing answers there"),
    (["--coordinator_address=notanaddress", "--num_processes=2", "--process_id=1"],
     "--coordinator_address='notanaddress' is not host:port"),
    ([], "--distributed: cannot join"),
])
def test_distributed_without_a_reachable_coordinator_is_one_line_not_a_hang(tmp_path, flags,
                                                                             message):
  started = time.monotonic()
  result = subprocess.run(
      [sys.executable, "main.py", "--config", "experiments/contrastive.py:tiny", "--workdir",
       str(tmp_path / "run"), "--distributed", *flags],
      cwd=REPO_ROOT, env=repo_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr
  assert time.monotonic() - started < 60


def test_an_allocation_failure_in_the_step_ends_main_with_one_line_naming_the_keys(
    tmp_path, tfds_dir, monkeypatch, capsys):
  """issue 27 problem 3: XLA's RESOURCE_EXHAUSTED (a JaxRuntimeError, raised where a compiled
  call runs) comes out of main.py as one line that says which keys to lower."""
  import jax

  import main
  from siamese_jax import caches, train

  def out_of_memory_call(*unused_args, **unused_kwargs):
    def call(*unused):
      raise jax.errors.JaxRuntimeError(
          "RESOURCE_EXHAUSTED: Out of memory allocating 37024068352 bytes.\n"
          "  (while running replica 0 and partition 0 of a replicated computation)")
    return call

  monkeypatch.setattr(train, "make_train_epoch", out_of_memory_call)
  monkeypatch.setattr(caches, "enable_compilation_cache", lambda: None)
  argv = ["main.py", "--config=experiments/contrastive.py:tiny", "--workdir",
          str(tmp_path / "run"), f"--config.data.tfds_data_dir={tfds_dir}",
          "--config.train.steps_per_call=2"]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  main.FLAGS(argv)
  try:
    code = main.main(["main.py"])
  finally:
    main.FLAGS.unparse_flags()
  err = capsys.readouterr().err  # also tfds's preparation bars, when it prepares the sample
  assert code == 2 and "Traceback" not in err
  errors = [line for line in err.splitlines() if "error" in line.lower()]
  assert len(errors) == 1 and errors[0].startswith("error: out of memory"), err
  for text in ("37024068352 bytes", "train.steps_per_call (now 2)", "train.batch_size (32)",
               "data.image_size", "model.embedding_dim", "train.program_budget_mb"):
    assert text in err, err
