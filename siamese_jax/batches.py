"""What a train step eats: ``BatchSpec`` says how a batch is drawn, ``sample_batch`` draws it on
device (indices from ``siamese_jax.samplers``, then a gather from the uint8 images)."""

import dataclasses

import jax
import jax.numpy as jnp

from siamese_jax import samplers
from siamese_jax.sharding import DeviceData

KINDS = ("pairs", "pk", "uniform")


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """How a step draws its batch: balanced pairs of ``batch_size``, P x K labelled batches, or
  ``batch_size`` labelled examples drawn uniformly. Hashable (static in jit)."""
  kind: str = "pairs"
  batch_size: int = 128
  classes_per_batch: int = 8
  samples_per_class: int = 4
  pair_source: str = "balanced"  # "two_source": the second image is an inverted, warped view
  augment: bool = False  # random rotation + shift of every image (Koch et al.'s distortions)

  @property
  def examples(self) -> int:
    return self.classes_per_batch * self.samples_per_class if self.kind == "pk" else self.batch_size


def batch_spec_from_config(config, kind: str) -> BatchSpec:
  """The BatchSpec of ``config.train`` for batches of ``kind`` (the loss's, see train.LOSSES)."""
  return BatchSpec(kind=kind, batch_size=config.train.batch_size,
                   classes_per_batch=config.train.classes_per_batch,
                   samples_per_class=config.train.samples_per_class,
                   pair_source=config.train.pair_source, augment=config.train.augment)


def sample_batch(key, data: DeviceData, spec: BatchSpec) -> dict:
  """One batch drawn on device from ``key``.

  pairs: {x_a, x_b [B, H, W, C] uint8, same [B] float32, mask [B]}; pk and uniform:
  {x [B, H, W, C], label [B] int32, mask [B]}.
  """
  key, view_key, augment_key = jax.random.split(key, 3)
  maybe_augment = lambda k, x: samplers.transform_view(k, x) if spec.augment else x
  if spec.kind == "pairs":
    if spec.pair_source == "two_source":
      idx_a, idx_b, same = samplers.sample_two_source_pairs(key, data.index, spec.batch_size)
    else:
      idx_a, idx_b, same = samplers.sample_balanced_pairs(key, data.index, spec.batch_size)
    augment_a, augment_b = jax.random.split(augment_key)
    x_a = maybe_augment(augment_a, samplers.gather_images(data.images, idx_a))
    x_b = maybe_augment(augment_b, samplers.gather_images(data.images, idx_b))
    if spec.pair_source == "two_source":
      x_b = samplers.transform_view(view_key, x_b, invert=True)
    return {"x_a": x_a, "x_b": x_b, "same": same, "mask": jnp.ones_like(same)}
  if spec.kind == "pk":
    idx, labels = samplers.sample_pk_batch(key, data.index, spec.classes_per_batch,
                                           spec.samples_per_class)
  else:
    idx = jax.random.randint(key, (spec.batch_size,), 0, data.labels.shape[0])
    labels = data.labels[idx]
  x = maybe_augment(augment_key, samplers.gather_images(data.images, idx))
  return {"x": x, "label": labels, "mask": jnp.ones(labels.shape, jnp.float32)}
