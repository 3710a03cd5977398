"""``validation_pairs``: accuracy (at the untuned threshold) and ROC AUC of the validation pairs:
every epoch's ``val_*`` figures (the best checkpoint is chosen on ``val_roc_auc``) and the
summary's."""

import numpy as np
from sklearn import metrics as sk_metrics

from siamese_jax import evaluate, scoring
from siamese_jax.evaluators.context import Context, Evaluator


def pair_metrics(scores, same, pair_scoring: scoring.PairScoring) -> dict:
  """accuracy (at the untuned threshold) and roc_auc of scored pairs: scores [M], same [M] bool."""
  similarity = scores if pair_scoring.higher_means_same else -np.asarray(scores)
  return {"accuracy": evaluate.accuracy_at_threshold(scores, same, pair_scoring.threshold,
                                                     pair_scoring.higher_means_same),
          "roc_auc": float(sk_metrics.roc_auc_score(same, similarity))}


def run(context: Context) -> dict:
  return pair_metrics(*context.pairs("validation"), context.pair_scoring)


EVALUATOR = Evaluator("validation_pairs", run, summary="validation")
