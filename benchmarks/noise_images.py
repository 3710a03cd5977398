"""A training program of a config on random 28 x 28 images, for benchmarks that time the steps
alone (the data's content does not change the cost of a step)."""

from typing import Callable, NamedTuple

import jax
import numpy as np

from siamese_jax import batches, models, sharding, train


class NoiseTraining(NamedTuple):
  mesh: jax.sharding.Mesh
  data: dict  # sharding.device_data of the random images
  spec: train.LossSpec
  batch_spec: batches.BatchSpec
  fresh_state: Callable  # () -> a new replicated TrainState (same init every time)


def noise_training(config, classes: int, per_class: int, shape=(28, 28, 1)) -> NoiseTraining:
  """``config``'s model, loss and batches over ``classes`` x ``per_class`` random uint8 images
  [N, *shape] (H, W, C) held on the mesh of all devices."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (classes * per_class, *shape), dtype=np.uint8)
  labels = np.repeat(np.arange(classes), per_class)
  mesh = sharding.make_mesh()
  data = sharding.device_data(images, labels, classes, mesh)
  spec = train.loss_spec_from_config(config)
  batch_spec = batches.batch_spec_from_config(config, spec.batch_kind)
  model, tx = models.build_model(config.model), train.make_optimizer(config.optimizer, 1000)
  fresh_state = lambda: sharding.put_replicated(
      train.create_train_state(jax.random.key(0), model, tuple(shape), tx), mesh)
  return NoiseTraining(mesh, data, spec, batch_spec, fresh_state)
