"""``pairs``: verification of the test pairs, the threshold tuned on the validation pairs only.

Figures: accuracy_fixed (at the untuned threshold: eval.threshold on the distance, 0 on a
logit), accuracy_tuned, threshold_tuned, roc_auc and eer (``evaluate.pair_verification``).
"""

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  val_scores, val_same = context.pairs("validation")
  test_scores, test_same = context.pairs("test")
  pair_scoring = context.pair_scoring
  return evaluate.pair_verification(test_scores, test_same, val_scores, val_same,
                                    pair_scoring.higher_means_same,
                                    fixed_threshold=pair_scoring.threshold)


EVALUATOR = Evaluator("pairs", run, summary="test")
