"""The record of one training objective (a ``loss.name``), and the pieces it declares.

An ``Objective`` says everything the rest of the library needs to know about a loss: the batches
it trains on, the model heads it works with, the ``loss.*`` keys it reads, the parameters it
learns beside the model's, how a batch becomes (loss, metrics), and the constraints on the config
that ``config_checks.validate`` walks. The train step, the config checks and ``--help`` all read
these records (``siamese_jax.losses.OBJECTIVES``), so a new loss is one module holding its
functions and its record.
"""

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np

# The key under which an objective's learned parameters sit in the train state's params, beside
# the model's own (flax's apply reads the model's and ignores this one).
LOSS_PARAMS = "loss"


class ParamDims(NamedTuple):
  """What a learned loss parameter's shape may depend on: the training classes and the size of
  the model's embeddings."""
  num_classes: int
  embedding_dim: int


@dataclasses.dataclass(frozen=True)
class LearnedParam:
  """A parameter an objective learns with the model (e.g. proxies [num_classes, D]).

  ``shape(spec, dims) -> tuple`` from the LossSpec (its settings) and ``ParamDims``;
  ``init(key, shape, dtype) -> array`` as ``jax.nn.initializers``'.
  """
  name: str
  shape: Callable[[Any, ParamDims], tuple[int, ...]]
  init: Callable = jax.nn.initializers.normal(1.0)


@dataclasses.dataclass(frozen=True)
class Check:
  """A declared constraint on one config key (dotted ``path``, any section): ``ok(value)`` is
  False for a value that cannot work (never raises), and the error reads
  ``"{path}={value!r} {must}"``. ``choices``: the names the key accepts, if it is a name (listed
  by ``--help``)."""
  path: str
  ok: Callable[[Any], bool]
  must: str
  choices: tuple[str, ...] | None = None


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and bool(np.isfinite(value)))


def positive(path: str) -> Check:
  """``path`` must be a finite number > 0."""
  return Check(path, lambda v: _is_number(v) and v > 0, "must be a positive number")


def within(path: str, low: float, high: float, example: str) -> Check:
  """``path`` must be a number in [low, high)."""
  return Check(path, lambda v: _is_number(v) and low <= v < high,
               f"must be in [{low:g}, {high:g}), e.g. {example}")


def at_least(path: str, minimum: int, why: str) -> Check:
  """``path`` must be a number >= minimum; ``why`` completes the message."""
  return Check(path, lambda v: _is_number(v) and v >= minimum,
               f"must be at least {minimum} {why}")


def or_default(check: Check) -> Check:
  """``check``, also passed by None (the key's value is then the objective's own default, from
  its record's ``defaults``; declare such a key with a None placeholder default, which the config
  checks accept beside its ``choices``)."""
  return Check(check.path, lambda v: v is None or check.ok(v), check.must + " (or None: the "
               "loss's own default)", check.choices)


def one_of(path: str, names) -> Check:
  """``path`` must be one of ``names``."""
  names = tuple(names)
  return Check(path, lambda v: v in names, f"is not known; choose one of {', '.join(names)}",
               choices=names)


@dataclasses.dataclass(frozen=True)
class Objective:
  """One ``loss.name``.

  name: the ``loss.name`` value. batch_kind: a ``siamese_jax.batches.KINDS`` entry ("pairs",
  "pk", "uniform"). heads: the ``model.head`` values it trains. reads: the ``loss.*`` keys it
  reads (their values reach ``compute`` as ``spec[key]``). params: the ``LearnedParam``s it
  learns beside the model. compute: ``(params, apply_fn, batch, key, spec, train) -> (loss [],
  metrics dict of scalars)`` where ``params`` is the train state's whole tree (the objective's
  own under ``LOSS_PARAMS``) and ``spec`` a ``train.LossSpec``. checks: the ``Check``s a config
  with this loss must pass. defaults: this loss's own default of a ``loss.*`` key it reads (key
  without "loss." -> value) where it differs from the declared one (PML's: ArcFace's margin 28.6
  degrees, CosFace's 0.35, ntxent's temperature 0.07); ``config_keys.get_config`` makes each such
  key follow ``loss.name`` unless it is set itself, and ``setting`` resolves a key still None at
  run time (xbm's inner loss). init_state: ``(spec, ParamDims) -> pytree`` of state the
  objective carries from step to step without training it (xbm's memory; in
  ``train.TrainState.loss_state``); an objective with one has ``compute(..., train, state) ->
  (loss, metrics, new_state)``, and ``state=None`` means none yet (compute on the batch alone).
  constraints: needs over several keys or the data (``siamese_jax.constraints.Constraint``);
  those of its batch kind are declared once in ``siamese_jax.batches.CONSTRAINTS``.
  """
  name: str
  batch_kind: str
  heads: tuple[str, ...]
  reads: tuple[str, ...]
  compute: Callable
  params: tuple[LearnedParam, ...] = ()
  checks: tuple[Check, ...] = ()
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
  init_state: Callable | None = None
  constraints: tuple = ()


def setting(spec, key: str, defaults: Mapping[str, Any]):
  """``spec[key]``, or ``defaults[key]`` where that is None (see ``Objective.defaults``)."""
  value = spec[key]
  return defaults[key] if value is None and key in defaults else value


def init_params(objective: Objective, spec, key, dims: ParamDims) -> dict:
  """{name: initial value} of ``objective``'s learned parameters (float32), one key each."""
  return {param.name: param.init(jax.random.fold_in(key, i), param.shape(spec, dims))
          for i, param in enumerate(objective.params)}
