"""siamese_jax.program_memory and the call schedule it bounds (issue 27 problem 3)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import default
from siamese_jax import (batches, call_schedule, experiment, models, program_memory, sharding,
                         train)


def _schedule_config(steps_per_epoch, steps_per_call):
  config = default.get_config()
  config.train.steps_per_epoch, config.train.steps_per_call = steps_per_epoch, steps_per_call
  return config


def test_a_cap_cuts_the_epoch_into_equal_calls_of_at_most_the_cap():
  config = _schedule_config(20, 100)
  assert call_schedule.make_schedule(config, 1000, 128) == call_schedule.Schedule(20, 1, 20)
  assert call_schedule.make_schedule(config, 1000, 128, 4) == call_schedule.Schedule(4, 5, 20)
  # 22 steps under a cap of 7: 4 calls of 6 (24 steps), not 4 of 7 (28)
  capped = call_schedule.make_schedule(_schedule_config(22, 100), 1000, 128, 7)
  assert (capped.steps_per_call, capped.calls_per_epoch) == (6, 4)
  # a cap above train.steps_per_call changes nothing
  assert call_schedule.make_schedule(_schedule_config(22, 5), 1000, 128, 50) == \
      call_schedule.make_schedule(_schedule_config(22, 5), 1000, 128)


def test_the_liveness_peak_frees_values_after_their_last_use():
  def chain(x):  # [1000] float32: each value is dead once the next is made
    return ((x * 2.0) + 1.0) * 3.0
  jaxpr = jax.make_jaxpr(chain)(jnp.zeros(1000, jnp.float32)).jaxpr
  assert program_memory.jaxpr_peak_bytes(jaxpr) == 2 * 4000  # one input of an op and its output

  def keeps(x):  # all three products stay alive to the concatenation
    return jnp.concatenate([x * 2.0, x * 3.0, x * 4.0])
  jaxpr = jax.make_jaxpr(keeps)(jnp.zeros(1000, jnp.float32)).jaxpr
  assert program_memory.jaxpr_peak_bytes(jaxpr) == 3 * 4000 + 12000


def _small_convnet(image_size, batch_size=16, filters=8):
  config = default.get_config()
  config.model.encoder, config.model.filters = "convnet4", filters
  config.train.batch_size = batch_size
  spec = train.loss_spec_from_config(config)
  batch_spec = batches.batch_spec_from_config(config, spec.batch_kind)
  labels = np.arange(40) % 4
  train_set = types.SimpleNamespace(
      images=np.zeros((40, image_size, image_size, 1), np.uint8), labels=labels, num_classes=4)
  return config, spec, batch_spec, train_set


@pytest.mark.slow  # compiles a 3-step convnet4 call: ~10 s on an idle core, 85 s under load
def test_the_estimate_errs_large_against_xla_own_memory_analysis():
  config, spec, batch_spec, train_set = _small_convnet(28)
  mesh, model = sharding.make_mesh(), models.build_model(config.model)
  tx = train.optimizer_from_config(config, 10)
  peak = program_memory.step_peak_bytes(model, [28, 28, 1], tx, spec, 4, batch_spec, train_set,
                                        mesh)
  state = train.create_train_state(jax.random.key(0), model, [28, 28, 1], tx, spec, 4)
  data = sharding.device_data(train_set.images, train_set.labels, 4, mesh)
  steps = 3
  compiled = train.make_train_epoch(spec, batch_spec, steps, mesh, unroll=True).lower(
      state, data, jax.random.key(1)).compile()
  measured = compiled.memory_analysis().temp_size_in_bytes
  estimate = program_memory.call_bytes(peak, steps, unroll=True)
  assert measured <= estimate <= 2 * measured, (measured, estimate)


def test_an_unrolled_program_over_the_budget_gets_fewer_steps_per_call():
  config, spec, batch_spec, train_set = _small_convnet(64)
  config.train.steps_per_epoch, config.train.steps_per_call = 20, 100
  mesh, model = sharding.make_mesh(), models.build_model(config.model)
  peak = program_memory.step_peak_bytes(model, [64, 64, 1], train.optimizer_from_config(config, 1),
                                        spec, 4, batch_spec, train_set, mesh)
  budget = program_memory.call_bytes(peak, 5, unroll=True) + 1  # room for 5 steps, not 6
  config.train.program_budget_mb = budget / 2 ** 20
  datasets = types.SimpleNamespace(train=train_set)
  schedule = experiment._make_schedule(config, datasets, spec, batch_spec, model, mesh, True)
  assert schedule == call_schedule.Schedule(steps_per_call=5, calls_per_epoch=4, epochs=20)
  # in a loop (not unrolled) the steps share one step's buffers: no cap
  assert experiment._make_schedule(config, datasets, spec, batch_spec, model, mesh, False) == \
      call_schedule.Schedule(20, 1, 20)
  config.train.program_budget_mb = 1e6
  assert experiment._make_schedule(config, datasets, spec, batch_spec, model, mesh, True) == \
      call_schedule.Schedule(20, 1, 20)


def test_the_default_budget_is_half_the_device_limit_else_half_the_free_host_memory(monkeypatch):
  assert program_memory.budget_bytes(3.0) == 3 * 2 ** 20
  gpu = types.SimpleNamespace(memory_stats=lambda: {"bytes_limit": 8 * 2 ** 30})
  assert program_memory.budget_bytes(None, gpu) == 4 * 2 ** 30
  cpu = types.SimpleNamespace(memory_stats=lambda: None)
  monkeypatch.setattr(program_memory, "available_host_bytes", lambda: 10 * 2 ** 30)
  assert program_memory.budget_bytes(None, cpu) == 5 * 2 ** 30


XLA_OOM = "RESOURCE_EXHAUSTED: Out of memory allocating 37024068352 bytes."


@pytest.mark.parametrize("error, found", [
    (jax.errors.JaxRuntimeError(XLA_OOM), True),
    (MemoryError("Unable to allocate 34.5 GiB for an array"), True),
    (jax.errors.JaxRuntimeError("INVALID_ARGUMENT: something else"), False),
    (RuntimeError(XLA_OOM), False),
])
def test_allocation_failures_are_recognised(error, found):
  assert (program_memory.out_of_memory_error(error) is error) == found


def test_an_allocation_failure_raised_from_inside_another_error_is_found():
  try:
    try:
      raise jax.errors.JaxRuntimeError(XLA_OOM)
    except RuntimeError as inner:
      raise ValueError("while saving") from inner
  except ValueError as outer:
    assert "RESOURCE_EXHAUSTED" in str(program_memory.out_of_memory_error(outer))


def test_a_budget_that_is_not_positive_is_refused_in_one_line():
  from siamese_jax import config_checks
  config = default.get_config()
  config.train.program_budget_mb = -1.0
  with pytest.raises(config_checks.ConfigError, match="train.program_budget_mb=-1.0 must be a "
                     "positive number"):
    config_checks.validate(config)
