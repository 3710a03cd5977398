"""siamese_jax.streaming: the budget that picks the input path, host-drawn batches that obey the
samplers and equal the device path's, a streamed call that trains exactly as the device call, the
prefetch, and (slow) a whole run streamed that ends where the device-resident run does."""

import logging
import types

import jax
import numpy as np
import optax
import pytest

from experiments import contrastive, default
from siamese_jax import batches, experiment, models, sharding, streaming, train

KEY = jax.random.key(3)
NUM_CLASSES, PER_CLASS = 6, 9  # even: as a two-source set, 3 classes in each source


def _labelled_images():
  """Images whose pixels spell their own index (channel 0: i % 256, channel 1: i // 256), so a
  gathered image says which example it is; labels grouped unevenly over the classes."""
  n = NUM_CLASSES * PER_CLASS
  idx = np.arange(n)
  images = np.zeros((n, 4, 4, 2), np.uint8)
  images[..., 0] = (idx % 256)[:, None, None]
  images[..., 1] = (idx // 256)[:, None, None]
  labels = np.random.default_rng(0).permutation(np.repeat(np.arange(NUM_CLASSES), PER_CLASS))
  return images, labels.astype(np.int32)


def _index_of(x):
  """The example index spelled by gathered images [..., H, W, 2]."""
  x = np.asarray(x).astype(np.int64)
  return x[..., 0, 0, 0] + 256 * x[..., 0, 0, 1]


SPECS = {
    "pairs": batches.BatchSpec(kind="pairs", batch_size=8),
    "two_source": batches.BatchSpec(kind="pairs", batch_size=8, pair_source="two_source"),
    "pk": batches.BatchSpec(kind="pk", classes_per_batch=3, samples_per_class=4),
    "uniform": batches.BatchSpec(kind="uniform", batch_size=6),
}


@pytest.fixture(scope="module")
def both_paths():
  images, labels = _labelled_images()
  mesh = sharding.make_mesh(jax.devices()[:1])
  return (streaming.host_data(images, labels, NUM_CLASSES),
          sharding.device_data(images, labels, NUM_CLASSES, mesh), labels, mesh)


def test_budget_default_is_half_the_device_limit_else_a_quarter_of_host_ram():
  assert streaming.device_budget_bytes(0.5) == 2 ** 19
  gpu = types.SimpleNamespace(memory_stats=lambda: {"bytes_limit": 8 * 2 ** 30})
  assert streaming.device_budget_bytes(None, gpu) == 4 * 2 ** 30
  cpu = types.SimpleNamespace(memory_stats=lambda: None)
  assert streaming.device_budget_bytes(None, cpu) == streaming.host_memory_bytes() // 4
  assert streaming.device_budget_bytes(None) > 0


@pytest.mark.parametrize("kind", ["pairs", "two_source"])
def test_streamed_pairs_are_balanced_and_consistent_with_their_labels(both_paths, kind):
  host, _, labels, _ = both_paths
  drawn = streaming.host_batches(KEY, host, SPECS[kind], steps=5)
  assert drawn["x_a"].shape == (5, 8, 4, 4, 2) and drawn["x_a"].dtype == np.uint8
  same = drawn["same"]
  np.testing.assert_array_equal(same, np.tile([1.0] * 4 + [0.0] * 4, (5, 1)))
  a, b = _index_of(drawn["x_a"]), _index_of(drawn["x_b"])
  if kind == "two_source":  # classes 0-2 are source A's, 3-5 the same classes of source B
    half = NUM_CLASSES // 2
    assert np.all(labels[a] < half) and np.all(labels[b] >= half)
    assert np.all((labels[a] == labels[b] - half) == (same > 0))
  else:
    assert np.all((labels[a] == labels[b]) == (same > 0))
  assert np.all(a[same > 0] != b[same > 0])  # no image paired with itself
  np.testing.assert_array_equal(drawn["mask"], 1.0)


def test_streamed_pk_batches_hold_p_classes_of_k_distinct_examples(both_paths):
  host, _, labels, _ = both_paths
  drawn = streaming.host_batches(KEY, host, SPECS["pk"], steps=4)
  assert drawn["x"].shape == (4, 12, 4, 4, 2)
  for x, label in zip(drawn["x"], drawn["label"]):
    idx = _index_of(x)
    np.testing.assert_array_equal(labels[idx], label)
    classes = label.reshape(3, 4)
    assert np.all(classes == classes[:, :1]) and len(set(classes[:, 0])) == 3
    assert all(len(set(row)) == 4 for row in idx.reshape(3, 4))


def test_streamed_uniform_batches_carry_their_images_labels(both_paths):
  host, _, labels, _ = both_paths
  drawn = streaming.host_batches(KEY, host, SPECS["uniform"], steps=3)
  np.testing.assert_array_equal(labels[_index_of(drawn["x"])], drawn["label"])


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_streamed_batches_equal_the_device_paths(both_paths, kind):
  """The host draws, step by step, exactly what sample_batch draws on device (before views)."""
  host, device, _, _ = both_paths
  spec = SPECS[kind]
  drawn = streaming.host_batches(KEY, host, spec, steps=3)
  for step in range(3):
    batch_key, _ = train.step_keys(KEY, step)
    on_device = batches.gather_batch(device.images, device.labels,
                                     batches.draw_indices(batch_key, device.index,
                                                          device.labels.shape[0], spec))
    for name, value in on_device.items():
      np.testing.assert_array_equal(drawn[name][step], value, err_msg=f"{kind} {name} {step}")


def _state_and_specs(augment):
  config = default.get_config()
  config.model.update(encoder="mlp", features=(16, 8), dropout_rates=(0.1, 0.0))
  model = models.build_model(config.model)
  batch_spec = batches.BatchSpec(kind="pairs", batch_size=8, augment=augment,
                                 crop_scale=(0.5, 1.0) if augment else None, flip=augment)
  state = train.create_train_state(jax.random.key(0), model, (4, 4, 2), optax.adam(1e-2))
  return state, train.loss_spec_from_config(config), batch_spec


@pytest.mark.parametrize("augment", [False, True])
def test_a_streamed_call_trains_exactly_as_the_device_call(both_paths, augment):
  host, device, _, mesh = both_paths
  state, spec, batch_spec = _state_and_specs(augment)
  twin, _, _ = _state_and_specs(augment)  # the same init (the calls donate their state)
  on_device, device_metrics = train.make_train_epoch(spec, batch_spec, 4, mesh)(twin, device, KEY)
  call = streaming.StreamedTrainCall(spec, batch_spec, 4, mesh)
  streamed, metrics = call(state, host, KEY)
  np.testing.assert_allclose(metrics["loss"], device_metrics["loss"], rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(streamed.params),
                  jax.tree_util.tree_leaves(on_device.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_prefetch_draws_the_expected_calls_ahead_and_survives_a_surprise(both_paths, caplog):
  caplog.set_level(logging.WARNING)  # whatever level an earlier test left the root logger at
  host, _, _, mesh = both_paths
  state, spec, batch_spec = _state_and_specs(False)
  train_key = jax.random.key(7)
  keys = list(streaming.call_keys(train_key, calls_per_epoch=2, epochs=2))
  assert len(keys) == 4
  np.testing.assert_array_equal(  # the loop's rule: fold_in(fold_in(train_key, epoch), call)
      jax.random.key_data(keys[3]),
      jax.random.key_data(jax.random.fold_in(jax.random.fold_in(train_key, 1), 1)))
  resumed = list(streaming.call_keys(train_key, 2, 2, start_epoch=0, start_call=1))
  assert len(resumed) == 3
  np.testing.assert_array_equal(jax.random.key_data(resumed[0]), jax.random.key_data(keys[1]))
  call = streaming.StreamedTrainCall(spec, batch_spec, 2, mesh, expected_keys=iter(keys))
  state, first = call(state, host, keys[0])
  assert len(call._pending) == streaming.PREFETCH_CALLS  # keys[1] and keys[2] drawn ahead
  ahead = call._pending[0][1].result()
  np.testing.assert_array_equal(ahead["x_a"], call.placed_batches(host, keys[1])["x_a"])
  state, _ = call(state, host, keys[1])
  assert "not the expected one" not in caplog.text
  state, _ = call(state, host, jax.random.key(99))  # not the expected keys[2]
  assert not call._pending and "not the expected one" in caplog.text
  _, metrics = call(state, host, keys[3])
  assert np.all(np.isfinite(metrics["loss"])) and np.all(np.isfinite(first["loss"]))


def test_the_budget_picks_the_path(both_paths):
  host, _, labels, mesh = both_paths
  images, _ = _labelled_images()
  train_set = types.SimpleNamespace(images=images, labels=labels, num_classes=NUM_CLASSES)
  schedule = types.SimpleNamespace(steps_per_call=2, calls_per_epoch=1, epochs=1)
  _, spec, batch_spec = _state_and_specs(False)
  args = (train_set, spec, batch_spec, schedule, mesh, False, jax.random.key(0))
  held = streaming.make_train_input(*args, budget_mb=1.0)
  assert isinstance(held.data, sharding.DeviceData) and "held on every device" in held.description
  streamed = streaming.make_train_input(*args, budget_mb=images.nbytes / 2 ** 20 / 2)
  assert isinstance(streamed.data, streaming.HostData)
  assert isinstance(streamed.run_call, streaming.StreamedTrainCall)
  assert "streamed from host memory" in streamed.description


def _tiny_run(tmp_path, name, budget, epochs=3):
  """experiments/contrastive.py:tiny with ``epochs`` of 40 steps into tmp_path / name."""
  config = contrastive.get_config("tiny")
  default.override(config, {"train.epochs": epochs, "train.steps_per_epoch": 40,
                            "train.steps_per_call": 10, "plots.latent": False,
                            "data.device_budget_mb": budget,
                            "data.tfds_data_dir": str(tmp_path / "tfds")})
  return experiment.train_and_evaluate(config, str(tmp_path / name))


@pytest.mark.slow
def test_a_streamed_run_ends_where_the_device_resident_run_does(tmp_path, caplog):
  """experiments/contrastive.py:tiny, 3 epochs of 40 steps, with the whole training set on the
  device and with data.device_budget_mb=0.01 (streamed, every call's batches drawn ahead: no
  fallback warning): the same batches, so the same test pair accuracy within a point (the
  compiled programs may round differently)."""
  results = {name: _tiny_run(tmp_path, name, budget)
             for name, budget in (("device", None), ("streamed", 0.01))}
  assert "not the expected one" not in caplog.text
  device, streamed = results["device"]["test"], results["streamed"]["test"]
  assert device["accuracy_tuned"] > 0.75
  assert abs(device["accuracy_tuned"] - streamed["accuracy_tuned"]) <= 0.01
  assert abs(device["roc_auc"] - streamed["roc_auc"]) <= 0.01


@pytest.mark.slow
def test_a_resumed_streamed_run_ends_as_an_uninterrupted_one(tmp_path, caplog):
  """1 epoch, then the same workdir resumed to 3 (the prefetch starts at the resumed call): the
  same summary as 3 epochs in one go."""
  _tiny_run(tmp_path, "resumed", 0.01, epochs=1)
  resumed = _tiny_run(tmp_path, "resumed", 0.01, epochs=3)
  whole = _tiny_run(tmp_path, "whole", 0.01, epochs=3)
  assert "not the expected one" not in caplog.text
  assert resumed["steps"] == whole["steps"] == 120
  assert resumed["test"]["roc_auc"] == whole["test"]["roc_auc"]
  assert resumed["final"]["train_loss"] == pytest.approx(whole["final"]["train_loss"], rel=1e-6)
