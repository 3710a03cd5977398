"""The random keys a run's seed becomes, derived here only.

``run_keys(seed)``: ``init`` (the parameters), ``train`` (batches, dropout and augmentation,
folded with the epoch and the call) and ``evaluation`` (the validation and test pairs and the
episodes scored during and after training, and again by ``inference.recalibrate``).
``report_key(seed)``: the key of ``scripts/make_report.py``'s own evaluation, other pairs than
the run's.
"""

from typing import NamedTuple

import jax

REPORT_SEED_OFFSET = 100


class RunKeys(NamedTuple):
  init: jax.Array
  train: jax.Array
  evaluation: jax.Array


def run_keys(seed: int) -> RunKeys:
  """The three keys of a run of ``seed``, as ``experiment.train_and_evaluate`` draws them."""
  return RunKeys(*jax.random.split(jax.random.key(seed), 3))


def report_key(seed: int) -> jax.Array:
  """The report's evaluation key of a run of ``seed``."""
  return jax.random.key(seed + REPORT_SEED_OFFSET)
