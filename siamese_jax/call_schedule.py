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


def make_schedule(config, train_size: int, examples_per_step: int,
                  max_steps_per_call: int | None = None) -> Schedule:
  """train.steps_per_epoch (None: train_size // examples per step), rounded up to whole calls of
  at most train.steps_per_call steps. ``max_steps_per_call``: a lower cap (what the memory budget
  allows, ``siamese_jax.program_memory``); the epoch is then cut into that many or more calls of
  equal size, so it grows by less than one step per call."""
  steps = config.train.steps_per_epoch or max(train_size // examples_per_step, 1)
  per_call = min(config.train.steps_per_call, steps)
  if max_steps_per_call is not None and max_steps_per_call < per_call:
    calls = -(-steps // max(max_steps_per_call, 1))
    return Schedule(-(-steps // calls), calls, config.train.epochs)
  return Schedule(per_call, -(-steps // per_call), config.train.epochs)
