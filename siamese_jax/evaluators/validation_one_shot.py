"""``validation_one_shot``: one-shot accuracy over the validation classes, the figure to tune on:
{"5_way", "10_way"} across groups (validation held out by classes: ~10 % of them), or
{"5_way", "20_way"} within each held-out group (held out by groups, e.g. Omniglot's alphabets, the
shape of Omniglot's test). In a run's summary where validation was held out by classes or groups."""

from siamese_jax import splits
from siamese_jax.evaluators import one_shot
from siamese_jax.evaluators.context import Context, Evaluator

WAYS = (5, 10)
WITHIN_GROUP_WAYS = (5, 20)


def run(context: Context) -> dict:
  within = context.datasets.split["by"] in splits.GROUPS
  return {"one_shot": one_shot.accuracies(
      context, context.datasets.validation, context.embeddings("validation"),
      WITHIN_GROUP_WAYS if within else WAYS, within_group=within)}


EVALUATOR = Evaluator("validation_one_shot", run, summary="validation",
                      applies=lambda context: context.datasets.split["by"] != "images")
