"""``cross_retrieval``: on a two-source test split (data/two_sources.py), each second-source image
(tower 1) as a query among the first source's (tower 0), by the class they share: seed 002's use,
a query of one kind finding examples of its class of the other kind."""

from siamese_jax import data, evaluate
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  test_set = context.datasets.test
  source = data.two_sources.source_of(test_set.labels, test_set.num_classes)
  shared_class = data.two_sources.shared_class(test_set.labels, test_set.num_classes)
  queries = context.embed(test_set.images[source == 1], tower=1)
  references = context.embed(test_set.images[source == 0], tower=0)
  found = evaluate.cross_retrieval_metrics(queries, shared_class[source == 1], references,
                                           shared_class[source == 0],
                                           distance=context.pair_scoring.distance)
  return {"cross_precision_at_1": found["precision_at_1"],
          "cross_map_at_r": found["mean_average_precision_at_r"]}


EVALUATOR = Evaluator("cross_retrieval", run)
