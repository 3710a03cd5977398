"""``clustering``: NMI and AMI of a k-means clustering of the test embeddings into as many
clusters as test classes (``evaluate.clustering_metrics``, on unit embeddings where the model's
distance is cosine), the clustering figures of the metric-learning literature beside retrieval's.
In a run's summary where the test classes were never trained on, as ``retrieval``."""

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator

K_MEANS_SEED = 0  # k-means' own draw, fixed: two runs' figures differ by their embeddings only


def run(context: Context) -> dict:
  return {"clustering": evaluate.clustering_metrics(context.embeddings("test"),
                                                    context.datasets.test.labels,
                                                    distance=context.pair_scoring.distance,
                                                    seed=K_MEANS_SEED)}


EVALUATOR = Evaluator("clustering", run, summary="test",
                      applies=lambda context: context.unseen_test_classes)
