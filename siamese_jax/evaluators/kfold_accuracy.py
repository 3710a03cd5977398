"""``kfold_accuracy``: LFW's verification protocol on the test part's distinct pairs: the pairs
in ``context.folds`` folds (10 as LFW), each fold's accuracy at the threshold chosen on the other
folds, reported as mean and standard deviation (``evaluate.kfold_accuracy``). The pairs are
balanced first (as many of each kind, the larger kind sampled), as LFW's folds are, so the
accuracy is not that of always answering "different"."""

import numpy as np

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  """{"kfold_accuracy": {"mean", "std", "folds", "pairs", "accuracies", "thresholds"}}."""
  scores, same, _ = context.distinct_pairs("test")
  rng = np.random.default_rng(context.pair_seed)
  count = int(min(same.sum(), (~same).sum()))
  rows = np.concatenate([rng.choice(np.flatnonzero(kind), count, replace=False)
                         for kind in (same, ~same)])
  found = evaluate.kfold_accuracy(scores[rows], same[rows], context.pair_scoring.higher_means_same,
                                  context.folds, context.pair_seed)
  return {"kfold_accuracy": {**found, "folds": context.folds, "pairs": int(len(rows))}}


EVALUATOR = Evaluator("kfold_accuracy", run)
