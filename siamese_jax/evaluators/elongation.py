"""``elongation``: how spindly the test classes' clusters are in the 2-D projection of the
latent-space plot (seed 002's Adam vs SGD picture, as a number)."""

import numpy as np

from siamese_jax import plots
from siamese_jax.evaluators.context import Context, Evaluator


def cluster_elongation(points, labels) -> float:
  """Mean over classes of sqrt(largest / smallest covariance eigenvalue) of 2-D points [N, 2]:
  1 for round clusters, large for spindly ones."""
  ratios = []
  for c in np.unique(labels):
    eig = np.linalg.eigvalsh(np.cov(points[labels == c].T))
    ratios.append(np.sqrt(eig[-1] / max(eig[0], 1e-12)))
  return float(np.mean(ratios))


def run(context: Context) -> dict:
  points = plots.project_2d(context.embeddings("test"))[0]
  return {"elongation": cluster_elongation(points, context.datasets.test.labels)}


EVALUATOR = Evaluator("elongation", run)
