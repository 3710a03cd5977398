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


# An epoch that train.steps_per_epoch=None would make shorter than this (a few hundred images at
# batch 128: 1 or 2 steps) gets this many steps: pairs and P x K batches are drawn at random, so
# an epoch is a count of steps between validations, and 20 epochs of 2 steps train nothing.
MIN_STEPS_PER_EPOCH = 10


def steps_per_epoch(config, train_size: int, examples_per_step: int) -> int:
  """train.steps_per_epoch, or (None) train_size // examples per step but at least
  MIN_STEPS_PER_EPOCH."""
  return config.train.steps_per_epoch or max(train_size // examples_per_step, MIN_STEPS_PER_EPOCH)


def few_steps_note(config, train_size: int, examples_per_step: int) -> str | None:
  """One line when train.steps_per_epoch=None made the epoch longer than the data (else None)."""
  if config.train.steps_per_epoch or train_size // examples_per_step >= MIN_STEPS_PER_EPOCH:
    return None
  return (f"{train_size} training images make {train_size // examples_per_step} step(s) of "
          f"{examples_per_step} examples an epoch; training {MIN_STEPS_PER_EPOCH} steps an epoch "
          "instead (set --config.train.steps_per_epoch to choose, or a smaller "
          "--config.train.batch_size for more, cheaper steps)")


def make_schedule(config, train_size: int, examples_per_step: int,
                  max_steps_per_call: int | None = None) -> Schedule:
  """``steps_per_epoch`` steps an epoch, rounded up to whole calls of at most
  train.steps_per_call steps. ``max_steps_per_call``: a lower cap (what the memory budget
  allows, ``siamese_jax.program_memory``); the epoch is then cut into that many or more calls of
  equal size, so it grows by less than one step per call."""
  steps = steps_per_epoch(config, train_size, examples_per_step)
  per_call = min(config.train.steps_per_call, steps)
  if max_steps_per_call is not None and max_steps_per_call < per_call:
    calls = -(-steps // max(max_steps_per_call, 1))
    return Schedule(-(-steps // calls), calls, config.train.epochs)
  return Schedule(per_call, -(-steps // per_call), config.train.epochs)
