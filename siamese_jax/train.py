"""The train step, the fused epoch and the data-parallel layout.

``train_step(state, batch, key) -> (state, metrics)`` is a pure function, jit-compiled once with
the state donated. ``train_epoch(state, data, key) -> (state, metrics)`` runs a whole epoch as
one ``jax.lax.scan``: each step draws its batch *indices* on device (``siamese_jax.samplers``),
gathers the uint8 images it needs from the device-resident dataset and trains on them, so an
epoch is one compiled program with no host round trip and no pair array ever built.

Data parallelism is declared, not hand-rolled: a 1-D ``Mesh`` over all devices with axis
``"data"``, parameters replicated, and the batch axis sharded with ``NamedSharding``; XLA inserts
the gradient all-reduce. The same code runs on 1 CPU, 8 fake CPU devices, a GPU or a TPU slice.
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from siamese_jax import distances, losses, models, samplers

DATA_AXIS = "data"
OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
LOSSES = ("contrastive", "bce", "triplet", "cross_entropy")

TrainState = train_state.TrainState


class DeviceData(NamedTuple):
  """A labelled image set resident on device: images [N, H, W, C] uint8, labels [N] int32."""
  images: jax.Array
  labels: jax.Array
  index: samplers.ClassIndex


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """What the step optimises; hashable so it can be closed over by jitted functions."""
  name: str = "contrastive"
  margin: float = 1.0
  mining: str = "batch_hard"
  distance: str = "euclidean"
  threshold: float = 0.5  # distance below which a pair is called "same" (distance heads)

  @property
  def batch_kind(self) -> str:
    """"pairs" (x_a, x_b, same) or "labelled" (x, label) batches."""
    return "pairs" if self.name in ("contrastive", "bce") else "labelled"


def loss_spec_from_config(config) -> LossSpec:
  """Reads config.loss (name, margin, mining) and config.model.distance into a LossSpec."""
  name = config.loss.name
  if name not in LOSSES:
    raise ValueError(f"loss.name={name!r} is not known; choose one of {', '.join(LOSSES)}")
  return LossSpec(name=name, margin=float(config.loss.get("margin", 1.0)),
                  mining=config.loss.get("mining", "batch_hard"),
                  distance=config.model.get("distance", "euclidean"),
                  threshold=float(config.loss.get("threshold", 0.5)))


# ------------------------------------------------------------------------- optimiser

def make_schedule(optimizer_config, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule by name: constant, cosine (to 0), warmup_cosine."""
  lr = float(optimizer_config.learning_rate)
  name = optimizer_config.get("schedule", "constant")
  if name == "constant":
    return optax.constant_schedule(lr)
  if name == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  if name == "warmup_cosine":
    warmup = int(optimizer_config.get("warmup_steps", 0))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
  raise ValueError(f"optimizer.schedule={name!r} is not known; choose one of {', '.join(SCHEDULES)}")


def make_optimizer(optimizer_config, total_steps: int) -> optax.GradientTransformation:
  """optax optimiser by name (sgd, momentum, adam, rmsprop) with its schedule."""
  schedule = make_schedule(optimizer_config, total_steps)
  name = optimizer_config.name
  if name == "sgd":
    return optax.sgd(schedule)
  if name == "momentum":
    return optax.sgd(schedule, momentum=float(optimizer_config.get("momentum", 0.9)))
  if name == "adam":
    return optax.adam(schedule)
  if name == "rmsprop":
    # Keras' RMSprop defaults (rho 0.9, eps 1e-7), as in the mnist_siamese example.
    return optax.rmsprop(schedule, decay=0.9, eps=1e-7)
  raise ValueError(f"optimizer.name={name!r} is not known; choose one of {', '.join(OPTIMIZERS)}")


def create_train_state(key, model: nn.Module, image_shape, tx) -> TrainState:
  """Initialises the model's params for images of ``image_shape`` (H, W, C)."""
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  if isinstance(model, models.Classifier):
    variables = model.init({"params": key}, dummy, train=False)
  else:
    variables = model.init({"params": key}, dummy, dummy, train=False)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)


# ------------------------------------------------------------------------------ loss

def to_float_images(images: jax.Array) -> jax.Array:
  """uint8 [..., H, W, C] in [0, 255] -> float32 in [0, 1] (floats pass through)."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def compute_loss(params, apply_fn: Callable, batch: dict, key, spec: LossSpec, train: bool = True):
  """Loss and metrics of one batch: returns (loss [], metrics dict of scalars).

  Pair batches: x_a, x_b [B, H, W, C], same [B], mask [B]. Labelled batches: x [B, H, W, C],
  label [B], mask [B].
  """
  rngs = {"dropout": key} if train else {}
  mask = batch.get("mask")
  if spec.batch_kind == "pairs":
    output, _, _ = apply_fn({"params": params}, to_float_images(batch["x_a"]),
                            to_float_images(batch["x_b"]), train=train, rngs=rngs)
    same = batch["same"].astype(jnp.float32)
    if spec.name == "contrastive":
      loss = losses.batch_contrastive_loss(output, same, spec.margin, mask)
      predicted_same = output < spec.threshold
    else:
      loss = losses.batch_pair_bce_loss(output, same, mask)
      predicted_same = output > 0
    accuracy = losses.masked_mean((predicted_same == (same > 0)).astype(jnp.float32), mask)
    return loss, {"loss": loss, "accuracy": accuracy}
  if spec.name == "cross_entropy":
    logits, _ = apply_fn({"params": params}, to_float_images(batch["x"]), train=train, rngs=rngs)
    loss = losses.batch_softmax_cross_entropy_loss(logits, batch["label"], mask)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return loss, {"loss": loss, "accuracy": losses.masked_mean(correct, mask)}
  embeddings = apply_fn({"params": params}, to_float_images(batch["x"]), train=train, rngs=rngs,
                        method="embed")
  mined_loss = losses.MINED_TRIPLET_LOSSES[spec.mining]
  loss, fraction_active = mined_loss(embeddings, batch["label"], spec.margin, spec.distance,
                                     mask)
  return loss, {"loss": loss, "fraction_active": fraction_active}


def train_step(state: TrainState, batch: dict, key, spec: LossSpec):
  """One optimiser step: (state, batch, key) -> (new state, metrics). Pure; jit it."""
  grad_fn = jax.value_and_grad(compute_loss, has_aux=True)
  (_, metrics), grads = grad_fn(state.params, state.apply_fn, batch, key, spec)
  metrics["grad_norm"] = optax.global_norm(grads)
  return state.apply_gradients(grads=grads), metrics


# ---------------------------------------------------------------------- batches

@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """How a step draws its batch: balanced pairs of ``batch_size`` or P x K labelled batches."""
  kind: str = "pairs"  # "pairs" | "pk" | "uniform"
  batch_size: int = 128
  classes_per_batch: int = 8
  samples_per_class: int = 4
  pair_source: str = "balanced"  # "two_source": the second image is an inverted, warped view
  augment: bool = False  # random rotation + shift of every image (Koch et al.'s distortions)

  @property
  def examples(self) -> int:
    return self.classes_per_batch * self.samples_per_class if self.kind == "pk" else self.batch_size


def sample_batch(key, data: DeviceData, spec: BatchSpec) -> dict:
  """Draws one batch on device: index sampling, then a gather from the uint8 images."""
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


# ------------------------------------------------------------------------- sharding

def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis "data" over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the "data" axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


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


# --------------------------------------------------------------- compiled programs

def make_train_step(spec: LossSpec, mesh: Mesh):
  """``step(state, batch, key) -> (state, metrics)``, jitted, state donated, batch sharded."""
  def step(state, batch, key):
    return train_step(state, shard_batch(batch, mesh), key, spec)
  return jax.jit(step, donate_argnums=0)


UNROLL_SETTINGS = ("auto", "always", "never")


def unroll_steps(setting: str, encoder: str, backend: str | None = None) -> bool:
  """Whether the ``steps`` of a compiled call are unrolled into straight-line code.

  ``"auto"`` unrolls for convolutional encoders on CPU only: inside a loop body XLA:CPU runs
  the weight-gradient convolutions on a slow generic path (jax-ml/jax#12868; about 6x slower for
  ``experiments/omniglot.py``, 36x for the Koch convnet, see benchmarks/README.md), while
  unrolled they take its fast path. Unrolling costs compile time that grows with the steps
  per call, so keep ``train.steps_per_call`` small (about 8) for such configs.
  """
  if setting == "auto":
    return (backend or jax.default_backend()) == "cpu" and encoder in models.CONVOLUTIONAL_ENCODERS
  return setting == "always"


def make_train_epoch(spec: LossSpec, batch_spec: BatchSpec, steps: int, mesh: Mesh,
                     unroll: bool = False):
  """``epoch(state, data, key) -> (state, metrics [steps])``: ``steps`` steps in one scan
  (``unroll=True``: the same steps unrolled, no loop in the compiled program).

  Step ``i`` uses ``fold_in(key, i)`` split into a batch key and a dropout key, so an epoch is
  reproducible from its key whatever the number of devices.
  """
  check_batch_divides(batch_spec.examples, mesh)

  def epoch(state, data, key):
    def body(state, step_index):
      batch_key, dropout_key = jax.random.split(jax.random.fold_in(key, step_index))
      batch = shard_batch(sample_batch(batch_key, data, batch_spec), mesh)
      return train_step(state, batch, dropout_key, spec)
    return jax.lax.scan(body, state, jnp.arange(steps), unroll=steps if unroll else 1)

  return jax.jit(epoch, donate_argnums=0)


@functools.partial(jax.jit, static_argnames=("spec",))
def eval_pair_step(state: TrainState, batch: dict, spec: LossSpec) -> dict:
  """Loss and accuracy of a pair batch in eval mode (no dropout).

  Models trained on pairs are scored by their own head; models trained on labelled batches
  (triplet, cross-entropy) by the ``spec.distance`` between their embeddings, called "same"
  below ``spec.threshold``.
  """
  if spec.batch_kind == "pairs":
    _, metrics = compute_loss(state.params, state.apply_fn, batch, None, spec, train=False)
    return metrics
  variables = {"params": state.params}
  emb_a = state.apply_fn(variables, to_float_images(batch["x_a"]), method="embed")
  emb_b = state.apply_fn(variables, to_float_images(batch["x_b"]), method="embed")
  distance = distances.get_batch_distance(spec.distance)(emb_a, emb_b)
  same = batch["same"] > 0
  correct = ((distance < spec.threshold) == same).astype(jnp.float32)
  loss = losses.batch_contrastive_loss(distance, same.astype(jnp.float32), spec.margin)
  return {"loss": loss, "accuracy": jnp.mean(correct)}


def evaluate_pairs(state: TrainState, data: DeviceData, key, spec: LossSpec,
                   num_pairs: int = 2000, batch_size: int = 500,
                   pair_source: str = "balanced") -> dict:
  """Mean eval metrics over ``num_pairs`` balanced pairs of ``data`` drawn from ``key``
  (``pair_source`` as in BatchSpec: the two-source pairs of a two-tower model)."""
  batch_spec = BatchSpec(kind="pairs", batch_size=batch_size, pair_source=pair_source)
  batches = max(num_pairs // batch_size, 1)
  totals: dict[str, float] = {}
  for i in range(batches):
    batch = sample_batch(jax.random.fold_in(key, i), data, batch_spec)
    for name, value in eval_pair_step(state, batch, spec).items():
      totals[name] = totals.get(name, 0.0) + float(value) / batches
  return totals
