"""``new_classes``: for a run trained on some classes only (data.train_classes), pair verification
(threshold tuned on the validation pairs of the trained classes) and 2-way one-shot accuracy on
the test images of the trained classes ("seen_*") and of the others ("new_*"), and one-shot over
every test class at once ("all_<C>way", C the test classes)."""

import jax
import numpy as np

from siamese_jax import evaluate, splits
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  test_set, pair_scoring = context.datasets.test, context.pair_scoring
  val_scores, val_same = context.pairs("validation")
  seen = np.isin(test_set.labels, np.asarray(context.config.data.train_classes))
  result = {}
  for i, (name, members) in enumerate((("seen", seen), ("new", ~seen))):
    part = splits.take(test_set, np.flatnonzero(members))
    scores, same = context.score_pairs(part, jax.random.fold_in(context.key, 20 + i), "balanced")
    found = evaluate.pair_verification(scores, same, val_scores, val_same,
                                       pair_scoring.higher_means_same,
                                       fixed_threshold=pair_scoring.threshold)
    result[f"{name}_accuracy"], result[f"{name}_roc_auc"] = (found["accuracy_tuned"],
                                                             found["roc_auc"])
    result[f"{name}_2way"] = evaluate.one_shot_accuracy(
        jax.random.fold_in(context.key, 30 + i), context.embed(part.images), part.labels, 2,
        episodes=context.episodes, similarity=context.similarity)
  result[f"all_{test_set.num_classes}way"] = evaluate.one_shot_accuracy(
      jax.random.fold_in(context.key, 40), context.embeddings("test"), test_set.labels,
      test_set.num_classes, episodes=context.episodes, similarity=context.similarity)
  return result


# With data.test_classes the test labels are renumbered (and every test class may be new): the
# seen / new parts by data.train_classes' ids are only defined on a test split of every class.
EVALUATOR = Evaluator("new_classes", run,
                      applies=lambda context: (context.config.data.train_classes is not None
                                               and context.config.data.test_classes is None))
