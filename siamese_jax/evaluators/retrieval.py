"""``retrieval``: leave-one-out retrieval over the test embeddings (P@1, R-precision, MAP@R,
k-NN accuracy, Recall@{1,2,4,8}; ``evaluate.retrieval_metrics``) on the model's distance. In a
run's summary where the test classes were never trained on (``clustering`` beside it)."""

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  return {"retrieval": evaluate.retrieval_metrics(context.embeddings("test"),
                                                  context.datasets.test.labels,
                                                  distance=context.pair_scoring.distance)}


EVALUATOR = Evaluator("retrieval", run, summary="test",
                      applies=lambda context: context.unseen_test_classes)
