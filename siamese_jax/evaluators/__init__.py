"""Every evaluation of a trained model, one module each, on top of ``siamese_jax.evaluate``.

An evaluator is a record (``Evaluator``: name, ``run(context) -> dict``, the summary.json part it
adds to and when) in the module named for it; ``EVALUATORS`` lists them by name. What they read
is a ``Context`` (context.py): the model, the run's parts, and each part's embeddings and pair
scores computed once. The training run (``experiment.train_and_evaluate``: ``summary_figures``
at the end, ``validation_pairs`` every epoch, ``calibration`` for calibration.json), the report
(``scripts/make_report.py``), ``inference.recalibrate`` and ``predict evaluate`` (on a held-out
folder: ``FOLDER_EVALUATORS``) all evaluate through here.

A new evaluator is a module with its ``EVALUATOR`` record (and a test), added to the import and
the tuple below; with ``summary`` set, every training run's summary.json carries its figures.
"""

from siamese_jax.evaluators import (bce_head, calibration, clustering, cross_retrieval,
                                    distinct_pairs, elongation, identification, kfold_accuracy,
                                    new_classes, one_shot, pairs, retrieval, svm,
                                    validation_one_shot, validation_pairs)
from siamese_jax.evaluators.context import (Context, Evaluator, for_folder, for_report,  # noqa: F401
                                            for_run)

EVALUATORS: dict[str, Evaluator] = {module.EVALUATOR.name: module.EVALUATOR for module in (
    pairs, validation_pairs, retrieval, clustering, one_shot, validation_one_shot, calibration,
    svm, elongation, cross_retrieval, new_classes, bce_head, distinct_pairs, kfold_accuracy,
    identification)}

# What ``predict evaluate`` reports on a folder of classes never trained on (context.for_folder).
FOLDER_EVALUATORS = ("distinct_pairs", "kfold_accuracy", "identification")


def run(name: str, context: Context) -> dict:
  """The figures of the evaluator ``name`` on ``context``."""
  if name not in EVALUATORS:
    raise KeyError(f"evaluator {name!r} is not one of {', '.join(EVALUATORS)}; add its module to "
                   "siamese_jax/evaluators/__init__.py")
  return EVALUATORS[name].run(context)


def summary_figures(context: Context) -> dict:
  """{"test": {...}, "validation": {...}}: the figures of every evaluator that adds to a training
  run's summary and applies to this one, in ``EVALUATORS`` order."""
  found = {"test": {}, "validation": {}}
  for evaluator in EVALUATORS.values():
    if evaluator.summary is not None and evaluator.applies(context):
      found[evaluator.summary].update(evaluator.run(context))
  return found
