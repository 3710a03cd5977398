"""Model choice and threshold on a user's small dataset (issue 27, problem 1): calibration on every
distinct validation pair, the one-line notices and fallbacks of evaluate.calibrate and
evaluators.calibration when the validation part is too small or a FAR target unmeasurable, the
end-of-training line that names what predict uses, and (slow) a tiny run on a folder of 37
Omniglot characters whose default threshold does not verify noise or blank images as "same"."""

import json

import numpy as np
import PIL.Image
import pytest

from benchmarks import small_folder_threshold
from siamese_jax import config_keys, evaluate, inference
from siamese_jax.data import files


def _scores(num_same, num_different, seed=0):
  """Distances of pairs: same pairs near 0.3, different ones near 0.9, overlapping."""
  rng = np.random.default_rng(seed)
  scores = np.concatenate([rng.normal(0.3, 0.15, num_same), rng.normal(0.9, 0.15, num_different)])
  return scores, np.arange(num_same + num_different) < num_same


def test_a_far_the_impostors_cannot_measure_is_said_and_falls_back_to_rejecting_them_all():
  scores, same = _scores(200, 500)
  chosen = evaluate.calibrate(scores, same, False, far=1e-3)  # needs 3,000 different pairs
  assert "\n" not in chosen["notice"] and "3000" in chosen["notice"] and "500" in chosen["notice"]
  assert chosen["threshold"] < scores[~same].min()  # every validation impostor rejected
  assert chosen["validation"]["far"] == 0.0
  assert chosen["validation"]["different_pairs"] == 500
  measurable = evaluate.calibrate(scores, same, False, far=1e-2)  # 500 >= 300
  assert measurable["notice"] is None and measurable["validation"]["far"] <= 1e-2


def test_too_few_validation_pairs_take_the_stricter_threshold_and_say_so():
  scores, same = _scores(40, 60)
  best = evaluate.best_threshold(scores, same, False)
  chosen = evaluate.calibrate(scores, same, False)
  assert "too small" in chosen["notice"] and "40 same, 60 different" in chosen["notice"]
  assert chosen["threshold"] == min(best, evaluate.threshold_at_far(scores, same, 0.0, False))
  assert chosen["validation"]["far"] == 0.0
  big = evaluate.calibrate(*_scores(400, 600), False)
  assert big["notice"] is None
  logits = evaluate.calibrate(-scores, same, True, too_small="3 classes")
  assert "3 classes" in logits["notice"] and logits["validation"]["far"] == 0.0


# --------------------------------------------------- a tiny run on 37 + 3 Omniglot characters

@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
  """training/ (37 characters) and testing/ (3) of 10 28 x 28 PNGs each, from Omniglot small1:
  the shape of the issue's face folder (37 + 3 people x 10)."""
  zip_path = files.known_places("omniglot")[-1] / "images_background_small1.zip"
  if not zip_path.is_file():
    pytest.skip(f"{zip_path} not found (see ../shared/data/README.md)")
  return small_folder_threshold.write_folder(tmp_path_factory.mktemp("small") / "chars")


@pytest.fixture(scope="module")
def small_run(small_folder, tmp_path_factory):
  """(workdir, printed output) of a :tiny contrastive run on ``small_folder`` with the default
  validation_fraction 0.1: 3 or 4 validation characters."""
  from siamese_jax import experiment
  base = tmp_path_factory.mktemp("small_run")
  config = config_keys.override(config_keys.get_config("tiny"), {
      "data.name": "folder", "data.dir": str(small_folder), "data.split_by": "classes",
      "data.tfds_data_dir": str(base / "tfds"), "data.image_size": 28,
      "data.validation_fraction": 0.1, "train.batch_size": 32, "eval.pairs": 1000,
      "plots.latent": False, "plots.animation": False})
  import contextlib
  import io
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    experiment.train_and_evaluate(config, str(base / "run"))
  return base / "run", printed.getvalue()


@pytest.mark.slow  # a whole tiny run (~30 s on 2 busy cores)
def test_small_validation_part_is_said_once_and_predict_uses_the_final_checkpoint(small_run):
  workdir, printed = small_run
  saved = json.loads((workdir / "calibration.json").read_text())
  assert saved["best_step"] == saved["latest_step"]
  assert "too small to choose a checkpoint" in saved["notice"]
  notices = [line for line in printed.splitlines() if line.startswith("notice: ")]
  assert any("choose a checkpoint" in line for line in notices), printed
  model = inference.load(workdir)  # "best"
  assert model.step == saved["latest_step"]
  entry = saved["checkpoints"][str(model.step)]
  assert model.threshold == entry["threshold"] and entry["notice"]
  # every distinct validation pair, none twice: far fewer than eval.pairs / 2 same pairs exist
  summary = json.loads((workdir / "summary.json").read_text())
  classes = len(summary["splits"]["validation"]["classes"])
  assert entry["validation"]["same_pairs"] == classes * 45  # 10 images a class: 45 pairs each
  assert entry["validation"]["different_pairs"] == min(classes * 10 * (classes - 1) * 10 // 2,
                                                       500)
  uses = [line for line in printed.splitlines() if line.startswith("predict and export use")]
  assert len(uses) == 1, printed
  assert f"step {model.step})" in uses[0] and f"threshold {model.threshold:.4g}" in uses[0]
  assert f"FAR {entry['validation']['far']:.4f}, FRR {entry['validation']['frr']:.4f}" in uses[0]
  assert summary["predict_uses"]["step"] == model.step


@pytest.mark.slow
def test_far_beyond_the_validation_impostors_says_so_in_one_line(small_run, capsys):
  from siamese_jax import predict
  workdir, _ = small_run
  model = predict._recalibrated(inference.load(workdir), 1e-3)
  notice = capsys.readouterr().err.strip()
  assert notice.startswith("notice: ") and "\n" not in notice and "3000" in notice
  assert model.calibration["validation"]["far"] == 0.0


@pytest.mark.slow
def test_noise_and_blank_images_are_not_the_same_as_a_real_one(small_run, small_folder, tmp_path):
  workdir, _ = small_run
  model = inference.load(workdir)
  rng = np.random.default_rng(0)
  strange = {"noise": rng.integers(0, 256, (28, 28), dtype=np.uint8),
             "black": np.zeros((28, 28), np.uint8), "white": np.full((28, 28), 255, np.uint8)}
  for name, pixels in strange.items():
    PIL.Image.fromarray(pixels).save(tmp_path / f"{name}.png")
  real = sorted(str(p) for p in (small_folder / "testing").rglob("*.png"))
  for name in strange:
    accepted = model.verify(real, [str(tmp_path / f"{name}.png")] * len(real))
    assert not np.any(accepted), (name, int(np.sum(accepted)), len(real))
