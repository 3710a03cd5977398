"""Host-side plots of a run: latent space, its animation, training curves, distance histograms, ROC.

Everything here takes NumPy-convertible arrays (JAX arrays are fine) and writes one file. Each
writer saves to ``path + ".tmp"`` and renames it over ``path`` with ``os.replace``, so a reader
(or a run killed mid-write) never sees a half-written image; parent folders are created, the
figure is closed, and the path is returned.

Non-finite inputs (a NaN embedding from a diverging run, a NaN loss) are dropped and counted in
the title instead of raising, so a plot made between epochs never stops training; an empty input
raises ``ValueError`` with a one-line message, since there is nothing to draw.

Figures are saved at a fixed size (no ``bbox_inches="tight"``), so the per-epoch latent plots of
one run have identical pixel sizes and make a clean GIF.
"""

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn import decomposition, metrics  # noqa: E402

DPI = 100
LATENT_FIGSIZE = (7, 5.5)  # inches: every latent plot of a run has the same pixel size
MAX_LEGEND_CLASSES = 20
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def _save_figure(fig, path) -> str:
  """Writes ``fig`` as a PNG at ``path`` atomically, closes it, returns ``path`` as a string."""
  path = os.fspath(path)
  tmp = path + ".tmp"
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(tmp, format="png", dpi=DPI)
    os.replace(tmp, path)
  finally:
    plt.close(fig)
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _check_not_empty(name: str, function: str, array: np.ndarray) -> None:
  if array.shape[0] == 0:
    raise ValueError(f"{function}: {name} is empty; pass at least one value")


def _check_same_length(function: str, **arrays) -> None:
  lengths = {name: a.shape[0] for name, a in arrays.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"{function}: lengths differ ({lengths}); pass one entry per row")


def _with_dropped(title: str, dropped: int, what: str = "non-finite rows") -> str:
  """``title`` followed by ``(k non-finite rows dropped)`` when k > 0."""
  if not dropped:
    return title
  note = f"({dropped} {what} dropped)"
  return f"{title} {note}" if title else note


def _as_embeddings(embeddings) -> np.ndarray:
  """embeddings [N, D] (or [N], read as D = 1) -> float64 [N, D]."""
  x = np.asarray(embeddings, dtype=np.float64)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim != 2:
    raise ValueError(f"embeddings must have shape [N, D], got {x.shape}")
  return x


def fit_projection(embeddings):
  """A PCA to 2-D fitted on the finite rows of embeddings [N, D]; None when D <= 2.

  Fit it once (e.g. on the first or last epoch's test embeddings) and pass it to every
  ``latent_space`` call so that successive epochs are drawn in the same coordinates. Needs at
  least 2 finite rows when D > 2.
  """
  x = _as_embeddings(embeddings)
  if x.shape[1] <= 2:
    return None
  finite = x[np.all(np.isfinite(x), axis=1)]
  if finite.shape[0] < 2:
    raise ValueError(f"fit_projection: need >= 2 finite rows to fit a PCA, got {finite.shape[0]}")
  return decomposition.PCA(n_components=2).fit(finite)


def project_2d(embeddings, projection=None):
  """(points [N, 2], (x label, y label)) for finite embeddings [N, D].

  ``projection`` (anything with ``.transform``) is applied when given; otherwise D > 2 is reduced
  with a PCA fitted here, D == 2 is used as is and D == 1 is drawn against zeros.
  """
  x = _as_embeddings(embeddings)
  n, d = x.shape
  if projection is None and d > 2:
    projection = fit_projection(x) if n >= 2 else None
    if projection is None:  # a single point: its PCA coordinates are the origin
      return np.zeros((n, 2)), ("PCA 1", "PCA 2")
  if projection is not None:
    if n == 0:
      return np.zeros((0, 2)), ("PCA 1", "PCA 2")
    points = np.asarray(projection.transform(x), dtype=np.float64)
    if points.shape != (n, 2):
      raise ValueError(f"projection.transform must return [N, 2], got {points.shape}")
    return points, ("PCA 1", "PCA 2")
  if d == 1:
    return np.concatenate([x, np.zeros_like(x)], axis=1), ("dim 1", "")
  return x, ("dim 1", "dim 2")


def _class_name(label, class_names) -> str:
  if class_names is None:
    return str(label)
  if isinstance(class_names, dict):
    return str(class_names.get(label, label))
  index = int(label) if np.issubdtype(type(label), np.integer) else -1
  return str(class_names[index]) if 0 <= index < len(class_names) else str(label)


def _class_styles(classes: np.ndarray) -> list[tuple]:
  """(tab10 colour, marker) per class; integer ids keep their colour across plots."""
  cmap = plt.get_cmap("tab10")
  integer = np.issubdtype(classes.dtype, np.integer)
  slots = [int(c) if integer else i for i, c in enumerate(classes)]
  return [(cmap(s % 10), _MARKERS[(s // 10) % len(_MARKERS)]) for s in slots]


def latent_space(embeddings, labels, path, title: str = "", class_names=None, projection=None) -> str:
  """Scatter of embeddings [N, D] in 2-D, coloured by labels [N]; writes a PNG at ``path``.

  D > 2 is reduced by ``projection`` (see ``fit_projection``) or, when None, by a PCA fitted on
  these embeddings. ``class_names`` (a list indexed by label or a dict) names the legend entries.
  Rows with a non-finite embedding or label are dropped and counted in the title.
  """
  x = _as_embeddings(embeddings)
  y = np.asarray(labels).reshape(-1)
  _check_not_empty("embeddings", "latent_space", x)
  _check_same_length("latent_space", embeddings=x, labels=y)
  keep = np.all(np.isfinite(x), axis=1)
  if np.issubdtype(y.dtype, np.floating):
    keep &= np.isfinite(y)
  points, (xlabel, ylabel) = project_2d(x[keep], projection)
  y = _integer_ids(y[keep])
  fig, ax = plt.subplots(figsize=LATENT_FIGSIZE, layout="constrained")
  _scatter_classes(ax, points, y, class_names, (xlabel, ylabel))
  ax.set_title(_with_dropped(title, int(np.sum(~keep))))
  return _save_figure(fig, path)



def _integer_ids(y: np.ndarray) -> np.ndarray:
  if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
    return y.astype(np.int64)  # float ids (e.g. from a JAX array) keep their integer colours
  return y


def _scatter_classes(ax, points, y, class_names, axis_labels) -> list:
  """One scatter per class of points [N, 2] (labels y [N]) on ``ax``, with the legend and axis
  labels of a latent plot; returns the scatters (in np.unique(y) order)."""
  classes = np.unique(y)
  size = float(np.clip(4000 / max(len(y), 1), 2, 30))
  scatters = []
  for cls, (colour, marker) in zip(classes, _class_styles(classes)):
    at = y == cls
    scatters.append(ax.scatter(points[at, 0], points[at, 1], s=size, color=colour, marker=marker,
                               alpha=0.7, linewidths=0, label=_class_name(cls, class_names)))
  if 0 < len(classes) <= MAX_LEGEND_CLASSES:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=max(1.0, 30 / size) ** 0.5,
              frameon=False, title="class")
  xlabel, ylabel = axis_labels
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if xlabel == "dim 1" and not ylabel:
    ax.set_yticks([])
  return scatters


def latent_coordinates(embeddings_per_frame, margin: float = 0.05):
  """One 2-D view for a sequence of embeddings [N, D] of the same points (one array per epoch).

  Returns (points per frame [N, 2], with NaN rows where an embedding is not finite; axis labels;
  (xlim, ylim)). D > 2 is reduced by one PCA, fitted on the last frame's finite rows and applied
  to every frame, so a point moves between frames only when its embedding does; D <= 2 is drawn
  as it is (D = 1 against zeros). The limits cover every frame's finite points, plus ``margin``
  of their span on each side, and are the same for all frames.
  """
  frames = [_as_embeddings(e) for e in embeddings_per_frame]
  if not frames:
    raise ValueError("latent_coordinates: no frames; pass at least one [N, D] array")
  if len({f.shape for f in frames}) > 1:
    raise ValueError(f"latent_coordinates: frames differ in shape ({sorted({f.shape for f in frames})}); "
                     "pass the same points every epoch")
  last = frames[-1]
  last_finite = last[np.all(np.isfinite(last), axis=1)]
  projection = fit_projection(last_finite) if last.shape[1] > 2 and len(last_finite) >= 2 else None
  if last.shape[1] > 2 and projection is None:  # the last frame cannot be fitted: the latest that can
    for frame in reversed(frames):
      finite = frame[np.all(np.isfinite(frame), axis=1)]
      if len(finite) >= 2:
        projection = fit_projection(finite)
        break
  points, axis_labels = [], ("PCA 1", "PCA 2")
  for frame in frames:
    keep = np.all(np.isfinite(frame), axis=1)
    xy = np.full((frame.shape[0], 2), np.nan)
    if np.any(keep):
      xy[keep], axis_labels = project_2d(frame[keep], projection)
    points.append(xy)
  finite = np.concatenate(points)
  finite = finite[np.all(np.isfinite(finite), axis=1)]
  if finite.size == 0:
    return points, axis_labels, ((-1.0, 1.0), (-1.0, 1.0))
  low, high = finite.min(axis=0), finite.max(axis=0)
  pad = np.maximum((high - low) * margin, 1e-6)
  limits = tuple((float(lo - p), float(hi + p)) for lo, hi, p in zip(low, high, pad))
  return points, axis_labels, limits


def latent_frames(embeddings_per_frame, labels, paths, titles, class_names=None,
                  gif_path=None, duration_ms: int = 500) -> dict:
  """The latent plot of every frame (e.g. every epoch's test embeddings [N, D]) in one view:
  one projection and fixed axis limits (``latent_coordinates``), each frame under its title;
  writes a PNG per frame at ``paths`` and, with ``gif_path``, their GIF. Frames look like
  ``latent_space``'s (non-finite rows dropped and counted in the title).

  Returns {"frames": paths, "animation": gif path or None, "limits": [(xlim, ylim) per frame as
  drawn], "titles": [title per frame as drawn]}. Uses no pyplot state, so it may run on a worker
  thread beside the training loop.
  """
  if not (len(embeddings_per_frame) == len(paths) == len(titles)):
    raise ValueError(f"latent_frames: {len(embeddings_per_frame)} frames, {len(paths)} paths, "
                     f"{len(titles)} titles; pass one of each per frame")
  y = _integer_ids(np.asarray(labels).reshape(-1))
  points, axis_labels, (xlim, ylim) = latent_coordinates(embeddings_per_frame)
  _check_same_length("latent_frames", embeddings=points[0], labels=y)
  fig = Figure(figsize=LATENT_FIGSIZE, dpi=DPI, layout="constrained")
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  classes = np.unique(y)
  scatters = _scatter_classes(ax, points[0], y, class_names, axis_labels)
  ax.set_xlim(*xlim)
  ax.set_ylim(*ylim)
  drawn, drawn_titles, images = [], [], []
  # Drawn every frame: what changes, and the spines over the points; the rest only once.
  moving = (*scatters, *ax.spines.values(), ax.title)
  for i, (xy, path, title) in enumerate(zip(points, paths, titles)):
    keep = np.all(np.isfinite(xy), axis=1)
    for cls, scatter in zip(classes, scatters):
      scatter.set_offsets(xy[keep & (y == cls)])
    ax.set_title(_with_dropped(title, int(np.sum(~keep))))
    if i == 0:  # every frame has the first one's layout: no jumps, and no layout pass per frame
      canvas.draw()
      rgba = np.array(canvas.buffer_rgba())
      fig.set_layout_engine("none")
      for artist in moving:
        artist.set_visible(False)
      canvas.draw()  # the background: axes, ticks, labels and legend without the points
      background = canvas.copy_from_bbox(fig.bbox)
      for artist in moving:
        artist.set_visible(True)
    else:  # blit: the background, then the points, the spines over them, the title
      canvas.restore_region(background)
      for artist in moving:
        ax.draw_artist(artist)
      rgba = np.asarray(canvas.buffer_rgba())
    _save_image(Image.fromarray(rgba), path, "png")
    images.append(Image.fromarray(rgba).convert("RGB"))
    drawn.append((ax.get_xlim(), ax.get_ylim()))
    drawn_titles.append(ax.get_title())
  animation = None if gif_path is None else latent_animation(images, gif_path, duration_ms)
  return {"frames": [os.fspath(p) for p in paths], "animation": animation, "limits": drawn,
          "titles": drawn_titles}


def _save_image(image, path, format: str) -> str:
  """``image`` (PIL) written at ``path`` atomically (parent folders created); returns the path."""
  path = os.fspath(path)
  tmp = path + ".tmp"
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(tmp, format=format)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def latent_animation(frame_paths: list, path_gif, duration_ms: int = 500) -> str:
  """An endlessly looping GIF of the images at ``frame_paths`` (e.g. one latent plot per epoch;
  PIL images are taken as they are).

  Frames of another size are resized to the first one's. Pillow merges consecutive identical
  frames into one longer frame, so the GIF has fewer frames only when two images are identical.
  """
  if len(frame_paths) == 0:
    raise ValueError("latent_animation: frame_paths is empty; pass at least one image path")
  frames = []
  for frame_path in frame_paths:
    if isinstance(frame_path, Image.Image):
      rgb = frame_path.convert("RGB")
    else:
      with Image.open(frame_path) as image:
        rgb = image.convert("RGB")
    if frames and rgb.size != frames[0].size:
      rgb = rgb.resize(frames[0].size, Image.Resampling.LANCZOS)
    frames.append(rgb)
  # Fast octree: ~12x faster than a median cut per frame, and it keeps the white background
  # exact (a median cut averages it to a grey).
  palette = [f.quantize(colors=256, method=Image.Quantize.FASTOCTREE) for f in frames]
  path_gif = os.fspath(path_gif)
  tmp = path_gif + ".tmp"
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path_gif)), exist_ok=True)
    palette[0].save(tmp, format="GIF", save_all=True, append_images=palette[1:],
                    duration=int(duration_ms), loop=0)
    os.replace(tmp, path_gif)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path_gif


def _series(history: list[dict], suffix: str) -> tuple[dict, int]:
  """{key: (epochs, values)} for every key ending in ``suffix``, and the non-finite count.

  The x value is the entry's "epoch" when present, else its 1-based position; missing and None
  values are skipped silently, non-finite ones are skipped and counted.
  """
  series, dropped = {}, 0
  for i, entry in enumerate(history):
    epoch = entry.get("epoch")
    x = float(i + 1) if epoch is None else float(epoch)
    for key, value in entry.items():
      if not key.endswith(suffix) or value is None:
        continue
      value = float(np.asarray(value))
      if not np.isfinite(value) or not np.isfinite(x):
        dropped += 1
        continue
      xs, ys = series.setdefault(key, ([], []))
      xs.append(x)
      ys.append(value)
  return series, dropped


def training_curves(history: list[dict], path) -> str:
  """Loss and accuracy against epoch, one panel each, from one dict per epoch; writes a PNG.

  Every key ending in "loss" (train_loss, test_loss, ...) goes in the first panel and every key
  ending in "accuracy" in the second; other keys are ignored.
  """
  if len(history) == 0:
    raise ValueError("training_curves: history is empty; pass at least one epoch's metrics")
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
  for ax, suffix in zip(axes, ("loss", "accuracy")):
    series, dropped = _series(history, suffix)
    for key, (xs, ys) in series.items():
      ax.plot(xs, ys, marker="o", markersize=3, label=key)
    if series:
      ax.legend()
    else:
      ax.text(0.5, 0.5, f"no {suffix} values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel(suffix)
    ax.grid(alpha=0.3)
    ax.set_title(_with_dropped(suffix.capitalize(), dropped, "non-finite values"))
  return _save_figure(fig, path)


def _pairs(function: str, values, same) -> tuple[np.ndarray, np.ndarray, int]:
  """(finite values [M'], same [M'] bool, dropped count) from values [M] and same [M]."""
  v = np.asarray(values, dtype=np.float64).reshape(-1)
  s = np.asarray(same, dtype=np.float64).reshape(-1)
  _check_not_empty("the input", function, v)
  _check_same_length(function, values=v, same=s)
  keep = np.isfinite(v) & np.isfinite(s)
  return v[keep], s[keep] > 0.5, int(np.sum(~keep))


def distance_histograms(distances, same, path, threshold: float | None = None) -> str:
  """Overlaid density histograms of same-class and different-class pair distances; writes a PNG.

  distances [M] and same [M] (bool or 0/1) share one set of bins; ``threshold`` draws a
  vertical line (e.g. the decision threshold of a verification model).
  """
  d, s, dropped = _pairs("distance_histograms", distances, same)
  bins = np.histogram_bin_edges(d, bins=40) if d.size else np.linspace(0.0, 1.0, 41)
  fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
  for group, name, colour in ((s, "same class", "tab:blue"), (~s, "different class", "tab:orange")):
    if np.any(group):
      ax.hist(d[group], bins=bins, density=True, alpha=0.5, color=colour,
              label=f"{name} (n={int(np.sum(group))})")
  if threshold is not None and np.isfinite(threshold):
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.3g}")
  if ax.get_legend_handles_labels()[0]:
    ax.legend()
  ax.set_xlabel("distance")
  ax.set_ylabel("density")
  ax.set_title(_with_dropped("Pair distances", dropped, "non-finite pairs"))
  return _save_figure(fig, path)


def roc_curve(scores, same, path, higher_means_same: bool) -> tuple[str, float]:
  """ROC of telling same-class pairs from different-class ones by scores [M]; (path, AUC).

  Pass distances with ``higher_means_same=False`` (they are negated), similarities or
  probabilities with True. The AUC is NaN, and no curve is drawn, when the finite pairs hold
  only one of the two classes.
  """
  v, s, dropped = _pairs("roc_curve", scores, same)
  v = v if higher_means_same else -v
  fig, ax = plt.subplots(figsize=(5.5, 5.5), layout="constrained")
  ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance (AUC = 0.5)")
  title = "ROC"
  if 0 < np.sum(s) < s.size:
    fpr, tpr, _ = metrics.roc_curve(s, v)
    auc = float(metrics.roc_auc_score(s, v))
    ax.plot(fpr, tpr, color="tab:blue", label=f"model (AUC = {auc:.3f})")
  else:
    auc = float("nan")
    title = "ROC (undefined: pairs of one class only)"
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel("false positive rate")
  ax.set_ylabel("true positive rate")
  ax.legend(loc="lower right")
  ax.set_title(_with_dropped(title, dropped, "non-finite pairs"))
  return _save_figure(fig, path), auc


def side_by_side(image_paths: list[str], titles: list[str], path) -> str:
  """The images at ``image_paths`` in one row, each under its title (e.g. "Adam" vs "SGD").

  Each panel keeps its image's aspect ratio; the figure is sized so the images are drawn at
  about their own pixel size.
  """
  if len(image_paths) == 0:
    raise ValueError("side_by_side: image_paths is empty; pass at least one image path")
  if len(titles) != len(image_paths):
    raise ValueError(f"side_by_side: {len(image_paths)} images but {len(titles)} titles; "
                     "pass one title per image")
  images = []
  for image_path in image_paths:
    with Image.open(image_path) as image:
      images.append(np.asarray(image.convert("RGBA")))
  widths = [im.shape[1] for im in images]
  height = max(im.shape[0] for im in images)
  fig, axes = plt.subplots(1, len(images), figsize=(sum(widths) / DPI, height / DPI + 0.5),
                           gridspec_kw={"width_ratios": widths}, squeeze=False, layout="constrained")
  for ax, image, title in zip(axes[0], images, titles):
    ax.imshow(image)
    ax.set_title(title)
    ax.axis("off")
  return _save_figure(fig, path)
