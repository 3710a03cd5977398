"""siamese_jax.call_schedule: an epoch's steps and their calls (issue 27 problem 6: a small
folder's epoch is not 1 or 2 steps without a word)."""

from experiments import default
from siamese_jax import call_schedule


def _config(steps_per_epoch=None, steps_per_call=100):
  config = default.get_config()
  config.train.steps_per_epoch, config.train.steps_per_call = steps_per_epoch, steps_per_call
  return config


def test_a_few_hundred_images_still_make_an_epoch_of_ten_steps_and_say_so():
  config = _config()
  schedule = call_schedule.make_schedule(config, 230, 128)  # 230 // 128 = 1 step
  assert schedule.steps_per_epoch == call_schedule.MIN_STEPS_PER_EPOCH == 10
  note = call_schedule.few_steps_note(config, 230, 128)
  assert "\n" not in note and "230 training images make 1 step(s)" in note
  assert "--config.train.steps_per_epoch" in note and "--config.train.batch_size" in note


def test_enough_data_or_a_chosen_count_is_left_alone():
  assert call_schedule.steps_per_epoch(_config(), 60000, 128) == 468
  assert call_schedule.few_steps_note(_config(), 60000, 128) is None
  chosen = _config(steps_per_epoch=3)
  assert call_schedule.make_schedule(chosen, 230, 128).steps_per_epoch == 3
  assert call_schedule.few_steps_note(chosen, 230, 128) is None
