"""Plots: every writer leaves a readable PNG/GIF (and no .tmp), PCA only when D > 2, a shared
projection fixes the coordinates, ROC AUC at the extremes, non-finite rows dropped, empty raises."""

import numpy as np
import pytest
from PIL import Image

from siamese_jax import plots


def _clusters(n_per_class=20, d=2, classes=3, seed=0):
  """embeddings [classes * n_per_class, d] in separated clusters, labels [classes * n_per_class]."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(classes), n_per_class)
  centres = rng.normal(size=(classes, d)) * 5
  return centres[labels] + rng.normal(size=(labels.size, d)), labels


def _check_image(path, fmt="PNG"):
  with Image.open(path) as image:
    assert image.format == fmt
    assert image.size[0] > 0 and image.size[1] > 0
    image.verify()


@pytest.fixture
def captured(monkeypatch):
  """The figures passed to plots._save_figure (their titles and artists are read before saving)."""
  figures = []
  save = plots._save_figure

  def spy(fig, path):
    ax = fig.axes[0]
    figures.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(),
                    "points": sum(len(c.get_offsets()) for c in ax.collections),
                    "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []})
    return save(fig, path)

  monkeypatch.setattr(plots, "_save_figure", spy)
  return figures


@pytest.mark.parametrize("d", [1, 2, 5])
def test_latent_space_writes_png_in_new_folder(tmp_path, captured, d):
  x, y = _clusters(d=d)
  path = tmp_path / "nested" / "dir" / f"latent_{d}.png"
  got = plots.latent_space(x, y, path, title="epoch 1", class_names=["zero", "one", "two"])
  assert got == str(path)
  _check_image(path)
  assert captured[0]["points"] == len(y) and captured[0]["title"] == "epoch 1"
  assert captured[0]["legend"] == ["zero", "one", "two"]
  assert captured[0]["xlabel"] == ("PCA 1" if d > 2 else "dim 1")
  assert not list(tmp_path.rglob("*.tmp"))


def test_pca_only_when_more_than_two_dims():
  x5, _ = _clusters(d=5)
  x2, _ = _clusters(d=2)
  assert plots.fit_projection(x2) is None
  assert plots.fit_projection(x5).n_components_ == 2
  points, labels = plots.project_2d(x2)
  np.testing.assert_array_equal(points, x2)
  assert labels == ("dim 1", "dim 2")
  points, labels = plots.project_2d(x5)
  assert points.shape == (len(x5), 2) and labels == ("PCA 1", "PCA 2")
  points, labels = plots.project_2d(x2[:, :1])
  np.testing.assert_array_equal(points[:, 1], 0.0)


def test_latent_space_uses_the_given_projection(tmp_path):
  x, y = _clusters(d=5)

  class Spy:
    calls = 0

    def transform(self, z):
      Spy.calls += 1
      return z[:, :2]

  plots.latent_space(x, y, tmp_path / "a.png", projection=Spy())
  assert Spy.calls == 1


def test_shared_projection_gives_identical_axes(tmp_path):
  first, y = _clusters(d=5, seed=1)
  later, _ = _clusters(d=5, seed=2)
  projection = plots.fit_projection(first)
  a, _ = plots.project_2d(later, projection)
  b, _ = plots.project_2d(later.copy(), projection)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, projection.transform(later))
  refit, _ = plots.project_2d(later)  # a PCA of its own would use other axes
  assert not np.allclose(a, refit)
  p1 = plots.latent_space(later, y, tmp_path / "1.png", projection=projection)
  p2 = plots.latent_space(later.copy(), y, tmp_path / "2.png", projection=projection)
  with Image.open(p1) as i1, Image.open(p2) as i2:
    np.testing.assert_array_equal(np.asarray(i1), np.asarray(i2))


def test_latent_space_drops_nan_rows(tmp_path, captured):
  x, y = _clusters(d=5)
  x[[0, 7, 30]] = np.nan
  x[11, 2] = np.inf
  plots.latent_space(x, y, tmp_path / "nan.png", title="epoch 3")
  _check_image(tmp_path / "nan.png")
  assert captured[0]["points"] == len(y) - 4
  assert captured[0]["title"] == "epoch 3 (4 non-finite rows dropped)"
  plots.latent_space(np.full((4, 3), np.nan), [0, 1, 0, 1], tmp_path / "all_nan.png")
  assert captured[1]["points"] == 0 and "4 non-finite" in captured[1]["title"]


def test_latent_animation_has_one_frame_per_image(tmp_path):
  frames = []
  for epoch in range(3):
    x, y = _clusters(d=2, seed=epoch)
    frames.append(plots.latent_space(x, y, tmp_path / f"epoch_{epoch}.png", title=f"epoch {epoch}"))
  with Image.open(frames[0]) as first:
    size = first.size
  Image.new("RGB", (123, 77), "white").save(tmp_path / "small.png")  # resized to the first's size
  gif = plots.latent_animation(frames + [str(tmp_path / "small.png")], tmp_path / "out" / "a.gif",
                               duration_ms=200)
  _check_image(gif, "GIF")
  with Image.open(gif) as image:
    assert image.n_frames == 4 and image.size == size
    assert image.info.get("loop") == 0 and image.info.get("duration") == 200
  assert not list(tmp_path.rglob("*.tmp"))


def test_training_curves_skips_missing_and_non_finite(tmp_path, captured):
  history = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.2, "train_accuracy": 0.5, "lr": 0.1},
             {"epoch": 2, "train_loss": 0.5, "test_loss": None, "test_accuracy": 0.7},
             {"epoch": 3, "train_loss": float("nan"), "train_accuracy": np.float32(0.9)}]
  path = plots.training_curves(history, tmp_path / "curves.png")
  _check_image(path)
  assert captured[0]["legend"] == ["train_loss", "test_loss"]
  assert captured[0]["title"] == "Loss (1 non-finite values dropped)"
  series, dropped = plots._series(history, "accuracy")
  assert series == {"train_accuracy": ([1.0, 3.0], [0.5, pytest.approx(0.9)]),
                    "test_accuracy": ([2.0], [0.7])} and dropped == 0
  _check_image(plots.training_curves([{"epoch": 0, "other": 1}], tmp_path / "none.png"))


def test_distance_histograms(tmp_path, captured):
  rng = np.random.default_rng(0)
  distances = np.concatenate([rng.gamma(2, 0.2, 200), rng.gamma(6, 0.3, 200), [np.nan]])
  same = np.concatenate([np.ones(200), np.zeros(200), [1]]).astype(bool)
  path = plots.distance_histograms(distances, same, tmp_path / "h.png", threshold=1.0)
  _check_image(path)
  assert captured[0]["legend"] == ["same class (n=200)", "different class (n=200)", "threshold = 1"]
  assert "1 non-finite pairs dropped" in captured[0]["title"]
  _check_image(plots.distance_histograms([0.3, 0.3], [1, 1], tmp_path / "one_group.png"))


def test_roc_auc_extremes(tmp_path):
  rng = np.random.default_rng(0)
  same = np.repeat([1, 0], 500)
  separated = np.where(same == 1, rng.uniform(0, 1, 1000), rng.uniform(2, 3, 1000))
  path, auc = plots.roc_curve(separated, same, tmp_path / "roc.png", higher_means_same=False)
  _check_image(path)
  assert auc == 1.0
  assert plots.roc_curve(separated, same, tmp_path / "r.png", higher_means_same=True)[1] == 0.0
  _, auc = plots.roc_curve(rng.uniform(size=4000), rng.integers(0, 2, 4000), tmp_path / "rand.png",
                           higher_means_same=False)
  assert abs(auc - 0.5) < 0.05
  with_nan = np.concatenate([separated, [np.nan, np.inf]])
  _, auc = plots.roc_curve(with_nan, np.concatenate([same, [1, 0]]), tmp_path / "nan.png", False)
  assert auc == 1.0
  _, auc = plots.roc_curve([0.1, 0.2], [1, 1], tmp_path / "one_class.png", False)
  assert np.isnan(auc)


def test_side_by_side(tmp_path):
  a = plots.latent_space(*_clusters(d=2), tmp_path / "adam.png", title="Adam")
  Image.new("RGB", (300, 200), "white").save(tmp_path / "sgd.png")
  path = plots.side_by_side([a, str(tmp_path / "sgd.png")], ["Adam", "SGD"], tmp_path / "both.png")
  _check_image(path)
  with Image.open(path) as image, Image.open(a) as left:
    assert image.size[0] >= left.size[0] + 300 - 20  # drawn at about their own size
  with pytest.raises(ValueError, match="titles"):
    plots.side_by_side([a], ["x", "y"], tmp_path / "bad.png")


@pytest.mark.parametrize("call", [
    lambda p: plots.latent_space(np.zeros((0, 3)), [], p),
    lambda p: plots.latent_animation([], p),
    lambda p: plots.training_curves([], p),
    lambda p: plots.distance_histograms([], [], p),
    lambda p: plots.roc_curve([], [], p, higher_means_same=False),
    lambda p: plots.side_by_side([], [], p),
])
def test_empty_input_raises_one_line_value_error(tmp_path, call):
  with pytest.raises(ValueError) as error:
    call(tmp_path / "empty.png")
  assert "empty" in str(error.value) and "\n" not in str(error.value)
  assert not list(tmp_path.iterdir())


def test_mismatched_lengths_raise(tmp_path):
  with pytest.raises(ValueError, match="lengths differ"):
    plots.latent_space(np.zeros((3, 2)), [0, 1], tmp_path / "x.png")
  with pytest.raises(ValueError, match="lengths differ"):
    plots.roc_curve([0.1, 0.2], [1], tmp_path / "x.png", higher_means_same=False)


# ------------------------------------------------- the run's animation: one view for all frames


def _epochs(d=5, frames=4, seed=0):
  """Embeddings [N, d] of the same points over ``frames`` epochs (clusters pulling apart)."""
  x, y = _clusters(d=d, seed=seed)
  return [x * (1 + e) + e for e in range(frames)], y


def test_latent_coordinates_use_the_last_frames_projection_for_every_frame():
  frames, _ = _epochs()
  points, labels, _ = plots.latent_coordinates(frames)
  projection = plots.fit_projection(frames[-1])
  for frame, xy in zip(frames, points):
    np.testing.assert_allclose(xy, projection.transform(frame), atol=1e-9)
  assert labels == ("PCA 1", "PCA 2")
  # A PCA per frame would draw a rotated copy of a frame where it drew the frame (a PCA does not
  # see rotations); one projection shows the rotation.
  rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))
  turned, _, _ = plots.latent_coordinates([frames[0] @ rotation, frames[-1]])
  assert not np.allclose(np.abs(turned[0]), np.abs(points[0]), atol=1e-3)


def test_latent_coordinates_draw_2d_as_they_are_with_limits_around_every_frame():
  frames, _ = _epochs(d=2)
  frames[1][0] = np.nan
  points, labels, (xlim, ylim) = plots.latent_coordinates(frames)
  assert labels == ("dim 1", "dim 2")
  np.testing.assert_array_equal(points[0], frames[0])
  assert np.all(np.isnan(points[1][0])) and np.all(np.isfinite(points[1][1:]))
  every = np.concatenate([f[np.all(np.isfinite(f), axis=1)] for f in frames])
  assert xlim[0] < every[:, 0].min() and xlim[1] > every[:, 0].max()
  assert ylim[0] < every[:, 1].min() and ylim[1] > every[:, 1].max()


def test_latent_frames_share_limits_and_name_their_epoch(tmp_path):
  frames, y = _epochs(d=5, frames=3)
  frames[1][:2] = np.nan
  paths = [tmp_path / "plots" / f"latent_epoch{e + 1:03d}.png" for e in range(3)]
  drawn = plots.latent_frames(frames, y, paths, [f"mnist test, epoch {e + 1}" for e in range(3)],
                              class_names=["a", "b", "c"], gif_path=tmp_path / "plots" / "l.gif")
  assert len(set(drawn["limits"])) == 1  # the same axes in every frame
  _, _, limits = plots.latent_coordinates(frames)
  np.testing.assert_allclose(drawn["limits"][0], limits)
  assert drawn["titles"] == ["mnist test, epoch 1", "mnist test, epoch 2 (2 non-finite rows dropped)",
                             "mnist test, epoch 3"]
  sizes = set()
  for path in paths:
    _check_image(path)
    with Image.open(path) as image:
      sizes.add(image.size)
  assert len(sizes) == 1
  with Image.open(drawn["animation"]) as gif:
    assert gif.n_frames == 3 and gif.size == sizes.pop()
  assert not list(tmp_path.rglob("*.tmp"))


def test_latent_frames_refuse_frames_of_other_points(tmp_path):
  frames, y = _epochs(frames=2)
  with pytest.raises(ValueError, match="differ in shape"):
    plots.latent_frames([frames[0], frames[1][:-1]], y, [tmp_path / "a.png", tmp_path / "b.png"],
                        ["1", "2"])


def test_latent_frames_after_the_first_are_blitted_pixel_for_pixel(tmp_path):
  """Frames after the first redraw only the points, spines and title over a saved background:
  a frame with the first one's points and title is the first one's image exactly."""
  rng = np.random.default_rng(0)
  first, other = rng.normal(size=(2, 300, 8))
  labels = np.arange(300) % 5
  paths = [tmp_path / f"frame{i}.png" for i in range(3)]
  plots.latent_frames([first, other, first], labels, paths, ["epoch", "other", "epoch"])
  images = [np.asarray(Image.open(path)) for path in paths]
  np.testing.assert_array_equal(images[2], images[0])
  assert np.any(images[1] != images[0])
