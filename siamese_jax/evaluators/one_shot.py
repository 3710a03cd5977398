"""``one_shot``: 5- and 20-way one-shot accuracy over the test classes (within a group where
the data groups its classes, e.g. Omniglot's alphabets), a query given the class of its most
similar support example as pairs are scored. In a run's summary where the test classes were
never trained on."""

import jax
import numpy as np

from siamese_jax import evaluate
from siamese_jax.evaluators.context import Context, Evaluator

TEST_WAYS = (5, 20)


def group_of_class(dataset) -> np.ndarray:
  """[C] int32: the group of each class of ``dataset`` (a data.LabelledImages with groups)."""
  found = np.zeros(dataset.num_classes, np.int32)
  found[dataset.labels] = dataset.groups
  return found


def accuracies(context: Context, dataset, embeddings, ways, within_group: bool) -> dict:
  """{"<n>_way": accuracy} of ``context.episodes`` N-way one-shot episodes over ``dataset``'s
  classes (embeddings [N, D] of its images; within a group if asked and the data has
  groups), episode keys folded with N; a way with too few classes is left out."""
  groups = group_of_class(dataset) if within_group and dataset.groups is not None else None
  found = {}
  for n_way in ways:
    try:
      found[f"{n_way}_way"] = evaluate.one_shot_accuracy(
          jax.random.fold_in(context.key, n_way), embeddings, dataset.labels, n_way,
          episodes=context.episodes, similarity=context.similarity,
          group_of_class=groups, within_group=groups is not None)
    except ValueError:  # too few classes (in a group) for n_way
      continue
  return found


def run(context: Context) -> dict:
  return {"one_shot": accuracies(context, context.datasets.test, context.embeddings("test"),
                                 TEST_WAYS, within_group=True)}


EVALUATOR = Evaluator("one_shot", run, summary="test",
                      applies=lambda context: context.unseen_test_classes)
