"""Whether a run's largest arrays fit in memory, estimated before anything is compiled, and a
one-line answer to an allocation failure that still happens.

The estimates are cheap and deliberately coarse (they catch a value off by orders of magnitude,
not a run that is 10 % too big): the evaluation pairs' indices and scores (``eval.pairs``), one
training batch of float32 images (``data.image_size``), the parameters with their gradients and
two optimiser moments, and the largest activation of a training batch (``model.embedding_dim``,
``data.image_size``, from the model's traced program: ``jax.make_jaxpr``, nothing allocated).
They are ``siamese_jax.constraints.Constraint``s, walked with every other by ``config_checks``.

``answers_exhaustion(keys)`` turns a RESOURCE_EXHAUSTED / out-of-memory error raised inside it
into a ``ConfigError`` naming the keys to lower (evaluation, embedding, prediction).
"""

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax import constraints

BYTES_PER_PAIR = 16  # two int32 indices, the same flag, the float32 score, and a copy
# Parameters, their gradients and two optimiser moments (Adam's; RMSprop keeps one).
PARAM_COPIES = 4


def available_bytes() -> int:
  """The memory of the first device (its allocator's limit), else the host's RAM."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - a backend without memory stats
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _gib(n: float) -> str:
  return f"{n / 2 ** 30:.3g} GiB"


def pairs_fit(config, datasets) -> str | None:
  """eval.pairs: their indices and scores on the device."""
  pairs = config.eval.pairs
  if not isinstance(pairs, int) or isinstance(pairs, bool):
    return None
  need, have = pairs * BYTES_PER_PAIR, available_bytes()
  if need <= have:
    return None
  return (f"eval.pairs={pairs} needs about {_gib(need)} for the pairs' scores, more than the "
          f"{_gib(have)} of memory here; lower eval.pairs (e.g. 2000)")


def _batch_examples(config) -> int:
  t = config.train
  return max(int(t.batch_size), int(t.classes_per_batch) * int(t.samples_per_class))


def batch_fits(config, datasets) -> str | None:
  """data.image_size: a training batch of float32 images (both members of a pair)."""
  hw = constraints.image_hw(config, datasets)
  if hw is None:
    return None
  channels = datasets.train.images.shape[3] if datasets is not None else 3
  need = 2 * _batch_examples(config) * int(np.prod(hw)) * channels * 4
  have = available_bytes()
  if need <= have:
    return None
  return (f"data.image_size={config.data.image_size!r} makes a training batch of about "
          f"{_gib(need)} ({hw[0]} x {hw[1]} images), more than the {_gib(have)} of memory here; "
          "lower data.image_size or train.batch_size")


def _model_key(config) -> str:
  """The model key a user most likely set too large: model.embedding_dim if set, else the
  encoder's width."""
  if config.model.embedding_dim is not None:
    return f"model.embedding_dim={config.model.embedding_dim}"
  return f"model.encoder={config.model.encoder!r} (or model.features / model.filters)"


def model_fits(config, datasets) -> str | None:
  """The parameters (times PARAM_COPIES) and the largest activation of a training batch, from
  the model's traced program on the loaded images' shape (nothing is allocated)."""
  if datasets is None:
    return None
  from siamese_jax import models  # noqa: PLC0415 - models imports constraints
  shape = (1,) + tuple(datasets.train.images.shape[1:])
  model_config = config.model.copy_and_resolve_references()
  if model_config.head in models.CLASSIFIER_HEADS and not model_config.num_classes:
    model_config.num_classes = datasets.train.num_classes
  model = models.build_model(model_config)
  towers = 1 if isinstance(model, models.Classifier) else 2
  program = jax.make_jaxpr(lambda v: model.init({"params": jax.random.key(0)}, *(v,) * towers,
                                                train=False))(jax.ShapeDtypeStruct(shape,
                                                                                   jnp.float32))
  sizes = [int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize  # activations: [1, ...]
           for eqn in program.eqns for v in eqn.outvars
           if len(getattr(v.aval, "shape", ())) >= 2 and v.aval.shape[0] == 1]
  params = sum(int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize for v in program.jaxpr.outvars)
  largest = max(sizes, default=0) * 2 * _batch_examples(config)
  need, have = PARAM_COPIES * params + largest, available_bytes()
  if need <= have:
    return None
  what = (f"{_gib(params)} of parameters" if PARAM_COPIES * params >= largest
          else f"activations of {_gib(largest)} per batch")
  key = (_model_key(config) if PARAM_COPIES * params >= largest
         else f"data.image_size={config.data.image_size!r} (or train.batch_size)")
  return (f"{key}: the model needs about {_gib(need)} ({what}), more than the {_gib(have)} of "
          "memory here; lower it")


CONSTRAINTS = (
    constraints.Constraint(("data.image_size",), batch_fits, {"data.image_size": 10 ** 6}),
    constraints.Constraint(("model.embedding_dim",), model_fits,
                           {"model.embedding_dim": 10 ** 10}),
)


def out_of_memory_error(error: BaseException) -> BaseException | None:
  """The allocation failure in ``error`` or what it was raised from (XLA's RESOURCE_EXHAUSTED, a
  host MemoryError), else None. The one rule for what counts as out of memory."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, MemoryError) or (isinstance(error, jax.errors.JaxRuntimeError) and (
        "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower())):
      return error
    error = error.__cause__ or error.__context__
  return None


def is_exhaustion(error: BaseException) -> bool:
  """Whether ``error`` is (or was raised from) an allocation failure."""
  return out_of_memory_error(error) is not None


@contextlib.contextmanager
def answers_exhaustion(keys: str, doing: str):
  """Raises a one-line ``ConfigError`` (naming ``keys``, the settings to lower, and ``doing``)
  for an allocation failure inside the block; other errors pass through."""
  try:
    yield
  except Exception as error:  # noqa: BLE001 - filtered just below
    if not is_exhaustion(error):
      raise
    raise constraints.ConfigError(f"out of memory while {doing}; lower {keys}") from None
