"""``calibration``: the verification threshold chosen on every distinct validation pair (each kind
capped at half of eval.pairs: ``Context.distinct_pairs``, no pair counted twice) for the
context's ``far`` (None: best accuracy; ``evaluate.calibrate`` says in ``notice`` when the pairs
are too few and what it fell back to), with its FAR/FRR and accuracy on the validation and on
the test pairs; ``file_contents`` is calibration.json (workdir.CALIBRATION_FILE), which inference
reads, and which names the checkpoint that predict and export use for "best" (``best_step``)."""

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  """{"threshold", "target", "higher_means_same", "notice", "validation": {far, frr, accuracy,
  same_pairs, different_pairs}, "test": {far, frr, accuracy}}."""
  higher = context.pair_scoring.higher_means_same
  scores, same, _ = context.distinct_pairs("validation")
  _, too_small = validation_can_choose(context)
  chosen = evaluate.calibrate(scores, same, higher, context.far, too_small)
  test_scores, test_same = context.pairs("test")
  chosen["test"] = {**evaluate.error_rates(test_scores, test_same, chosen["threshold"], higher),
                    "accuracy": evaluate.accuracy_at_threshold(test_scores, test_same,
                                                               chosen["threshold"], higher)}
  return chosen


MIN_CHOOSING_CLASSES = 10  # validation classes below which their impostor pairs are too alike


def validation_can_choose(context: Context) -> tuple[bool, str | None]:
  """(whether the validation part can choose a checkpoint and a threshold, else why in a few
  words): at least MIN_CHOOSING_CLASSES classes and evaluate.MIN_CHOOSING_PAIRS distinct pairs
  of each kind. A face folder's 3 validation people had 135 same pairs, but their impostor
  pairs came from 3 pairs of people: ROC AUC 0.99+ every epoch, and a threshold with test FAR
  0.53."""
  _, _, drawn = context.distinct_pairs("validation")
  positives, negatives = drawn["positives_total"], drawn["negatives_total"]
  classes = len(set(context.datasets.validation.labels.tolist()))
  if classes >= MIN_CHOOSING_CLASSES and min(positives, negatives) >= evaluate.MIN_CHOOSING_PAIRS:
    return True, None
  return False, (f"{classes} classes, {positives} same and {negatives} different distinct pairs; "
                 f"{MIN_CHOOSING_CLASSES} classes and {evaluate.MIN_CHOOSING_PAIRS} pairs of "
                 "each kind needed")


def file_contents(contexts: dict, latest_step: int, best_step: int | None) -> dict:
  """calibration.json: ``run`` of each checkpoint's context in ``contexts`` {step: context} (the
  latest and the best checkpoint), how their pairs were scored, and ``best_step``: the
  checkpoint "best" means for predict and export: ``best_step`` (highest validation ROC AUC)
  where the validation part can choose (``validation_can_choose``), else the latest, with
  ``notice`` saying so (``best_by_metric`` keeps the metric's choice)."""
  latest = contexts[latest_step]
  can_choose, too_small = validation_can_choose(latest)
  notice = None if can_choose else (
      f"the validation part is too small to choose a checkpoint on ({too_small}): predict and "
      "export use the final one (raise data.validation_fraction for more validation classes)")
  pair_scoring = latest.pair_scoring
  return {"checkpoints": {str(step): run(context) for step, context in contexts.items()},
          "latest_step": latest_step,
          "best_step": best_step if can_choose or best_step is None else latest_step,
          "best_by_metric": best_step, "notice": notice,
          "scoring": {"head": pair_scoring.head, "distance": pair_scoring.distance,
                      "higher_means_same": pair_scoring.higher_means_same},
          "pairs": {"validation": "every distinct pair held out of the training split (each "
                                  "kind up to eval.pairs / 2)", "test": "test split"}}


EVALUATOR = Evaluator("calibration", run)
