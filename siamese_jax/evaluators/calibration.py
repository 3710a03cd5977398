"""``calibration``: the verification threshold chosen on the validation pairs for the context's
``far`` (None: best accuracy), with its FAR/FRR and accuracy on the validation and on the test
pairs; ``file_contents`` is calibration.json (workdir.CALIBRATION_FILE), which inference reads."""

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  """{"threshold", "target", "higher_means_same", "validation": {far, frr, accuracy}, "test": ...}."""
  higher = context.pair_scoring.higher_means_same
  chosen = evaluate.calibrate(*context.pairs("validation"), higher, context.far)
  test_scores, test_same = context.pairs("test")
  chosen["test"] = {**evaluate.error_rates(test_scores, test_same, chosen["threshold"], higher),
                    "accuracy": evaluate.accuracy_at_threshold(test_scores, test_same,
                                                               chosen["threshold"], higher)}
  return chosen


def file_contents(contexts: dict, latest_step: int, best_step: int | None) -> dict:
  """calibration.json: ``run`` of each checkpoint's context in ``contexts`` {step: context} (the
  latest and the best checkpoint), and how their pairs were scored."""
  pair_scoring = next(iter(contexts.values())).pair_scoring
  return {"checkpoints": {str(step): run(context) for step, context in contexts.items()},
          "latest_step": latest_step, "best_step": best_step,
          "scoring": {"head": pair_scoring.head, "distance": pair_scoring.distance,
                      "higher_means_same": pair_scoring.higher_means_same},
          "pairs": {"validation": "held out of the training split", "test": "test split"}}


EVALUATOR = Evaluator("calibration", run)
