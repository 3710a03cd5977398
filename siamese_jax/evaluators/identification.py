"""``identification``: closed-set one-shot identification over all the test classes at once: one
image of each class enrolled, every other image identified as the class of its most similar
enrolled image (``evaluate.one_shot_identification``, 10 seeded draws of the enrolled images), as
pairs are scored; what ``predict index`` + ``identify`` do with one image per person."""

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  """{"one_shot_identification": {"accuracy", "std", "queries", "classes", "draws"}}."""
  query = context.embeddings("test", 0)
  gallery = query if context.config.model.shared_weights else context.embeddings("test", 1)
  return {"one_shot_identification": evaluate.one_shot_identification(
      context.similarity, gallery, query, context.datasets.test.labels, seed=context.pair_seed)}


EVALUATOR = Evaluator("identification", run)
