"""The training metrics of an epoch as clu averages: merged call by call, and written into a
mid-epoch checkpoint as JSON (exact: float32 totals survive JSON) to be merged on after a resume
(clu.metric_writers would import TensorFlow; clu.metrics does not); and the run's steady rate."""

import dataclasses
import functools

import numpy as np
from clu import metrics as clu_metrics


def average(metrics: dict) -> clu_metrics.Collection:
  """A clu Collection averaging each named metric of a call ({name: [steps]})."""
  return _averaging_collection(tuple(sorted(metrics))).single_from_model_output(**metrics)


@functools.cache
def _averaging_collection(names: tuple[str, ...]):
  """The Collection class averaging ``names``, made once (making one builds a dataclass)."""
  return clu_metrics.Collection.create(
      **{name: clu_metrics.Average.from_output(name) for name in names})


def to_json(collection) -> dict:
  """{name: [total, count]} of an averaging Collection."""
  return {name: [float(value.total), int(value.count)]
          for name, value in _named_averages(collection).items()}


def _named_averages(collection) -> dict:
  return {field.name: getattr(collection, field.name) for field in dataclasses.fields(collection)
          if isinstance(getattr(collection, field.name), clu_metrics.Average)}


def from_json(saved: dict) -> clu_metrics.Collection:
  """The Collection that ``to_json`` wrote."""
  collection = average({name: np.zeros(0, np.float32) for name in saved})
  return collection.replace(**{name: clu_metrics.Average(total=np.float32(total),
                                                         count=np.int32(count))
                               for name, (total, count) in saved.items()})


def steady_examples_per_second(history) -> float | None:
  """Mean training examples/s over the epochs after the first: the first epoch's call also
  compiles the program (or loads it from the compilation cache)."""
  rates = [h["examples_per_second"] for h in history]
  return float(np.mean(rates[1:] if len(rates) > 1 else rates)) if rates else None
