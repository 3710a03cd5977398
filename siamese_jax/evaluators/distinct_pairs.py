"""``distinct_pairs``: verification on every distinct pair of the test part (each kind capped at
the context's ``max_pairs``): ROC AUC, EER and the true-accept rate at false-accept rates 1e-1,
1e-2 and 1e-3 (None where too few different pairs measure it: ``evaluate.tar_at_far``), as
TF Similarity's ``evaluate_classification`` and face-verification papers report them."""

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator

FARS = (1e-1, 1e-2, 1e-3)


def run(context: Context) -> dict:
  """{"pairs": {"same", "different", "same_total", "different_total"}, "roc_auc", "eer",
  "tar_at_far": {"0.1": TAR or None, ...}}."""
  scores, same, drawn = context.distinct_pairs("test")
  higher = context.pair_scoring.higher_means_same
  return {"pairs": {"same": int(same.sum()), "different": int((~same).sum()),
                    "same_total": drawn["positives_total"],
                    "different_total": drawn["negatives_total"]},
          "roc_auc": evaluate.roc_auc(scores, same, higher),
          "eer": evaluate.equal_error_rate(scores, same, higher),
          "tar_at_far": {f"{far:g}": evaluate.tar_at_far(scores, same, far, higher)
                         for far in FARS}}


EVALUATOR = Evaluator("distinct_pairs", run)
