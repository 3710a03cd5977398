"""The train step: finite gradients through the encoder, every loss trains (slow), fused epoch
equals a loop of jit steps, unrolled equals scanned (slow), 1 device equals 8 fake devices (slow:
subprocesses), and real MNIST is learned (slow)."""

import functools
import subprocess
import sys

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, strategies as st

from experiments import default
from siamese_jax import batches, evaluate, idx, losses, models, scoring, sharding, train
from tests.helpers import REPO_ROOT, all_finite, repo_env


def model_config(**overrides):
  """The declared model defaults with a tiny MLP and ``overrides``."""
  config = default.get_config().model
  config.update({"encoder": "mlp", "features": (16, 4), "dropout_rates": (0.1, 0.0),
                 "head": "distance", "distance": "euclidean", "num_classes": 3, **overrides})
  return config


def optimizer_config(**overrides):
  config = default.get_config().optimizer
  config.update(overrides)
  return config


def loss_spec(name="contrastive", margin=1.0, mining="batch_hard", head="distance",
              distance="euclidean", threshold=0.5):
  pair_scoring = scoring.PairScoring(head, distance, 0.0 if head in models.LOGIT_HEADS else threshold)
  settings = {"margin": margin, "mining": mining, "scale": 16.0}
  return train.make_loss_spec(name, pair_scoring, **{key: settings[key]
                                                      for key in losses.OBJECTIVES[name].reads})


def make_state(config, image_shape=(6, 6, 1), optimizer="adam", lr=1e-2, steps=10):
  tx = train.make_optimizer(optimizer_config(name=optimizer, learning_rate=lr), steps)
  return train.create_train_state(jax.random.key(0), models.build_model(config), image_shape, tx)


@functools.cache
def cached_state(**model_overrides):
  """make_state(model_config(**model_overrides)), built once: the hypothesis tests below draw
  many examples for the same model."""
  return make_state(model_config(**model_overrides))


PAIR_CASES = [("contrastive", "distance", "euclidean"), ("contrastive", "distance", "cosine"),
              ("contrastive", "distance", "squared_euclidean"), ("bce", "abs_diff", "euclidean"),
              ("bce", "concat", "euclidean"), ("bce", "subtract", "euclidean")]


@pytest.mark.parametrize("loss,head,distance", PAIR_CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@given(batch=st.sampled_from([1, 4]), margin=st.floats(0.01, 10.0),
       same=st.lists(st.sampled_from([0.0, 1.0]), min_size=4, max_size=4),
       images=hnp.arrays(np.uint8, (4, 6, 6, 1)))
def test_encoder_param_gradients_finite_for_identical_pair_inputs(loss, head, distance, dtype,
                                                                  batch, margin, same, images):
  state = cached_state(head=head, distance=distance)
  params = jax.tree_util.tree_map(lambda p: p.astype(dtype), state.params)
  x = jnp.asarray(images[:batch])
  pair_batch = {"x_a": x, "x_b": x, "same": jnp.asarray(same[:batch]), "mask": jnp.ones(batch)}
  spec = loss_spec(loss, margin, head=head, distance=distance)
  grads, _ = jax.grad(train.compute_loss, has_aux=True)(params, state.apply_fn, pair_batch,
                                                        jax.random.key(1), spec)
  assert all_finite(grads)
  assert set(grads) >= {"encoder"}


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@given(margin=st.floats(0.01, 10.0), labels=hnp.arrays(np.int32, (6,), elements=st.integers(0, 2)))
def test_triplet_param_gradients_finite_when_all_images_identical(mining, margin, labels):
  state = cached_state(dropout_rates=(0.0, 0.0))
  x = jnp.full((6, 6, 6, 1), 7, jnp.uint8)  # identical images: every distance is exactly 0
  batch = {"x": x, "label": jnp.asarray(labels), "mask": jnp.ones(6)}
  spec = loss_spec("triplet", margin, mining)
  grads, _ = jax.grad(train.compute_loss, has_aux=True)(state.params, state.apply_fn, batch,
                                                        jax.random.key(1), spec)
  assert all_finite(grads)


def synthetic_data(num_classes=3, per_class=20, seed=0):
  rng = np.random.default_rng(seed)
  prototypes = rng.integers(0, 256, (num_classes, 6, 6, 1))
  labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
  noise = rng.integers(-30, 30, (len(labels), 6, 6, 1))
  images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
  return images, labels


@pytest.mark.slow  # five small trainings
@pytest.mark.parametrize("loss,head,batch_kind", [
    ("contrastive", "distance", "pairs"), ("bce", "abs_diff", "pairs"),
    ("triplet", "distance", "pk"), ("cross_entropy", "classifier", "uniform"),
    ("cosine_softmax", "cosine_classifier", "uniform")])
def test_every_loss_trains_on_separable_data(loss, head, batch_kind):
  mesh = sharding.make_mesh()
  images, labels = synthetic_data()
  data = sharding.device_data(images, labels, 3, mesh)
  state = sharding.put_replicated(make_state(model_config(head=head), lr=3e-3, steps=60), mesh)
  spec = loss_spec(loss, head=head, margin=0.1 if loss == "cosine_softmax" else 1.0)
  batch_spec = batches.BatchSpec(kind=batch_kind, batch_size=24, classes_per_batch=3,
                               samples_per_class=4)
  epoch = train.make_train_epoch(spec, batch_spec, 30, mesh)
  state, first = epoch(state, data, jax.random.key(0))
  state, second = epoch(state, data, jax.random.key(1))
  assert int(state.step) == 60
  assert float(second["loss"][-10:].mean()) < float(first["loss"][:10].mean())
  assert all_finite(second)


def test_fused_epoch_equals_loop_of_jit_steps():
  mesh = sharding.make_mesh()
  images, labels = synthetic_data()
  data = sharding.device_data(images, labels, 3, mesh)
  spec = loss_spec()
  with pytest.raises(ValueError, match="does not split over 2 devices"):
    train.make_train_epoch(spec, batches.BatchSpec(batch_size=7), 1,
                           sharding.make_mesh(jax.devices() * 2))
  batch_spec = batches.BatchSpec(kind="pairs", batch_size=8)
  key = jax.random.key(5)
  fused, fused_metrics = train.make_train_epoch(spec, batch_spec, 4, mesh)(
      make_state(model_config()), data, key)
  state = make_state(model_config())
  step = train.make_train_step(spec, mesh)
  step_losses = []
  for i in range(4):
    batch_key, dropout_key = jax.random.split(jax.random.fold_in(key, i))
    state, metrics = step(state, batches.sample_batch(batch_key, data, batch_spec), dropout_key)
    step_losses.append(float(metrics["loss"]))
  np.testing.assert_allclose(fused_metrics["loss"], step_losses, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(fused.params), jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # compiles two convnet epochs: about 15 s
def test_unrolled_epoch_equals_scanned_epoch_for_a_convnet():
  mesh = sharding.make_mesh()
  images, labels = synthetic_data()
  images = images.repeat(3, axis=1).repeat(3, axis=2)  # 18 x 18: four 2x2 pools leave 1 x 1
  data = sharding.device_data(images, labels, 3, mesh)
  spec, batch_spec, key = loss_spec(), batches.BatchSpec(kind="pairs", batch_size=4), jax.random.key(2)
  config = model_config(encoder="convnet4", filters=8, embedding_dim=3)
  # SGD: Adam would magnify the rounding noise in the zero gradients of the conv biases that
  # GroupNorm cancels.
  results = [train.make_train_epoch(spec, batch_spec, 3, mesh, unroll=unroll)(
      make_state(config, (18, 18, 1), optimizer="sgd", lr=0.1), data, key)
      for unroll in (False, True)]
  (scanned, scanned_metrics), (unrolled, unrolled_metrics) = results
  np.testing.assert_allclose(unrolled_metrics["loss"], scanned_metrics["loss"], rtol=1e-5)
  assert not np.allclose(scanned_metrics["loss"][0], scanned_metrics["loss"][-1])  # it trained
  for a, b in zip(jax.tree_util.tree_leaves(unrolled.params),
                  jax.tree_util.tree_leaves(scanned.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_an_unrolled_call_of_one_step_has_no_loop_and_trains_as_the_scanned_one():
  """A scan of length 1 stays a while loop whatever its unroll (XLA:CPU's slow convolution-gradient
  path: 85 s instead of 2.4 s a convnet4 step at 48 x 48, batch 128, issue 27 problem 6)."""
  mesh = sharding.make_mesh()
  images, labels = synthetic_data()
  data = sharding.device_data(images, labels, 3, mesh)
  spec, batch_spec, key = loss_spec(), batches.BatchSpec(kind="pairs", batch_size=4), jax.random.key(2)
  config = model_config(encoder="mlp", features=(8, 3))
  state = lambda: make_state(config, images.shape[1:], optimizer="sgd", lr=0.1)
  calls = {unroll: train.make_train_epoch(spec, batch_spec, 1, mesh, unroll=unroll)
           for unroll in (False, True)}
  # The program JAX gives XLA (XLA later drops a loop of one trip, yet the scanned convnet4 step
  # measured 35x slower); threefry's own loops (the batch draw's) are in both.
  loops = {unroll: calls[unroll].lower(state(), data, key).as_text().count("stablehlo.while")
           for unroll in calls}
  assert loops[True] == loops[False] - 1
  (scanned, scanned_metrics), (unrolled, unrolled_metrics) = [
      calls[unroll](state(), data, key) for unroll in (False, True)]
  assert unrolled_metrics["loss"].shape == scanned_metrics["loss"].shape == (1,)
  np.testing.assert_allclose(unrolled_metrics["loss"], scanned_metrics["loss"], rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(unrolled.params),
                  jax.tree_util.tree_leaves(scanned.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("setting,encoder,backend,expected", [
    ("auto", "convnet4", "cpu", False), ("auto", "koch", "cpu", False),
    ("auto", "convnet4", "gpu", False), ("auto", "convnet4", "tpu", False),
    ("auto", "keras_mlp", "cpu", False), ("always", "keras_mlp", "tpu", True),
    ("never", "convnet4", "cpu", False)])
def test_unroll_setting(setting, encoder, backend, expected):
  assert train.unroll_steps(setting, encoder, backend) is expected


def test_every_optimizer_and_schedule_descends_a_quadratic():
  for name in train.OPTIMIZERS:
    for schedule in train.SCHEDULES:
      tx = train.make_optimizer(optimizer_config(
          name=name, learning_rate=0.1, schedule=schedule, warmup_steps=2), 10)
      params = {"w": jnp.asarray([1.0, -2.0])}
      opt_state = tx.init(params)
      for _ in range(5):
        grads = {"w": 2.0 * params["w"]}  # of |w|^2, whose minimum is w = 0
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
      assert float(jnp.sum(jnp.square(params["w"]))) < 0.8 * 5.0, (name, schedule, params)


def test_cosine_schedule_spans_the_run_and_unknown_optimizers_are_refused():
  cosine = train.make_schedule(optimizer_config(learning_rate=0.1, schedule="cosine"), 10)
  assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(10)) == pytest.approx(0.0)
  with pytest.raises(ValueError, match="optimizer.name='lamb'.*sgd"):
    train.make_optimizer(optimizer_config(name="lamb"), 1)


def labelled_run(freeze="none", backbone_lr_scale=1.0, optimizer="rmsprop", steps=3,
                 learning_rate=1e-3):
  """(initial params, params after ``steps`` pair steps, optimiser state) of a three-layer MLP +
  abs_diff model through train.optimizer_from_config, on fixed random batches."""
  config = default.get_config()
  config.loss.name = "bce"
  config.model.update({"encoder": "mlp", "features": (16, 8, 4), "dropout_rates": (),
                       "head": "abs_diff", "freeze": freeze})
  config.optimizer.update({"name": optimizer, "backbone_lr_scale": backbone_lr_scale,
                           "learning_rate": learning_rate})
  tx = train.optimizer_from_config(config, steps)
  state = train.create_train_state(jax.random.key(0), models.build_model(config.model),
                                   (6, 6, 1), tx)
  initial = jax.tree.map(np.asarray, state.params)
  step = jax.jit(functools.partial(train.train_step, spec=loss_spec("bce", head="abs_diff")))
  rng = np.random.default_rng(0)
  for i in range(steps):
    batch = {"x_a": rng.integers(0, 256, (8, 6, 6, 1), np.uint8),
             "x_b": rng.integers(0, 256, (8, 6, 6, 1), np.uint8),
             "same": jnp.asarray(rng.integers(0, 2, 8), jnp.float32), "mask": jnp.ones(8)}
    state, _ = step(state, batch, jax.random.key(i))
  return initial, jax.tree.map(np.asarray, state.params), state.opt_state


def test_a_frozen_backbone_stays_bit_identical_while_its_embedding_layer_and_head_train():
  initial, trained, _ = labelled_run(freeze="backbone")
  encoder, before = trained["encoder"], initial["encoder"]
  for name in encoder:
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(encoder[name]),
                                                    jax.tree.leaves(before[name])))
    assert same == (name != "Dense_2"), name  # Dense_2: the MLP's embedding layer
  assert not np.array_equal(trained["head"]["Dense_0"]["kernel"],
                            initial["head"]["Dense_0"]["kernel"])


def test_the_backbone_learns_at_the_scaled_rate_and_the_head_at_the_full_one():
  initial, plain, _ = labelled_run(optimizer="sgd", steps=1, learning_rate=100.0)
  _, scaled, _ = labelled_run(optimizer="sgd", backbone_lr_scale=0.25, steps=1,
                              learning_rate=100.0)
  moved = lambda params, path: (params[path[0]][path[1]]["kernel"]
                                - initial[path[0]][path[1]]["kernel"])
  for path in (("encoder", "Dense_0"), ("encoder", "Dense_1")):
    np.testing.assert_allclose(moved(scaled, path), 0.25 * moved(plain, path), rtol=1e-4,
                               atol=1e-6)
  for path in (("encoder", "Dense_2"), ("head", "Dense_0")):
    np.testing.assert_array_equal(moved(scaled, path), moved(plain, path))


def test_without_freeze_or_scale_the_optimiser_is_the_plain_one():
  """Every run from before model.freeze: the same optimiser state (so its checkpoints restore)
  and the same steps, bit for bit, as the optimiser alone."""
  _, labelled_default, opt_state = labelled_run()
  assert not isinstance(opt_state, optax.transforms.PartitionState)
  config = default.get_config()
  params = {"w": jnp.ones(3)}
  assert (jax.tree.structure(train.optimizer_from_config(config, 5).init(params))
          == jax.tree.structure(train.make_optimizer(config.optimizer, 5).init(params)))
  _, split_but_equal, opt_state = labelled_run(backbone_lr_scale=1.0 + 1e-12)  # == 1.0 in float32
  assert isinstance(opt_state, optax.transforms.PartitionState)
  for a, b in zip(jax.tree.leaves(labelled_default), jax.tree.leaves(split_but_equal)):
    np.testing.assert_array_equal(a, b)


def test_param_labels_mark_each_encoders_embedding_layer_as_the_head():
  cases = {"keras_mlp": "Dense_2", "mlp_2d": "Dense_2", "embedding_net": "Dense_2",
           "convnet4": "Dense_0", "resnet_small": "Dense_0"}
  for encoder, head_layer in cases.items():
    config = model_config(encoder=encoder, head="abs_diff", freeze="backbone", filters=8,
                          input_normalization="per_channel")
    params = jax.eval_shape(lambda: models.build_model(config).init(
        jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, 28, 28, 1)), train=False))
    labels = models.param_labels(config, params["params"])
    assert labels["encoder"]["input_mean"] == "frozen"
    assert labels["head"]["Dense_0"]["bias"] == "head"
    inner = labels["encoder"]["encoder"]
    assert {name for name in inner if set(jax.tree.leaves(inner[name])) == {"head"}} == {head_layer}
    assert set(jax.tree.leaves({k: v for k, v in inner.items() if k != head_layer})) == {"frozen"}


def run_worker(tmp_path, devices, mode):
  out = tmp_path / f"{mode}_{devices}.npz"
  env = repo_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                 JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "multidevice_worker.py"), str(out),
                  mode], check=True, env=env, cwd=REPO_ROOT, timeout=300)
  return np.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["step", "epoch"])
def test_eight_fake_devices_match_one_device(tmp_path, mode):
  one, eight = run_worker(tmp_path, 1, mode), run_worker(tmp_path, 8, mode)
  assert int(one["num_devices"]) == 1 and int(eight["num_devices"]) == 8
  names = [n for n in one.files if n != "num_devices"]
  assert names
  for name in names:  # plain SGD with momentum: differences are gradient reduction order only
    np.testing.assert_allclose(one[name], eight[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_200_steps_on_real_mnist_learn(shared_data):
  images = idx.read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[..., None]
  labels = idx.read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").astype(np.int32)
  mesh = sharding.make_mesh()
  train_data = sharding.device_data(images[:8000], labels[:8000], 10, mesh)
  test_data = sharding.device_data(images[8000:], labels[8000:], 10, mesh)
  config = model_config(encoder="keras_mlp")
  state = sharding.put_replicated(make_state(config, (28, 28, 1), "rmsprop", 1e-3, 200), mesh)
  spec = loss_spec("contrastive")
  score = evaluate.make_pair_scorer(state.apply_fn, spec.scoring, 2000)

  def pair_accuracy(params):
    scores, same = score(params, test_data, jax.random.key(9))
    return evaluate.accuracy_at_threshold(scores, same, 0.5, higher_means_same=False)
  before = pair_accuracy(state.params)
  epoch = train.make_train_epoch(spec, batches.BatchSpec(kind="pairs", batch_size=128), 100, mesh)
  state, first = epoch(state, train_data, jax.random.key(0))
  state, second = epoch(state, train_data, jax.random.key(1))
  after = pair_accuracy(state.params)
  assert float(second["loss"][-20:].mean()) < 0.5 * float(first["loss"][:20].mean())
  assert after > before
  assert after > 0.8, after  # chance is 0.5
