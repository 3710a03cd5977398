"""The train step and the fused epoch.

``train_step(state, batch, key) -> (state, metrics)`` is a pure function, jit-compiled once with
the state donated. ``train_epoch(state, data, key) -> (state, metrics)`` runs ``steps`` steps as
one compiled call: each step draws its batch *indices* on device (``siamese_jax.batches``),
gathers the uint8 images it needs from the device-resident dataset and trains on them, so a call
is one compiled program with no host round trip and no pair array ever built. For data larger
than the device, ``make_train_call_streamed`` runs the same steps on batches gathered on the host
(``siamese_jax.streaming``). The layout over devices is ``siamese_jax.sharding``'s.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import Mesh

from siamese_jax import batches, conv, losses, models, random_bits, scoring, sharding

class TrainState(train_state.TrainState):
  """flax's TrainState plus ``loss_state``: what the objective carries from step to step without
  training it (``Objective.init_state``, e.g. xbm's memory of past embeddings; ``{}`` for the
  others). Checkpoints keep params, opt_state and step only: a resumed run starts it afresh."""
  loss_state: Any = None


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """What the step optimises; hashable so it can be closed over by jitted functions.

  ``name``: a ``losses.OBJECTIVES`` key. ``settings``: the values of the ``loss.*`` keys its
  objective reads, as sorted (key, value) pairs (read them as ``spec[key]``). ``scoring``: how a
  pair is scored and called "same" (siamese_jax.scoring), for the pair accuracy training reports.
  """
  name: str
  settings: tuple[tuple[str, Any], ...]
  scoring: scoring.PairScoring

  def __getitem__(self, key: str):
    return dict(self.settings)[key]

  @property
  def objective(self) -> losses.Objective:
    return losses.OBJECTIVES[self.name]

  @property
  def batch_kind(self) -> str:
    """"pairs", "pk" or "uniform" (see siamese_jax.batches)."""
    return self.objective.batch_kind

  @property
  def distance(self) -> str:
    return self.scoring.distance


def _hashable(value):
  return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def make_loss_spec(name: str, pair_scoring: scoring.PairScoring, **settings) -> LossSpec:
  """A LossSpec of objective ``name`` with ``settings`` (``loss.*`` key -> value)."""
  return LossSpec(name, tuple(sorted((k, _hashable(v)) for k, v in settings.items())),
                  pair_scoring)


def loss_spec_from_config(config) -> LossSpec:
  """config.loss (the keys its objective reads) and the model's pair scoring as a LossSpec."""
  objective = losses.OBJECTIVES[config.loss.name]
  return make_loss_spec(config.loss.name, scoring.pair_scoring_from_config(config),
                        **{key: losses.objective.setting(config.loss, key, objective.defaults)
                           for key in objective.reads})


def needs_num_classes(config) -> bool:
  """Whether ``config``'s model or loss has a parameter per training class (a classifier head, or
  an objective's learned class weights or proxies), so ``model.num_classes`` sizes it."""
  return (config.model.head in models.CLASSIFIER_HEADS
          or bool(losses.OBJECTIVES[config.loss.name].params))


# ------------------------------------------------------------------------- optimiser

SCHEDULES: dict[str, Callable] = {  # (optimizer config, total steps) -> optax schedule
    "constant": lambda o, total: optax.constant_schedule(float(o.learning_rate)),
    "cosine": lambda o, total: optax.cosine_decay_schedule(float(o.learning_rate), max(total, 1)),
    "warmup_cosine": lambda o, total: optax.warmup_cosine_decay_schedule(
        0.0, float(o.learning_rate), int(o.warmup_steps), max(total, int(o.warmup_steps) + 1)),
}

OPTIMIZERS: dict[str, Callable] = {  # (schedule, optimizer config) -> optax optimiser
    "sgd": lambda schedule, o: optax.sgd(schedule),
    "momentum": lambda schedule, o: optax.sgd(schedule, momentum=float(o.momentum)),
    "adam": lambda schedule, o: optax.adam(schedule),
    # Keras' RMSprop defaults (rho 0.9, eps 1e-7), as in the mnist_siamese example.
    "rmsprop": lambda schedule, o: optax.rmsprop(schedule, decay=0.9, eps=1e-7),
}


def _choice(table: dict, value, key: str):
  if value not in table:
    raise ValueError(f"{key}={value!r} is not known; choose one of {', '.join(table)}")
  return table[value]


def make_schedule(optimizer_config, total_steps: int) -> optax.Schedule:
  """The learning-rate schedule named by optimizer_config.schedule (see SCHEDULES)."""
  return _choice(SCHEDULES, optimizer_config.schedule, "optimizer.schedule")(optimizer_config,
                                                                              total_steps)


def make_optimizer(optimizer_config, total_steps: int,
                   param_labels: Callable | None = None) -> optax.GradientTransformation:
  """The optax optimiser named by optimizer_config.name (see OPTIMIZERS) with its schedule.

  ``param_labels(params) -> the same tree of models.PARAM_LABELS`` (e.g. ``models.param_labels``)
  splits the tree (``optax.multi_transform``): "head" gets that optimiser, "backbone" the same at
  ``learning_rate * optimizer_config.backbone_lr_scale``, "frozen" no update at all
  (``optax.set_to_zero``). None: the optimiser alone, for every parameter.
  """
  build = _choice(OPTIMIZERS, optimizer_config.name, "optimizer.name")
  schedule = make_schedule(optimizer_config, total_steps)
  if param_labels is None:
    return build(schedule, optimizer_config)
  scale = float(optimizer_config.backbone_lr_scale)
  return optax.multi_transform(
      {"head": build(schedule, optimizer_config),
       "backbone": build(lambda count: scale * schedule(count), optimizer_config),
       "frozen": optax.set_to_zero()}, param_labels)


def optimizer_from_config(config, total_steps: int) -> optax.GradientTransformation:
  """make_optimizer of config.optimizer, split by the model's param labels where model.freeze or
  optimizer.backbone_lr_scale asks for it (otherwise the plain optimiser: the same updates and
  optimiser state as a run from before those keys)."""
  split = config.model.freeze != "none" or float(config.optimizer.backbone_lr_scale) != 1.0
  # (A pretrained ResNet's BatchNorm statistics need no split: their gradient is stopped and no
  # optimiser of OPTIMIZERS decays weights, so they stay as loaded.)
  labels = (lambda params: models.param_labels(config.model, params)) if split else None
  return make_optimizer(config.optimizer, total_steps, labels)


def create_train_state(key, model: nn.Module, image_shape, tx, spec: LossSpec | None = None,
                       num_classes: int | None = None,
                       load_weights: Callable | None = None) -> TrainState:
  """Initialises the model's params for images of ``image_shape`` (H, W, C); then
  ``load_weights(params) -> params`` (e.g. ``siamese_jax.weights.initializer``: model.pretrained)
  replaces those a file gives; beside them (under ``losses.objective.LOSS_PARAMS``) the parameters
  that ``spec``'s objective learns, if it declares any (their shapes may use ``num_classes``, the
  training classes), and its ``loss_state`` (``Objective.init_state``, {} if none). All before
  the optimiser state is made."""
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  towers = (dummy,) if isinstance(model, models.Classifier) else (dummy, dummy)
  # One compiled program: op by op, init compiles each of its ~40 operations on its own.
  variables = jax.jit(lambda key: model.init({"params": key}, *towers, train=False))(key)
  params = variables["params"] if load_weights is None else load_weights(variables["params"])
  loss_state = {}
  if spec is not None and (spec.objective.params or spec.objective.init_state):
    embedding = jax.eval_shape(lambda: model.apply(variables, dummy, method="embed"))
    dims = losses.objective.ParamDims(num_classes, embedding.shape[-1])
    if spec.objective.params:
      params = {**params, losses.objective.LOSS_PARAMS: losses.objective.init_params(
          spec.objective, spec, jax.random.fold_in(key, 1), dims)}
    if spec.objective.init_state:
      loss_state = spec.objective.init_state(spec, dims)
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, loss_state=loss_state)


# ------------------------------------------------------------------------------ loss

def compute_loss(params, apply_fn: Callable, batch: dict, key, spec: LossSpec, train: bool = True):
  """Loss and metrics of one batch: returns (loss [], metrics dict of scalars), as the objective
  ``spec.name`` computes them (``losses.OBJECTIVES``).

  Pair batches: x_a, x_b [B, H, W, C], same [B], mask [B]. Labelled batches: x [B, H, W, C],
  label [B], mask [B]. ``params``: the state's tree (an objective's learned parameters under
  ``losses.objective.LOSS_PARAMS``). An objective with a ``loss_state`` (xbm) computes on the
  batch alone here; ``train_step`` gives it the state.
  """
  objective = losses.OBJECTIVES[spec.name]
  if objective.init_state is None:
    return objective.compute(params, apply_fn, batch, key, spec, train)
  loss, metrics, _ = objective.compute(params, apply_fn, batch, key, spec, train, None)
  return loss, metrics


def _loss_and_state(params, apply_fn, batch: dict, key, spec: LossSpec, loss_state):
  """(loss, (metrics, new loss_state)) of one training batch."""
  objective = losses.OBJECTIVES[spec.name]
  if objective.init_state is None:
    loss, metrics = objective.compute(params, apply_fn, batch, key, spec, True)
    return loss, (metrics, loss_state)
  loss, metrics, new_state = objective.compute(params, apply_fn, batch, key, spec, True,
                                               loss_state)
  return loss, (metrics, new_state)


def train_step(state: TrainState, batch: dict, key, spec: LossSpec):
  """One optimiser step: (state, batch, key) -> (new state, metrics). Pure; jit it. The
  objective's ``loss_state`` (if any) is updated beside the parameters."""
  grad_fn = jax.value_and_grad(_loss_and_state, has_aux=True)
  (_, (metrics, loss_state)), grads = grad_fn(state.params, state.apply_fn, batch, key, spec,
                                              state.loss_state)
  metrics["grad_norm"] = optax.global_norm(grads)
  return state.apply_gradients(grads=grads, loss_state=loss_state), metrics


# --------------------------------------------------------------- compiled programs

def make_train_step(spec: LossSpec, mesh: Mesh):
  """``step(state, batch, key) -> (state, metrics)``, jitted, state donated, batch sharded."""
  def step(state, batch, key):
    return train_step(state, sharding.shard_batch(batch, mesh), key, spec)
  return jax.jit(step, donate_argnums=0)


UNROLL_SETTINGS = ("auto", "always", "never")


def unroll_steps(setting: str, encoder: str, backend: str | None = None,
                 conv_impl: str = "auto") -> bool:
  """Whether the ``steps`` of a compiled call are unrolled into straight-line code.

  ``"auto"`` unrolls only where the encoder's convolutions are XLA's own on CPU
  (``model.conv_impl="xla"``): inside a loop body XLA:CPU runs their weight gradients on a slow
  generic path (jax-ml/jax#12868; about 6x slower for ``experiments/omniglot.py``, 36x for the
  Koch convnet, see benchmarks/README.md), while unrolled they take its fast path, at a compile
  time that grows with the steps per call. Convolutions computed as matrix products
  (``conv_impl`` "matmul", what "auto" picks on CPU: ``siamese_jax.conv``) are fast inside the
  loop, so their calls stay one scan that compiles once whatever ``train.steps_per_call``.
  """
  if setting == "auto":
    backend = backend or jax.default_backend()
    return (backend == "cpu" and models.is_convolutional(encoder)
            and conv.resolve(conv_impl, backend) == "xla")
  return setting == "always"


def step_keys(key, step_index):
  """(batch key, dropout key) of step ``step_index`` of a call made with ``key``: ``fold_in(key,
  i)`` split in two. Both input paths follow it, so they draw the same batches. The dropout key
  draws threefry's bits with the hash unrolled (``siamese_jax.random_bits``: the same masks,
  ~3x cheaper on CPU)."""
  batch_key, dropout_key = jax.random.split(jax.random.fold_in(key, step_index))
  return batch_key, random_bits.unrolled(dropout_key)


def _scan_steps(state, key, make_batch, per_step, steps: int, spec: LossSpec, mesh: Mesh,
                unroll: bool):
  """``steps`` train steps in one scan; step ``i``'s batch is ``make_batch(batch_key,
  per_step[i])`` (``per_step``: a pytree of [steps, ...] arrays, or None)."""
  def body(state, xs):
    step_index, step_input = xs
    batch_key, dropout_key = step_keys(key, step_index)
    batch = sharding.shard_batch(make_batch(batch_key, step_input), mesh)
    return train_step(state, batch, dropout_key, spec)
  if unroll and steps == 1:  # a scan of length 1 stays a while loop whatever its unroll: XLA:CPU's
    # slow convolution-gradient path (85 s instead of ~1 s a convnet4 step at 48 x 48, batch 128)
    step_input = jax.tree.map(lambda x: x[0], per_step)
    state, metrics = body(state, (jnp.zeros((), jnp.int32), step_input))
    return state, jax.tree.map(lambda m: m[None], metrics)
  return jax.lax.scan(body, state, (jnp.arange(steps), per_step), unroll=steps if unroll else 1)


def make_train_epoch(spec: LossSpec, batch_spec: batches.BatchSpec, steps: int, mesh: Mesh,
                     unroll: bool = False):
  """``epoch(state, data, key) -> (state, metrics [steps])``: ``steps`` steps in one scan
  (``unroll=True``: the same steps unrolled, no loop in the compiled program).

  Step ``i`` draws its batch from the device-resident ``data`` with the batch key of
  ``step_keys(key, i)``, so an epoch is reproducible from its key whatever the number of devices.
  """
  sharding.check_batch_divides(batch_spec.examples, mesh)

  def epoch(state, data, key):
    draw = lambda batch_key, _: batches.sample_batch(batch_key, data, batch_spec)
    return _scan_steps(state, key, draw, None, steps, spec, mesh, unroll)

  return jax.jit(epoch, donate_argnums=0)


def make_train_call_streamed(spec: LossSpec, batch_spec: batches.BatchSpec, steps: int,
                             mesh: Mesh, unroll: bool = False):
  """``call(state, gathered, key) -> (state, metrics [steps])``: ``make_train_epoch``'s steps on
  batches drawn elsewhere (``siamese_jax.streaming``: on the host, for data larger than the
  device).

  ``gathered``: ``batches.gather_batch``'s un-augmented batches stacked over the steps, e.g.
  {x_a, x_b [steps, B, H, W, C] uint8, same, mask [steps, B]}, split along B over the mesh
  (``sharding.step_batches_sharded``). Step ``i`` augments its batch with the batch key of
  ``step_keys(key, i)``, so batches drawn with those keys give exactly ``make_train_epoch``'s
  steps.
  """
  sharding.check_batch_divides(batch_spec.examples, mesh)

  def call(state, gathered, key):
    finish = lambda batch_key, batch: batches.augment_batch(batch_key, batch, batch_spec)
    return _scan_steps(state, key, finish, gathered, steps, spec, mesh, unroll)

  return jax.jit(call, donate_argnums=0)
