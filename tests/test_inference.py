"""inference.py: preprocessing as training did it, bucketed embedding, pair scores and verdicts
for distance and logit heads, the gallery index (search against brute force, open-set identify,
enrolment, save/load without pickle, another model refused, faiss), every bad input, and (slow)
trained runs: the calibrated threshold of each checkpoint and its recalibration on the same pairs."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from experiments import bce, contrastive
from siamese_jax import checkpoints, distances, experiment, idx, inference, models, scoring, train
from siamese_jax.data import pixels
from tests.helpers import REPO_ROOT

SAMPLE = REPO_ROOT / "siamese_jax" / "sample_data"


def small_config(head: str = "distance", shared: bool = True):
  """The tiny contrastive (or BCE) config with a small MLP: 28x28 grey -> 8 dimensions."""
  config = (bce if head in models.LOGIT_HEADS else contrastive).get_config("tiny")
  config.model.update({"encoder": "mlp", "features": (32, 8), "dropout_rates": (),
                       "head": head, "shared_weights": shared})
  return config


def make_model(head: str = "distance", shared: bool = True, calibration=None, seed: int = 0,
               image_shape=(28, 28, 1)) -> inference.Model:
  """An untrained inference.Model (params from init): what it computes is checked, not how well."""
  config = small_config(head, shared)
  state = initial_state(config, image_shape, seed)
  return inference.Model(config, state.params, state.apply_fn, image_shape, calibration)


_INITS = {}  # one compiled init per model config and image shape, whatever the seed


def initial_state(config, image_shape=(28, 28, 1), seed: int = 0):
  key = (config.model.to_json(), config.optimizer.to_json(), tuple(image_shape))
  if key not in _INITS:
    model = models.build_model(config.model)
    tx = train.make_optimizer(config.optimizer, 1)
    _INITS[key] = jax.jit(lambda rng: train.create_train_state(rng, model, image_shape, tx))
  return _INITS[key](jax.random.key(seed))


def save_run(workdir: pathlib.Path, config, state, calibration: dict | None = None,
             image_shape=(28, 28, 1), roc_aucs=(0.5,)) -> pathlib.Path:
  """A run folder as train_and_evaluate leaves it (config.json, a checkpoint of ``state`` at
  steps 1, 2, ... for each epoch's validation ROC AUC in ``roc_aucs``, and ``calibration`` for
  the last step), without training: for the fast tests of loading."""
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(config.to_json_best_effort())
  manager = checkpoints.make_manager(str(workdir / "checkpoints"))
  history = []
  for epoch, roc_auc in enumerate(roc_aucs, 1):
    state = state.replace(step=epoch)
    history.append({"epoch": epoch, "step": epoch, checkpoints.BEST_METRIC: roc_auc})
    checkpoints.save(manager, state, {checkpoints.BEST_METRIC: roc_auc}, {
        "epoch": epoch, "next_call": 0, "history": list(history),
        "image_shape": list(image_shape), "train_seconds": 0.0, "partial": None})
  manager.close()
  step = len(roc_aucs)
  if calibration is not None:
    (workdir / "calibration.json").write_text(json.dumps(
        {"checkpoints": {str(step): calibration}, "latest_step": step, "best_step": step}))
  return workdir


@pytest.fixture(scope="module")
def digits():
  """The embedded sample's test part (its last 2,000 images): uint8 [2000, 28, 28], labels."""
  images = idx.read_idx(str(SAMPLE / "t10k-images-idx3-ubyte.gz"))[8000:]
  labels = idx.read_idx(str(SAMPLE / "t10k-labels-idx1-ubyte.gz"))[8000:].astype(np.int64)
  return images, labels


@pytest.fixture(scope="module")
def model():
  return make_model(calibration={"threshold": 0.3, "target": "accuracy"})


def reference_embed(model, images, tower=0):
  x = np.asarray(images, np.float32)[..., None] / 255.0 if images.ndim == 3 else images
  return np.asarray(scoring.embed(model.apply_fn, model.params, x, tower=tower))


# ------------------------------------------------------------------------- preprocessing

def test_uint8_and_float_images_become_the_training_floats(digits):
  images = digits[0][:5]
  expected = images[..., None].astype(np.float32) / 255.0
  for form in (images, images[..., None], list(images), images / 255.0):
    prepared, single = inference.prepare(form, (28, 28, 1))
    np.testing.assert_array_equal(prepared, expected)
    assert prepared.dtype == np.float32 and not single
  one, single = inference.prepare(images[0], (28, 28, 1))
  assert single and one.shape == (1, 28, 28, 1)


def test_colour_and_size_are_converted_as_the_data_loader_converts(digits):
  rgb = np.stack([digits[0][:4]] * 3, axis=-1)
  rgb[..., 0] = 255 - rgb[..., 0]  # a colour that grey conversion must weigh
  prepared, _ = inference.prepare(rgb, (28, 28, 1))
  np.testing.assert_array_equal(prepared * 255, pixels.to_channels(rgb, 1))
  rgba = np.concatenate([rgb, np.full((4, 28, 28, 1), 7, np.uint8)], axis=-1)
  np.testing.assert_array_equal(inference.prepare(rgba, (28, 28, 1))[0], prepared)
  big = rgb.repeat(2, axis=1)[:, :, :50]  # 56 x 50: any size is area-resized to 28 x 28
  expected = pixels.to_channels(pixels.resize_area(big, 28), 1)
  np.testing.assert_array_equal(inference.prepare(big, (28, 28, 1))[0] * 255, expected)
  mixed = [big[0], digits[0][7], rgb[1]]  # a list may mix sizes and channels, order kept
  prepared, _ = inference.prepare(mixed, (28, 28, 1))
  np.testing.assert_array_equal(prepared[1, ..., 0] * 255, digits[0][7])
  np.testing.assert_array_equal(prepared[0] * 255, expected[0])


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 28, 28, 5), np.uint8), "5 channels; the model takes 1 and converts 1 to 4"),
    (np.zeros((2, 28, 28, 1), np.int64), "dtype int64: pass uint8"),
    (np.full((2, 28, 28, 1), 255.0), "float images must be in [0, 1]"),
    (np.zeros((2, 2, 28, 28, 1), np.uint8), "pass one image [H, W] or [H, W, C]"),
    ([], "no images given"),
])
def test_bad_images_are_refused_in_one_line(images, message):
  with pytest.raises(inference.InferenceError, match=None) as error:
    inference.prepare(images, (28, 28, 1))
  assert message in str(error.value) and "\n" not in str(error.value)


def test_a_non_square_model_resizes_any_size_to_its_own(digits):
  # data.image_size=(H, W) trains on H x W: any image is area-resized to it, as the loader does
  images = digits[0][:3, :, :, None]
  prepared, _ = inference.prepare(images, (28, 30, 1))
  assert prepared.shape == (3, 28, 30, 1)
  np.testing.assert_array_equal(prepared * 255, pixels.resize_area(images, (28, 30)))
  np.testing.assert_array_equal(inference.prepare(images, (14, 21, 1))[0] * 255,
                                pixels.resize_area(images, (14, 21)))


def test_image_files_are_read_and_bad_ones_named(tmp_path, digits):
  from PIL import Image
  Image.fromarray(digits[0][3]).save(tmp_path / "three.png")
  np.testing.assert_array_equal(inference.read_image(tmp_path / "three.png")[..., 0],
                                digits[0][3])
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  with pytest.raises(inference.InferenceError, match="broken.png: not a readable image"):
    inference.read_image(tmp_path / "broken.png")
  with pytest.raises(inference.InferenceError, match="missing.png: no such image file"):
    inference.read_image(tmp_path / "missing.png")


# ------------------------------------------------------------------------ embed and score

def test_embed_is_scoring_embed_in_compiled_buckets(model, digits):
  images = digits[0][:300]  # more than BATCH: two chunks, the second one padded
  np.testing.assert_allclose(model.embed(images), reference_embed(model, images), atol=1e-6)
  fresh = make_model()
  for count in range(1, 21):
    fresh.embed(images[:count])
  assert fresh._embed[0]._cache_size() == 6  # 1 to 20 images: buckets 1, 2, 4, 8, 16, 32
  fresh.embed(images[:3])
  assert fresh._embed[0]._cache_size() == 6



def test_embed_in_batches_pads_the_last_batch_and_compiles_once(digits):
  """The runs' and the report's embedding of a whole split: the same rows as one ``embed`` call,
  one compiled program for every count of images (the last batch padded)."""
  fresh = make_model()
  images = digits[0][:23, ..., None]
  reference = np.asarray(scoring.embed(fresh.apply_fn, fresh.params, images))
  before = scoring._embed_batch._cache_size()
  for count in (23, 17, 10):
    found = scoring.embed_in_batches(fresh.apply_fn, fresh.params, images[:count], batch_size=10)
    assert found.shape == (count, 8)
    np.testing.assert_allclose(found, reference[:count], atol=1e-6)
  assert scoring._embed_batch._cache_size() == before + 1

def test_score_and_verify_use_the_distance_and_the_threshold(model, digits):
  a, b = digits[0][:6], digits[0][6:12]
  expected = np.linalg.norm(reference_embed(model, a) - reference_embed(model, b), axis=1)
  scores = model.score(a, b)
  np.testing.assert_allclose(scores, expected, rtol=1e-5)
  assert isinstance(model.score(a[0], b[0]), float)
  one_against_many = np.linalg.norm(reference_embed(model, a[:1]) - reference_embed(model, b),
                                    axis=1)
  np.testing.assert_allclose(model.score(a[0], b), one_against_many, rtol=1e-5)
  middle = float(np.median(scores))
  cut = inference.Model(model.config, model.params, model.apply_fn, model.image_shape,
                        {"threshold": middle, "target": "accuracy"})
  np.testing.assert_array_equal(cut.verify(a, b), scores < middle)  # distances: below = same
  assert cut.verify(a[0], a[0]) is True


def test_logit_heads_verify_with_higher_means_same(digits):
  model = make_model("abs_diff")
  a, b = digits[0][:8], digits[0][8:16]
  expected = model.apply_fn({"params": model.params}, a[..., None] / 255.0, b[..., None] / 255.0,
                            train=False)[0]
  scores = model.score(a, b)
  np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
  assert model.higher_means_same and model.threshold == 0.0  # untuned: the logit's 0
  middle = float(np.median(scores))
  cut = inference.Model(model.config, model.params, model.apply_fn, model.image_shape,
                        {"threshold": middle, "target": "accuracy"})
  np.testing.assert_array_equal(cut.verify(a, b), scores > middle)  # logits: above = same


def test_score_refuses_batches_of_different_sizes(model, digits):
  with pytest.raises(inference.InferenceError, match="3 images against 2"):
    model.score(digits[0][:3], digits[0][:2])


def test_the_fingerprint_follows_params_and_config():
  one, same, other = make_model(), make_model(), make_model(seed=1)
  assert one.fingerprint == same.fingerprint != other.fingerprint
  changed = make_model()
  changed.config.loss.margin = 2.0
  assert changed.fingerprint != one.fingerprint


# ---------------------------------------------------------------------------------- index

def brute_force(query, gallery, k, distance="euclidean"):
  all_distances = np.asarray(distances.get_pairwise_distance(distance)(query, gallery))
  ids = np.argsort(all_distances, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(all_distances, ids, axis=1), ids


def test_search_is_the_exact_nearest_gallery_entries(model, digits):
  images, labels = digits
  index = inference.Index.build(model, images[:500], labels[:500])
  found_labels, scores, ids = index.search(images[500:537], k=4)
  expected_scores, expected_ids = brute_force(reference_embed(model, images[500:537]),
                                              reference_embed(model, images[:500], 1), 4)
  np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-4)
  assert np.mean(ids == expected_ids) > 0.98  # ties and float rounding aside
  np.testing.assert_array_equal(found_labels, labels[:500][ids])
  assert np.all(np.diff(scores, axis=1) >= 0)  # distances: nearest first
  one_labels, one_scores, _ = index.search(images[500], k=1)
  assert one_labels.shape == (1, 1) and one_scores[0, 0] == pytest.approx(scores[0, 0], abs=1e-5)


def test_two_tower_models_embed_the_gallery_with_the_second_tower(digits):
  model = make_model(shared=False)
  images = digits[0][:50]
  assert not np.allclose(model.embed(images, tower=1), model.embed(images, tower=0))
  index = inference.Index.build(model, images[10:], digits[1][10:50])
  _, scores, ids = index.search(images[:10], k=3)
  expected_scores, _ = brute_force(reference_embed(model, images[:10], 0),
                                   reference_embed(model, images[10:], 1), 3)
  np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-4)


def test_logit_heads_rank_the_gallery_by_the_head_score(digits):
  model = make_model("abs_diff")
  images = digits[0]
  index = inference.Index.build(model, images[:40], digits[1][:40])
  _, scores, ids = index.search(images[40:45], k=5)
  emb_q, emb_g = reference_embed(model, images[40:45]), reference_embed(model, images[:40], 1)
  all_scores = np.stack([np.asarray(scoring.score_embeddings(
      model.apply_fn, model.params, np.repeat(q[None], 40, 0), emb_g, model.scoring))
      for q in emb_q])
  expected_ids = np.argsort(-all_scores, axis=1, kind="stable")[:, :5]
  np.testing.assert_allclose(scores, np.take_along_axis(all_scores, expected_ids, 1), rtol=1e-5,
                             atol=1e-6)
  assert np.all(np.diff(scores, axis=1) <= 0)  # logits: highest (closest) first


def test_identify_is_open_set_at_the_threshold(digits):
  images, labels = digits
  for threshold, expect_unknown in ((1e-9, True), (1e9, False)):
    model = make_model(calibration={"threshold": threshold, "target": "accuracy"})
    index = inference.Index.build(model, images[:20], labels[:20])
    answers = index.identify(images[20:30])
    assert len(answers) == 10
    if expect_unknown:
      assert answers == [None] * 10
    else:
      nearest = index.search(images[20:30], k=1)[0][:, 0]
      assert answers == nearest.tolist()
  assert index.identify(images[0]) == labels[0]  # an enrolled image finds itself


def test_enrolment_adds_rows_and_string_labels(model, digits):
  images = digits[0]
  index = inference.Index.build(model, images[:3], ["ann", "bob", "cy"], ["a.png", "b.png", ""])
  index.add(images[3], "dee")
  assert len(index) == 4 and index.labels.tolist() == ["ann", "bob", "cy", "dee"]
  assert index.identify(images[3]) == "dee"  # distance 0 to itself: below any threshold > 0
  labels, _, ids = index.search(images[3], k=1)
  assert ids[0, 0] == 3 and labels[0, 0] == "dee"
  with pytest.raises(inference.InferenceError, match="use one kind of label"):
    index.add(images[4:6], [1, 2])
  with pytest.raises(inference.InferenceError, match="one label per image"):
    index.add(images[4:6], ["x"])


def test_save_and_load_without_pickle(tmp_path, model, digits):
  images, labels = digits
  index = inference.Index.build(model, images[:30], labels[:30])
  path = tmp_path / "gallery.npz"
  index.save(path)
  with np.load(path, allow_pickle=False) as saved:
    assert str(saved["format"]) == inference.INDEX_FORMAT
    assert saved["embeddings"].shape == index.embeddings.shape
  loaded = inference.Index.load(path, model)
  np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
  np.testing.assert_array_equal(loaded.labels, labels[:30])
  np.testing.assert_array_equal(loaded.search(images[40:45], 3)[2],
                                index.search(images[40:45], 3)[2])
  with pytest.raises(inference.InferenceError, match="was built by another model"):
    inference.Index.load(path, make_model(seed=3))


@pytest.mark.parametrize("content, message", [
    (None, "no such index file"), (b"not a zip", "not an index file"),
    ("other npz", "not a siamese_jax.index/1 file")])
def test_bad_index_files(tmp_path, model, content, message):
  path = tmp_path / "gallery.npz"
  if content == "other npz":
    np.savez(path, embeddings=np.zeros((1, 8)))
  elif content is not None:
    path.write_bytes(content)
  with pytest.raises(inference.InferenceError, match=message):
    inference.Index.load(path, model)


def test_empty_gallery_and_k_beyond_it_are_refused(model, digits):
  for empty in (np.zeros((0, 28, 28, 1), np.uint8), []):
    with pytest.raises(inference.InferenceError, match="empty gallery"):
      inference.Index.build(model, empty, [])
  index = inference.Index.build(model, digits[0][:3], [0, 1, 2])
  with pytest.raises(inference.InferenceError, match=r"k=4 is larger than the gallery \(3"):
    index.search(digits[0][3], k=4)
  with pytest.raises(inference.InferenceError, match="backend='annoy'"):
    index.search(digits[0][3], k=1, backend="annoy")


def test_faiss_missing_is_one_line(monkeypatch, model, digits):
  monkeypatch.setitem(sys.modules, "faiss", None)
  index = inference.Index.build(model, digits[0][:10], digits[1][:10])
  with pytest.raises(inference.InferenceError, match="needs the faiss package"):
    index.search(digits[0][:2], k=1, backend="faiss")


def test_faiss_finds_what_exact_search_finds(model, digits):
  pytest.importorskip("faiss")
  images, labels = digits
  index = inference.Index.build(model, images[:1000], labels[:1000])
  _, exact_scores, exact_ids = index.search(images[1000:1100], k=5)
  _, scores, ids = index.search(images[1000:1100], k=5, backend="faiss")
  assert np.mean(ids[:, 0] == exact_ids[:, 0]) > 0.95  # HNSW is approximate
  np.testing.assert_allclose(scores[:, 0], exact_scores[:, 0], rtol=1e-3, atol=1e-3)
  with pytest.raises(inference.InferenceError, match="use backend='exact'"):
    inference.Index.build(make_model("abs_diff"), images[:5], labels[:5]).search(
        images[5], 1, backend="faiss")


# --------------------------------------------------------------------------- saved runs

def test_load_reads_the_checkpoint_and_its_calibration(tmp_path, digits):
  config = small_config()
  state = initial_state(config)
  calibration = {"threshold": 0.25, "target": "far<=0.001", "higher_means_same": False,
                 "test": {"far": 0.001, "frr": 0.2, "accuracy": 0.9}}
  workdir = save_run(tmp_path / "run", config, state, calibration)
  model = inference.load(workdir)
  assert model.threshold == 0.25 and model.epoch == 1 and model.image_shape == (28, 28, 1)
  assert "far<=0.001" in model.describe() and "FAR 0.0010" in model.describe()
  np.testing.assert_allclose(model.embed(digits[0][:4]),
                             reference_embed(make_model(), digits[0][:4]), atol=1e-6)
  assert inference.load(workdir, "latest").step == inference.load(workdir, 1).step
  (workdir / "calibration.json").unlink()
  untuned = inference.load(workdir)
  assert untuned.threshold == config.eval.threshold and untuned.calibration is None
  assert "untuned" in untuned.threshold_note and "calibration.json not found" in \
      untuned.threshold_note


def test_best_is_the_highest_validation_roc_auc_not_the_latest(tmp_path):
  config = small_config()
  workdir = save_run(tmp_path / "run", config, initial_state(config), roc_aucs=(0.6, 0.9, 0.7))
  manager = checkpoints.make_manager(str(workdir / "checkpoints"))
  assert manager.best_step() == 2  # the step training calibrates as "best" (calibration.json)
  manager.close()
  assert inference.load(workdir).epoch == 2
  assert inference.load(workdir, "latest").epoch == 3
  assert inference.load(workdir, 1).step == 1


def test_a_workdir_without_checkpoints_is_refused(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(small_config().to_json_best_effort())
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoints; train into"):
    inference.load(workdir)
  with pytest.raises(inference.InferenceError, match="pass 'best', 'latest' or an epoch"):
    inference.load(workdir, "newest")


# ---------------------------------------------------------------------- trained (slow)

def train_run(config, workdir: pathlib.Path, tfds_dir: str, steps: int = 6) -> pathlib.Path:
  config.data.tfds_data_dir = tfds_dir
  config.plots.latent = False
  config.train.steps_per_epoch, config.train.steps_per_call = steps, max(steps // 2, 1)
  experiment.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope="session")
def contrastive_run(tmp_path_factory, tfds_dir):
  """The contrastive :tiny variant, 2 epochs of 6 steps (seconds)."""
  return train_run(contrastive.get_config("tiny"), tmp_path_factory.mktemp("c") / "run", tfds_dir)


@pytest.fixture(scope="session")
def bce_run(tmp_path_factory, tfds_dir):
  """The BCE (abs_diff logit head) :tiny variant."""
  return train_run(bce.get_config("tiny"), tmp_path_factory.mktemp("b") / "run", tfds_dir)


@pytest.mark.slow
def test_each_checkpoint_has_its_own_calibrated_threshold(contrastive_run):
  saved = json.loads((contrastive_run / "calibration.json").read_text())
  latest, best = inference.load(contrastive_run, "latest"), inference.load(contrastive_run)
  assert latest.step == saved["latest_step"] and best.step == saved["best_step"]
  for model in (latest, best):
    entry = saved["checkpoints"][str(model.step)]
    assert model.threshold == entry["threshold"] and model.calibration == entry
  first = inference.load(contrastive_run, 1)
  if str(first.step) not in saved["checkpoints"]:  # epoch 1 neither latest nor best
    assert first.calibration is None and "untuned" in first.threshold_note
    assert first.threshold == first.config.eval.threshold


@pytest.mark.slow
def test_recalibration_draws_the_same_validation_pairs(contrastive_run):
  model = inference.load(contrastive_run, "latest")
  again = inference.recalibrate(model, None)
  assert again.threshold == pytest.approx(model.threshold, abs=1e-6)
  assert again.calibration["test"] == pytest.approx(model.calibration["test"])
  strict = inference.recalibrate(model, 0.01)
  assert strict.calibration["validation"]["far"] <= 0.01
  assert strict.threshold <= model.threshold  # fewer false accepts: a smaller distance


@pytest.mark.slow
def test_a_trained_logit_head_verifies_with_its_logit(bce_run, digits):
  model = inference.load(bce_run)
  assert model.higher_means_same and model.calibration["higher_means_same"]
  images, labels = digits
  a, b = images[:200], images[200:400]
  scores = model.score(a, b)
  np.testing.assert_array_equal(model.verify(a, b), scores > model.threshold)
  same = labels[:200] == labels[200:400]
  assert scores[same].mean() > scores[~same].mean()  # higher logits for same-digit pairs
