"""``validation_one_shot``: one-shot accuracy over the validation classes, the figure to tune on:
{"5_way", "10_way"} across alphabets (validation held out by classes: ~10 % of them), or
{"5_way", "20_way"} within each held-out alphabet (held out by alphabets, the shape of
Omniglot's test). In a run's summary where validation was held out by classes or alphabets."""

from siamese_jax.evaluators import one_shot
from siamese_jax.evaluators.context import Context, Evaluator

WAYS = (5, 10)
WITHIN_ALPHABET_WAYS = (5, 20)


def run(context: Context) -> dict:
  within = context.datasets.split["by"] == "alphabets"
  return {"one_shot": one_shot.accuracies(
      context, context.datasets.validation, context.embeddings("validation"),
      WITHIN_ALPHABET_WAYS if within else WAYS, within_alphabet=within)}


EVALUATOR = Evaluator("validation_one_shot", run, summary="validation",
                      applies=lambda context: context.datasets.split["by"] in ("classes",
                                                                                "alphabets"))
