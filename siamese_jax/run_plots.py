"""A run's plots (under workdir/plots): every epoch's latent-space frame and their GIF, drawn at
the end in one projection from the test embeddings each epoch kept on disk (so a resumed or
extended run draws all its epochs again), and the final curves, distance histograms and ROC."""

import jax
import numpy as np

from siamese_jax import plots, scoring, workdir as workdir_lib

# Every epoch's plot embeddings (~1 MB an epoch by default), kept so that a resumed or extended
# run draws all its epochs in one projection again.
LATENT_EMBEDDINGS_DIR = ".latent_embeddings"


def save_latent_embeddings(workdir, epoch: int, embeddings: np.ndarray) -> None:
  folder = workdir / LATENT_EMBEDDINGS_DIR
  folder.mkdir(exist_ok=True)
  np.save(folder / f"epoch{epoch:03d}.npy", embeddings)


def saved_latent_embeddings(workdir, epochs: int) -> dict:
  """{epoch: embeddings} saved by the epochs 1..``epochs`` a resumed run already trained."""
  found = {}
  for epoch in range(1, epochs + 1):
    path = workdir / LATENT_EMBEDDINGS_DIR / f"epoch{epoch:03d}.npy"
    if path.is_file():
      found[epoch] = np.load(path)
  return found


def _short_class_names(dataset):
  if dataset.class_names is None or len(dataset.class_names) > 10:
    return None
  return list(dataset.class_names)


class LatentFrames:
  """The latent-space frames of a run: each epoch's embeddings of the first eval.plot_points
  test images (kept on disk too, for a resumed run), drawn at the end in one projection."""

  def __init__(self, config, workdir, test_set, apply_fn, epochs_done: int):
    self.config, self.workdir, self.test_set = config, workdir, test_set
    self.images = test_set.images[:config.eval.plot_points]
    self.labels = test_set.labels[:config.eval.plot_points]
    self.latent = saved_latent_embeddings(workdir, epochs_done) if config.plots.latent else {}
    self._embed = jax.jit(lambda params, x: scoring.embed(apply_fn, params, x, views=False))

  def record(self, epoch: int, params) -> None:
    """Keeps ``epoch``'s embeddings (where plots.latent asks for frames)."""
    if self.config.plots.latent:
      self.latent[epoch] = np.asarray(self._embed(params, self.images))
      if workdir_lib.is_primary():
        save_latent_embeddings(self.workdir, epoch, self.latent[epoch])

  def start_drawing(self, pool):
    """A Future (of ``pool``) drawing every epoch's latent plot (plots/latent_epochNNN.png) and,
    if asked, their GIF; None where there is nothing to draw. Its result: {"animation": path}
    (or {})."""
    config, latent = self.config, self.latent
    if not (config.plots.latent and latent and workdir_lib.is_primary()):
      return None
    epochs = sorted(latent)
    plots_dir = self.workdir / "plots"

    def draw():
      drawn = plots.latent_frames(
          [latent[e] for e in epochs], self.labels,
          [plots_dir / f"latent_epoch{e:03d}.png" for e in epochs],
          [f"{config.data.name} test, epoch {e}" for e in epochs],
          class_names=_short_class_names(self.test_set),
          gif_path=plots_dir / "latent.gif" if config.plots.animation else None)
      return {} if drawn["animation"] is None else {"animation": drawn["animation"]}

    return pool.submit(draw)


def final_plots(plots_dir, history, test_pairs, pair_scoring) -> dict:
  """{"curves", "distances", "roc": path} of the run's curves and its final test pairs."""
  test_scores, test_same = test_pairs
  higher = pair_scoring.higher_means_same
  outputs = {}
  if history:
    outputs["curves"] = plots.training_curves(history, str(plots_dir / "curves.png"))
  outputs["distances"] = plots.distance_histograms(
      -test_scores if higher else test_scores, test_same, str(plots_dir / "distances.png"),
      threshold=None if higher else pair_scoring.threshold)
  outputs["roc"], _ = plots.roc_curve(test_scores, test_same, str(plots_dir / "roc.png"),
                                      higher_means_same=higher)
  return outputs


def collect(config, plots_dir, plot_jobs) -> dict:
  """{name: path} of every plot the Futures ``plot_jobs`` drew (waited for here), and the GIF of
  the frames already on disk where a finished run was run again."""
  outputs = {}
  for job in plot_jobs:
    outputs.update(job.result())
  if "animation" not in outputs and config.plots.latent and config.plots.animation:
    frames = sorted(str(p) for p in plots_dir.glob("latent_epoch*.png"))
    if frames:
      outputs["animation"] = plots.latent_animation(frames, str(plots_dir / "latent.gif"))
  return outputs
