"""Non-square images end to end (issue 27, problem 6): ``data.image_size`` is an int S (S x S) or
a pair (H, W), from the command line through the config check, every data source's resize, every
encoder, the checkpoint's image shape, inference's preprocessing and export's input shape."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
from absl import flags
from ml_collections import config_flags

from siamese_jax import config_checks, config_keys, data, export, inference, models
from siamese_jax.data import files, pixels
from tests.test_inference import initial_state, save_run, small_config

PORTRAIT = (112, 92)  # H, W: the AT&T faces' 92 x 112 PGMs


def _parsed(monkeypatch, *argv):
  """config.data.image_size after absl parses ``argv`` as main.py's --config overrides (which
  config_flags reads from sys.argv)."""
  monkeypatch.setattr(sys, "argv", ["main.py", *argv])
  values = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", config_keys.get_config(), flag_values=values)
  values(sys.argv)
  return values.config.data.image_size


@pytest.mark.parametrize("argument,expected", [("64", 64), ("(112,92)", PORTRAIT),
                                               ("112,92", PORTRAIT), ("None", None)])
def test_the_command_line_takes_an_int_or_a_pair(monkeypatch, argument, expected):
  # placeholder(int) refused the pair: "invalid literal for int() with base 10: '(112,92)'"
  assert _parsed(monkeypatch, f"--config.data.image_size={argument}") == expected
  assert _parsed(monkeypatch) is None


@pytest.mark.parametrize("size", [None, 28, PORTRAIT, [28, 20]])
def test_the_config_check_accepts_an_int_or_a_pair(size):
  config = config_keys.get_config()
  config.data.image_size = size
  config_checks.validate(config)


@pytest.mark.parametrize("size", [0, -3, (112,), (112, 92, 3), (112, 0), (112.0, 92), "big", True,
                                  2.5])
def test_the_config_check_refuses_anything_else_in_one_line(size):
  config = config_keys.get_config()
  config.data.image_size = size
  with pytest.raises(config_checks.ConfigError, match=r"data.image_size=.* must be a positive int "
                     r"S \(S x S\) or a pair \(H, W\)") as error:
    config_checks.validate(config)
  assert "\n" not in str(error.value)


def test_rotated_classes_need_a_square_size():
  config = config_keys.get_config()
  config.data.rotation_classes, config.data.image_size = True, PORTRAIT
  with pytest.raises(config_checks.ConfigError, match="rotation_classes=True turns images"):
    config_checks.validate(config)
  config.data.image_size = (28, 28)
  config_checks.validate(config)


@pytest.mark.parametrize("encoder", list(models.ENCODERS))
def test_every_encoder_takes_non_square_images(encoder):
  config = config_keys.get_config().model
  config.encoder = encoder
  model = models.build_model(config)
  x = jnp.zeros((2, *PORTRAIT, 1))
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, x, train=False))
  score, emb_a, _ = jax.eval_shape(lambda v: model.apply(v, x, x, train=False), variables)
  assert score.shape == (2,) and emb_a.shape[0] == 2


def test_resize_area_takes_a_pair():
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), np.uint8)
  assert pixels.height_width(PORTRAIT) == PORTRAIT and pixels.height_width(7) == (7, 7)
  assert pixels.resize_area(images, (14, 7)).shape == (3, 14, 7, 1)
  squares = pixels.resize_area(images, 14)
  np.testing.assert_array_equal(pixels.resize_area(images, (14, 14)), squares)
  blocks = images.reshape(3, 14, 2, 7, 4, 1).mean(axis=(2, 4))  # whole blocks: exact means
  np.testing.assert_array_equal(pixels.resize_area(images, (14, 7)), np.round(blocks))


@pytest.mark.parametrize("source, target", [((112, 92), (48, 48)), ((92, 112), (112, 92)),
                                            ((30, 30), (40, 40)), ((37, 53), (11, 19)),
                                            ((105, 105), (28, 28)), ((13, 200), (50, 7))])
def test_resize_area_gives_tensorflows_pixels_without_tensorflow(source, target):
  """The NumPy area resize (predict's, without a TensorFlow import) is tf.image.resize's 'area',
  pixel for pixel, down, up and mixed."""
  images = np.random.default_rng(0).integers(0, 256, (4, *source, 3), np.uint8)
  expected = pixels.resize_area_tf(images, target).numpy()
  np.testing.assert_array_equal(pixels.resize_area(images, target), expected)


def test_the_sources_resize_to_height_by_width(tmp_path):
  images, labels = files.read_idx_pair(files.SAMPLE_DIR, *files.MNIST.parts["test"], 40)
  for i, (image, label) in enumerate(zip(images, labels)):
    (tmp_path / "digits" / str(label)).mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(image).save(tmp_path / "digits" / str(label) / f"{i}.png")
  folder = data.load("folder", "all", source_dir=tmp_path / "digits", data_dir=tmp_path / "tfds",
                     image_size=(20, 12))
  assert folder.images.shape[1:] == (20, 12, 1)
  assert data.load("uci_digits", "test", image_size=(16, 8)).images.shape[1:] == (16, 8, 1)
  with pytest.raises(ValueError, match="image_size=.* must be a positive int S, a pair"):
    data.load("uci_digits", "test", image_size=(16, 8, 1))


def test_a_non_square_run_loads_predicts_and_exports(tmp_path):
  # a run at 28 x 23 (as its checkpoints record the shape): the config it loads with says
  # (28, 23), any image is resized to it, and the export takes [b, 28, 23, 1]
  config = small_config()
  state = initial_state(config, (28, 23, 1))
  run = save_run(tmp_path / "run", config, state, image_shape=(28, 23, 1))
  model = inference.load(run)
  assert model.image_shape == (28, 23, 1) and model.config.data.image_size == (28, 23)
  PIL.Image.fromarray(np.full((50, 40), 200, np.uint8)).save(tmp_path / "photo.png")
  assert model.embed(str(tmp_path / "photo.png")).shape == (1, 8)
  info = export.export(model, tmp_path / "out", saved_model=False)
  assert info["input"]["shape"] == ["batch", 28, 23, 1]
  assert info["preprocessing"]["image_size"] == [28, 23]
  embed = jax.export.deserialize(bytearray((tmp_path / "out" / "embed.jax").read_bytes()))
  x = np.random.default_rng(0).random((3, 28, 23, 1), dtype=np.float32)
  np.testing.assert_allclose(embed.call(x), model.embed(x), atol=1e-5)


def test_a_run_without_a_recorded_shape_takes_it_from_the_config(tmp_path):
  from siamese_jax import checkpoints
  config = config_keys.get_config()
  config.data.image_size = (28, 23)
  assert checkpoints._image_shape(config, {}, {}) == (28, 23, 1)  # noqa: SLF001
  config.data.image_size = 28
  assert checkpoints._image_shape(config, {}, {}) == (28, 28, 1)  # noqa: SLF001
  saved = json.loads(config_keys.get_config().to_json())
  assert saved["data"]["image_size"] is None


@pytest.mark.slow  # ~20 s: a whole (tiny) run
def test_a_folder_of_training_and_testing_trains_at_height_by_width(tmp_path, capsys):
  # the user: training/ and testing/ (people never trained on), 92 x 112 portraits; the
  # run trains at (H, W), prints each part's classes and images, and summary.json names them
  from siamese_jax import experiment
  images, labels = files.read_idx_pair(files.SAMPLE_DIR, *files.MNIST.parts["test"], 400)
  for split, classes in (("training", range(7)), ("testing", range(7, 10))):
    for d in classes:
      (tmp_path / "faces" / split / f"person{d}").mkdir(parents=True)
      for i, index in enumerate(np.flatnonzero(labels == d)[:8]):
        portrait = PIL.Image.fromarray(images[index]).resize((23, 28))
        portrait.save(tmp_path / "faces" / split / f"person{d}" / f"{i}.pgm")
  config = config_keys.override(config_keys.get_config("tiny"), {
      "data.name": "folder", "data.dir": str(tmp_path / "faces"), "data.split_by": "classes",
      "data.tfds_data_dir": str(tmp_path / "tfds"), "data.image_size": (28, 23),
      "data.validation_fraction": 0.3, "train.batch_size": 16, "eval.pairs": 50,
      "plots.latent": False, "plots.animation": False})
  summary = experiment.train_and_evaluate(config, str(tmp_path / "run"))
  printed = capsys.readouterr().out
  assert "training part: 5 classes, 40 images" in printed
  assert "validation part: 2 classes, 16 images" in printed
  assert "test part: 3 classes, 24 images (person7, person8, person9)" in printed
  written = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert written["splits"] == summary["splits"]
  assert written["splits"]["test"]["classes"] == ["person7", "person8", "person9"]
  assert written["splits"]["train"]["shape"] == [40, 28, 23, 1]
  assert set(written["splits"]["train"]["classes"]).isdisjoint(
      written["splits"]["validation"]["classes"] + written["splits"]["test"]["classes"])
  model = inference.load(tmp_path / "run")
  assert model.image_shape == (28, 23, 1)
  person = tmp_path / "faces" / "testing" / "person9"
  assert np.isfinite(model.score(str(person / "0.pgm"), str(person / "1.pgm")))
