"""The data-parallel layout, declared: a 1-D ``Mesh`` over all devices with axis ``"data"``,
parameters and datasets replicated, the batch axis split with ``NamedSharding``. XLA inserts the
gradient all-reduce, so the same code runs on 1 CPU, 8 fake CPU devices, a GPU or a TPU slice.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from siamese_jax import samplers

DATA_AXIS = "data"


class DeviceData(NamedTuple):
  """A labelled image set resident on device: images [N, H, W, C] uint8, labels [N] int32."""
  images: jax.Array
  labels: jax.Array
  index: samplers.ClassIndex


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis "data" over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the "data" axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def step_batches_sharded(mesh: Mesh) -> NamedSharding:
  """Batches stacked over steps, [steps, B, ...]: the B axis split over "data"."""
  return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def put_step_batches(tree: Any, mesh: Mesh) -> Any:
  """Places host arrays [steps, B, ...] on ``mesh`` as ``step_batches_sharded``; every process
  passes the same arrays and each places the shards its devices hold (multi-host safe)."""
  sharding = step_batches_sharded(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]), tree)


def check_batch_divides(examples: int, mesh: Mesh) -> None:
  """A one-line error unless the batch splits evenly over the mesh's devices."""
  devices = mesh.devices.size
  if examples % devices:
    raise ValueError(f"a batch of {examples} examples does not split over {devices} devices; "
                     f"use a batch size that is a multiple of {devices}")


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Constrains every array of ``batch`` to be split along its batch axis (inside jit)."""
  return jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places ``tree`` (state, dataset) on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


def device_data(images: np.ndarray, labels: np.ndarray, num_classes: int, mesh: Mesh) -> DeviceData:
  """Puts a uint8 image set and its class index on every device of ``mesh``."""
  index = samplers.build_class_index(labels, num_classes)
  data = DeviceData(jnp.asarray(images), jnp.asarray(labels, jnp.int32), index)
  return put_replicated(data, mesh)
