"""The class-weight and proxy losses in whole runs (slow): ``--config.loss.name=X`` alone trains
from experiments/contrastive.py (the head and batches follow the loss), and a run trained with a
learned-proxy loss resumes and is read back by predict (embed, index, search) and export, whose
checkpoints hold the proxies beside the model (``params["loss"]``)."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from experiments import contrastive, default
from siamese_jax import checkpoints, experiment, export, predict
from siamese_jax.losses import objective
from tests.helpers import REPO_ROOT, main_command, repo_env, tiny_config
from tests.test_losses_proxies import NEW_LOSSES
from tests.test_predict import write_pngs

pytestmark = pytest.mark.slow
QUICK = {"plots.latent": False, "plots.animation": False, "eval.pairs": 100}


@pytest.fixture(scope="module")
def proxy_run(tmp_path_factory, tfds_dir):
  """python main.py --config experiments/contrastive.py --config.loss.name=proxy_anchor, a few
  steps."""
  workdir = tmp_path_factory.mktemp("proxy_anchor") / "run"
  result = subprocess.run(
      main_command(workdir, tfds_dir, "--config.loss.name=proxy_anchor",
                   "--config.train.epochs=1", "--config.train.steps_per_epoch=4",
                   "--config.train.steps_per_call=2", "--config.train.batch_size=32"),
      cwd=REPO_ROOT, env=repo_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, tfds_dir


def test_a_proxy_run_saves_its_proxies_and_resumes(proxy_run):
  workdir, tfds_dir = proxy_run
  config, state = checkpoints.load_trained(workdir)
  assert config.model.head == "distance" and config.model.num_classes == 10
  proxies = state.params[objective.LOSS_PARAMS]["proxies"]
  assert proxies.shape[0] == 10 and np.all(np.isfinite(proxies))
  # the fixture's flags (tests.helpers.main_command) with one more epoch
  more = default.override(contrastive.get_config(), {
      "data.tfds_data_dir": tfds_dir, "plots.latent": False, "eval.pairs": 100,
      "loss.name": "proxy_anchor", "train.epochs": 2, "train.steps_per_epoch": 4,
      "train.steps_per_call": 2, "train.batch_size": 32})
  experiment.train_and_evaluate(more, str(workdir))  # resumes from epoch 1
  _, resumed = checkpoints.load_trained(workdir, "latest")
  assert int(resumed.step) == 8  # 4 steps restored + 4 more, not 4 from scratch
  assert not np.allclose(resumed.params[objective.LOSS_PARAMS]["proxies"], proxies)


def test_predict_and_export_read_a_proxy_run(proxy_run, tmp_path, capsys):
  workdir, _ = proxy_run
  from siamese_jax import idx
  from tests.test_inference import SAMPLE
  images = idx.read_idx(str(SAMPLE / "t10k-images-idx3-ubyte.gz"))[:4]
  write_pngs(tmp_path / "gallery", images, ["a/0.png", "a/1.png", "b/2.png", "b/3.png"])
  assert predict.main(["index", "--workdir", str(workdir), "--out", str(tmp_path / "i.npz"),
                       str(tmp_path / "gallery")]) == 0
  assert predict.main(["search", "--index", str(tmp_path / "i.npz"), "--k", "2",
                       str(tmp_path / "gallery" / "a" / "0.png")]) == 0
  assert predict.main(["embed", "--workdir", str(workdir), "--out", str(tmp_path / "e.npz"),
                       str(tmp_path / "gallery")]) == 0
  assert np.load(tmp_path / "e.npz")["embeddings"].shape[0] == 4
  assert export.main(["--workdir", str(workdir), "--out", str(tmp_path / "export"),
                      "--no_saved_model"]) == 0
  assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n in NEW_LOSSES if n != "proxy_anchor"])
def test_loss_name_alone_trains_from_the_contrastive_experiment(name, tmp_path, tfds_dir):
  config = tiny_config("contrastive", tfds_dir, **QUICK, **{
      "loss.name": name, "train.epochs": 1, "train.steps_per_epoch": 4,
      "train.steps_per_call": 2})
  summary = experiment.train_and_evaluate(config, str(tmp_path / name))
  saved, state = checkpoints.load_trained(tmp_path / name)
  assert saved.model.head == "distance" and objective.LOSS_PARAMS in state.params
  last = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
  assert np.isfinite(last["train_loss"]) and np.isfinite(last["train_grad_norm"])
  assert 0 <= summary["test"]["roc_auc"] <= 1


def test_a_proxy_run_without_model_num_classes_still_loads_its_proxies(proxy_run, tmp_path):
  """The loss's learned parameters are restored with the shapes the checkpoint holds, so a
  config.json without model.num_classes (an older run, or one edited by hand) still loads, with
  the very proxies it trained."""
  workdir, _ = proxy_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  saved = json.loads((copy / "config.json").read_text())
  saved["model"]["num_classes"] = None
  (copy / "config.json").write_text(json.dumps(saved))
  loaded = checkpoints.load_trained(copy)
  original = checkpoints.load_trained(workdir)
  loaded_state, original_state = loaded[1], original[1]
  np.testing.assert_array_equal(loaded_state.params["loss"]["proxies"],
                                original_state.params["loss"]["proxies"])
