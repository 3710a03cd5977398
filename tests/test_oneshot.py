"""oneshot.py and checkpoints.load_trained: parsing, error arithmetic, the CLI end to end on a
synthetic runs folder in brendenlake/omniglot's layout, and every bad input. The tests that use
the ``trained`` fixture (a whole Omniglot run) are slow."""

import json
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest
from PIL import Image, ImageDraw

from experiments import embedding_ce, omniglot
from siamese_jax import checkpoints, data, experiment, models, oneshot, scoring, train
from tests.helpers import REPO_ROOT, SHARED_DATA, tiny_config

CLASSES = 5


# ------------------------------------------------------------------------------ fixtures

# Six shapes, drawn with black strokes on white; ``j`` moves a shape a few pixels, so that a
# test item is near, not equal to, the training image of its class.
SHAPES = [
    lambda draw, j: draw.rectangle([20 + j, 45, 85 + j, 60], fill=0),  # horizontal bar
    lambda draw, j: draw.rectangle([45, 20 + j, 60, 85 + j], fill=0),  # vertical bar
    lambda draw, j: draw.ellipse([25 + j, 25 + j, 80 + j, 80 + j], fill=0),  # disc
    lambda draw, j: draw.line([15 + j, 15, 90 + j, 90], fill=0, width=8),  # diagonal
    lambda draw, j: draw.rectangle([30, 30 + j, 75, 75 + j], outline=0, width=6),  # square
    lambda draw, j: draw.polygon([(10 + j, 70), (50 + j, 95), (10 + j, 95)], fill=0),  # triangle
]


def _shape(kind: int, jitter: int) -> Image.Image:
  """A 105x105 1-bit image (the official runs' PNG mode) of SHAPES[kind]."""
  image = Image.new("L", (105, 105), 255)
  SHAPES[kind](ImageDraw.Draw(image), jitter)
  return image.convert("1")


def make_runs(root: pathlib.Path, runs: int = 2, mislabel: dict | None = None) -> pathlib.Path:
  """``runs`` runs of CLASSES classes in the official layout; run r's test item i belongs to
  class ((i + r) % CLASSES) + 1 and shape (class + r) % 6. ``mislabel`` {run: [(i, j)]} swaps
  the training paths of lines i and j of that run's class_labels.txt."""
  for r in range(1, runs + 1):
    run = root / f"run{r:02d}"
    (run / "test").mkdir(parents=True)
    (run / "training").mkdir()
    lines = []
    for c in range(1, CLASSES + 1):
      _shape((c + r) % 6, 0).save(run / "training" / f"class{c:02d}.png")
    for i in range(1, CLASSES + 1):
      c = (i + r) % CLASSES + 1
      _shape((c + r) % 6, 3).save(run / "test" / f"item{i:02d}.png")
      lines.append([f"run{r:02d}/test/item{i:02d}.png", f"run{r:02d}/training/class{c:02d}.png"])
    for i, j in (mislabel or {}).get(r, []):
      lines[i][1], lines[j][1] = lines[j][1], lines[i][1]
    (run / "class_labels.txt").write_text("".join(f"{a} {b}\n" for a, b in lines))
  return root


@pytest.fixture
def runs_dir(tmp_path) -> pathlib.Path:
  return make_runs(tmp_path / "one-shot-classification")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tfds_dir):
  """A 2-epoch Omniglot run (28x28, small convnet4) and the params saved at each epoch."""
  if not (SHARED_DATA / "omniglot").is_dir():
    pytest.skip(f"{SHARED_DATA / 'omniglot'} not found")
  from experiments import findings
  # The pair-trained Omniglot model (the old default): a distance head, scored by the Euclidean
  # distance; experiments/omniglot.py's cosine classifier is tested in test_main.py.
  config = tiny_config("omniglot", tfds_dir, **{
      **dict(findings.OMNIGLOT_PAIRS), "data.dir": str(SHARED_DATA / "omniglot"),
      "plots.latent": False, "model.filters": 8, "model.embedding_dim": 16})
  workdir = tmp_path_factory.mktemp("oneshot") / "run"
  saved = {}
  real_save = checkpoints.save

  def save(manager, state, metrics, progress, **kwargs):
    if not progress["next_call"]:  # an end-of-epoch checkpoint
      saved[progress["epoch"]] = jax.device_get(state.params)
    real_save(manager, state, metrics, progress, **kwargs)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(checkpoints, "save", save)
    experiment.train_and_evaluate(config, str(workdir))
  return workdir, config, saved


def run_cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "siamese_jax.oneshot", *map(str, args)],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def one_line_error(capsys, argv, *expected):
  assert oneshot.main([str(a) for a in argv]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1, err
  for text in expected:
    assert text in err, err
  return err


# ------------------------------------------------------------------------- pure parts

def test_parse_class_labels_keeps_line_order_and_skips_blank_lines():
  text = "run01/test/item01.png run01/training/class08.png\n\n  a.png   b.png  \n"
  assert oneshot.parse_class_labels(text) == [
      ("run01/test/item01.png", "run01/training/class08.png"), ("a.png", "b.png")]


@pytest.mark.parametrize("text,line", [("a.png b.png\nc.png\n", "line 2"),
                                       ("a.png b.png c.png\n", "line 1"), ("\n \n", "no lines")])
def test_parse_class_labels_names_the_bad_line(text, line):
  with pytest.raises(oneshot.OneShotError, match=f"labels.txt {line}|labels.txt: {line}"):
    oneshot.parse_class_labels(text, "labels.txt")


def test_label_indices_point_at_the_sorted_distinct_training_images():
  pairs = [("t1", "c3"), ("t2", "c1"), ("t3", "c2"), ("t4", "c1")]
  tests, training, truth = oneshot.label_indices(pairs)
  assert tests == ["t1", "t2", "t3", "t4"] and training == ["c1", "c2", "c3"]
  np.testing.assert_array_equal(truth, [2, 0, 1, 0])


def test_error_rate_by_hand():
  similarity = np.array([[0.9, 0.1, 0.0],   # -> 0, right
                         [0.2, 0.3, 0.5],   # -> 2, truth 1: wrong
                         [0.4, 0.4, 0.1],   # tie -> first (0), right
                         [0.0, 0.0, 1.0]])  # -> 2, right
  assert oneshot.error_rate(similarity, np.array([0, 1, 0, 2])) == pytest.approx(0.25)
  np.testing.assert_array_equal(oneshot.predictions(similarity), [0, 2, 0, 2])


def test_pixel_similarity_is_minus_the_euclidean_distance():
  test = np.array([[0, 0], [255, 255]], np.uint8).reshape(2, 2, 1, 1)
  training = np.array([[0, 255]], np.uint8).reshape(1, 2, 1, 1)
  np.testing.assert_allclose(oneshot.pixel_similarity(test, training), [[-1.0], [-1.0]])
  assert oneshot.pixel_similarity(test, test)[0, 0] == 0.0


def test_fixture_runs_read_back_with_the_right_labels(runs_dir):
  runs = oneshot.load_runs(runs_dir)
  assert [r.name for r in runs] == ["run01", "run02"]
  assert runs[0].test.shape == (CLASSES, 105, 105, 1) and runs[0].test.dtype == np.uint8
  np.testing.assert_array_equal(runs[0].truth, [(i + 1) % CLASSES for i in range(1, CLASSES + 1)])
  assert set(np.unique(runs[0].training)) == {0, 255} and np.mean(runs[0].training == 255) > 0.5
  assert oneshot.run_errors(runs, oneshot.pixel_similarity) == [0.0, 0.0]
  assert [r.name for r in oneshot.load_runs(runs_dir / "run02")] == ["run02"]


def test_mislabelled_fixture_gives_the_known_error_rate(tmp_path, capsys):
  runs_dir = make_runs(tmp_path / "runs", mislabel={2: [(0, 1)], 1: [(0, 1), (2, 3)]})
  assert oneshot.main(["--runs", str(runs_dir)]) == 0
  out = capsys.readouterr().out
  assert "5-way, 105x105" in out and "model" not in out
  lines = {line.split()[0]: line.split()[-1] for line in out.splitlines()[2:]}
  assert lines == {"run01": "80.0%", "run02": "40.0%", "mean": "60.0%"}


# ------------------------------------------------------------------- with a checkpoint

@pytest.mark.slow
def test_load_trained_restores_the_latest_epoch_or_the_one_asked(trained):
  workdir, config, saved = trained
  loaded_config, state = checkpoints.load_trained(workdir)
  assert loaded_config.model.to_dict() == config.model.to_dict()  # tuples back as tuples
  assert loaded_config.data.image_size == 28 and int(state.step) == 12
  images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1), np.uint8)
  embed = jax.jit(lambda params: state.apply_fn({"params": params}, scoring.to_float_images(images),
                                                method="embed"))
  np.testing.assert_array_equal(embed(state.params), embed(saved[2]))
  _, first = checkpoints.load_trained(workdir, epoch=1)
  assert int(first.step) == 6
  jax.tree_util.tree_map(np.testing.assert_array_equal, first.params, saved[1])


@pytest.mark.slow
def test_load_trained_takes_the_image_size_from_summary_when_the_config_has_none(trained, tmp_path):
  workdir, _, saved = trained
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("plots", "events.*"))
  config = json.loads((copy / "config.json").read_text())
  config["data"]["image_size"] = None
  (copy / "config.json").write_text(json.dumps(config))
  loaded_config, state = checkpoints.load_trained(copy)
  assert loaded_config.data.image_size == 28
  jax.tree_util.tree_map(np.testing.assert_array_equal, state.params, saved[2])


def test_load_trained_finds_the_classifier_size_and_the_native_image_size(tmp_path):
  """A classifier saved without model.num_classes or summary.json (a run cut short)."""
  config = embedding_ce.get_config()
  config.model.update({"encoder": "mlp", "features": (8, 4), "dropout_rates": (),
                       "num_classes": 3})
  model, tx = models.build_model(config.model), train.make_optimizer(config.optimizer, 1)
  state = jax.jit(lambda key: train.create_train_state(key, model, (28, 28, 1), tx))(
      jax.random.key(1))
  manager = checkpoints.make_manager(str(tmp_path / "checkpoints"))
  checkpoints.save(manager, state, {"val_roc_auc": 0.5}, {"epoch": 1, "next_call": 0})
  manager.close()
  config.model.num_classes = None
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  loaded_config, loaded = checkpoints.load_trained(tmp_path)
  assert loaded_config.model.num_classes == 3 and loaded_config.data.image_size == 28
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, state.params)


@pytest.mark.slow
def test_preprocessing_is_the_data_loaders(trained, tfds_dir):
  workdir, config, _ = trained
  native = data.load("omniglot", "small2", data_dir=tfds_dir, source_dir=config.data.dir)
  small = data.load("omniglot", "small2", data_dir=tfds_dir, source_dir=config.data.dir,
                    image_size=28)
  np.testing.assert_array_equal(oneshot.resize_like_training(native.images[:300], 28),
                                small.images[:300])
  import tensorflow as tf
  with zipfile.ZipFile(pathlib.Path(config.data.dir) / "images_background_small2.zip") as z:
    name = next(n for n in z.namelist() if n.endswith(".png"))
    png = z.read(name)
  (workdir.parent / "drawing.png").write_bytes(png)
  np.testing.assert_array_equal(oneshot.read_png(workdir.parent / "drawing.png", "test"),
                                tf.io.decode_png(png, channels=1).numpy())


@pytest.mark.slow
def test_cli_end_to_end(trained, runs_dir, tmp_path):
  workdir, _, _ = trained
  result = run_cli("--runs", runs_dir, "--checkpoint", workdir, "--json", tmp_path / "out.json")
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""  # neither TensorFlow's nor orbax's log lines
  assert "2 runs" in result.stdout and "5-way, 28x28" in result.stdout
  assert "smallest euclidean embedding distance" in result.stdout
  report = json.loads((tmp_path / "out.json").read_text())
  assert [r["run"] for r in report["runs"]] == ["run01", "run02"] and "step 12" in report["model"]
  for run in report["runs"]:
    assert run["ways"] == CLASSES and round(run["model_error"] * CLASSES, 9).is_integer()
    assert run["pixel_error"] == 0.0  # distinct shapes stay distinct at 28x28
  assert report["mean"]["model_error"] == pytest.approx(
      np.mean([r["model_error"] for r in report["runs"]]))


def test_logit_heads_score_pairs_with_the_head(runs_dir):
  """An (untrained) abs_diff model: the similarity of (test, training) is the head's pair logit."""
  config = omniglot.get_config()
  config.model.update({"encoder": "mlp", "features": (8, 4), "dropout_rates": (),
                       "head": "abs_diff", "test_time_shift": 0})
  model = models.build_model(config.model)
  tx = train.make_optimizer(config.optimizer, 1)
  state = jax.jit(lambda key: train.create_train_state(key, model, (105, 105, 1), tx))(
      jax.random.key(0))
  runs = oneshot.load_runs(runs_dir)
  similarity = oneshot.model_similarity(config, state, batch=7)  # 25 pairs: a padded last batch
  scores = similarity(runs[0].test, runs[0].training)
  a, b = np.repeat(runs[0].test, CLASSES, 0), np.tile(runs[0].training, (CLASSES, 1, 1, 1))
  expected = jax.jit(lambda a, b: state.apply_fn(
      {"params": state.params}, scoring.to_float_images(a), scoring.to_float_images(b),
      train=False)[0])(a, b)
  np.testing.assert_allclose(scores, np.reshape(expected, (CLASSES, CLASSES)), rtol=1e-5)


# --------------------------------------------------------------------------- bad input

def test_bad_runs_folders(tmp_path, runs_dir, capsys):
  one_line_error(capsys, ["--runs", tmp_path / "nowhere"], "nowhere: no such folder")
  (tmp_path / "empty").mkdir()
  one_line_error(capsys, ["--runs", tmp_path / "empty"], "no run folders (run01")
  labels = runs_dir / "run02" / "class_labels.txt"
  text = labels.read_text()
  labels.write_text(text.replace(".png\n", ".png extra\n", 1))
  one_line_error(capsys, ["--runs", runs_dir], "run02/class_labels.txt line 1", "fix the line")
  labels.unlink()
  one_line_error(capsys, ["--runs", runs_dir], "run02/class_labels.txt: cannot read it")
  labels.write_text(text)
  (runs_dir / "run02" / "test" / "item03.png").unlink()
  one_line_error(capsys, ["--runs", runs_dir], "run02/test/item03.png not found", "listed in")
  Image.new("L", (100, 105), 255).save(runs_dir / "run02" / "test" / "item03.png")
  one_line_error(capsys, ["--runs", runs_dir], "item03.png: 100x105 image", "105x105")
  (runs_dir / "run02" / "test" / "item03.png").write_bytes(b"not a png")
  one_line_error(capsys, ["--runs", runs_dir], "item03.png: not a readable image")
  one_line_error(capsys, ["--runs", runs_dir / "run01", "--json", tmp_path / "no" / "out.json"],
                 "cannot write it")


@pytest.mark.slow
def test_bad_checkpoints(trained, tmp_path, runs_dir, capsys):
  workdir, _, _ = trained
  runs = ["--runs", runs_dir / "run01"]
  one_line_error(capsys, [*runs, "--checkpoint", tmp_path / "nowhere"], "nowhere: no such folder")
  (tmp_path / "bare").mkdir()
  one_line_error(capsys, [*runs, "--checkpoint", tmp_path / "bare"], "config.json not found")
  shutil.copy(workdir / "config.json", tmp_path / "bare")
  one_line_error(capsys, [*runs, "--checkpoint", tmp_path / "bare"], "no checkpoints", "train")
  one_line_error(capsys, [*runs, "--checkpoint", workdir, "--epoch", "7"],
                 "no checkpoint of epoch 7", "pass one of 1, 2")
  foreign = tmp_path / "foreign"
  shutil.copytree(workdir / "checkpoints", foreign / "checkpoints")
  config = json.loads((workdir / "config.json").read_text())
  config["model"]["embedding_dim"] = 32
  (foreign / "config.json").write_text(json.dumps(config))
  one_line_error(capsys, [*runs, "--checkpoint", foreign], "does not fit this model",
                 "param encoder/Dense_0/bias is (16,) there, (32,)",
                 "is not the config of these checkpoints")
  (foreign / "config.json").write_text("{not json")
  one_line_error(capsys, [*runs, "--checkpoint", foreign], "cannot read it as JSON")


@pytest.mark.bad_input
def test_a_one_way_run_is_refused(tmp_path, runs_dir, capsys):
  labels = runs_dir / "run02" / "class_labels.txt"
  first_training = labels.read_text().split()[1]
  labels.write_text("".join(f"{line.split()[0]} {first_training}\n"
                            for line in labels.read_text().splitlines() if line.strip()))
  one_line_error(capsys, ["--runs", runs_dir], "run02/class_labels.txt: a 1-way run",
                 "at least 2 candidate")


@pytest.mark.bad_input
def test_a_run_with_a_duplicated_line_is_refused(tmp_path, runs_dir, capsys):
  labels = runs_dir / "run01" / "class_labels.txt"
  lines = labels.read_text().splitlines()
  labels.write_text("\n".join(lines + lines[:1]) + "\n")
  one_line_error(capsys, ["--runs", runs_dir], "run01/class_labels.txt: test image",
                 f"listed twice (pairs 1 and {len(lines) + 1})")


@pytest.mark.bad_input
def test_json_pointing_at_a_folder_is_refused_before_scoring(tmp_path, runs_dir, capsys):
  assert oneshot.main(["--runs", str(runs_dir), "--json", str(tmp_path)]) == 2
  out, err = capsys.readouterr()
  assert not out and err.count("\n") == 1 and "--json" in err and "is a folder" in err, err


@pytest.mark.bad_input
@pytest.mark.parametrize("argv", [["--runs", "x", "--epoch", "abc"], ["--bogus"], []])
def test_bad_arguments_are_one_line(argv, capsys):
  with pytest.raises(SystemExit) as stop:
    oneshot.main(argv)
  err = capsys.readouterr().err
  assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
