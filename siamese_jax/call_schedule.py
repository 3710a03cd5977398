"""How a run's training steps are cut: epochs of ``calls_per_epoch`` compiled calls of
``steps_per_call`` steps each (``train.make_train_epoch`` runs one call; progress, metrics and
preemption happen between calls)."""

from typing import NamedTuple


class Schedule(NamedTuple):
  """How the run's steps are cut: ``calls_per_epoch`` calls of ``steps_per_call`` steps."""
  steps_per_call: int
  calls_per_epoch: int
  epochs: int

  @property
  def steps_per_epoch(self) -> int:
    return self.steps_per_call * self.calls_per_epoch

  @property
  def total_steps(self) -> int:
    return self.steps_per_epoch * self.epochs


def make_schedule(config, train_size: int, examples_per_step: int) -> Schedule:
  """train.steps_per_epoch (None: train_size // examples per step), rounded up to whole calls."""
  steps = config.train.steps_per_epoch or max(train_size // examples_per_step, 1)
  per_call = min(config.train.steps_per_call, steps)
  return Schedule(per_call, -(-steps // per_call), config.train.epochs)
