"""What a record (an objective, an encoder or head, a data source, an evaluator, a batch kind)
needs of the config and of the data it runs on, declared beside it and checked in one place.

A ``Constraint`` is one declared need: the keys it involves, ``problem(config, datasets)`` giving
a one-line message (naming the key and the fix) or None, and a set of overrides that breaks it
(``breaks``, on the tiny MNIST config) that ``scripts/reliability_report.py`` tries. ``datasets``
is None when the config is checked before any data is read (``config_checks.validate``); a need
that only the data can answer returns None then and is answered when ``config_checks
.validate_against_data`` calls it again with the loaded parts, still before anything compiles.
"""

import dataclasses
from typing import Any, Callable


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and what to do."""


@dataclasses.dataclass(frozen=True)
class Constraint:
  """One need of a record. ``keys``: the dotted keys involved (the first is the one to change);
  ``problem(config, datasets) -> str | None`` (datasets: a ``data.protocol.Datasets`` or None
  before the data is read; never raises for a config that passed the per-key checks);
  ``breaks``: {"section.key": value} overrides of the tiny MNIST config that violate it;
  ``warn``: a value that still runs (a key that would have no effect): its message is a warning
  line, not an error."""
  keys: tuple[str, ...]
  problem: Callable[[Any, Any], str | None]
  breaks: dict = dataclasses.field(default_factory=dict)
  warn: bool = False


def first_problem(constraints, config, datasets=None) -> str | None:
  """The first error message of ``constraints`` on (config, datasets), or None."""
  for constraint in constraints:
    message = None if constraint.warn else constraint.problem(config, datasets)
    if message is not None:
      return message
  return None


def warnings(constraints, config, datasets=None) -> list[str]:
  """The messages of the ``warn`` constraints of ``constraints`` that apply."""
  found = [c.problem(config, datasets) for c in constraints if c.warn]
  return [message for message in found if message is not None]


def image_hw(config, datasets) -> tuple[int, int] | None:
  """(H, W) of the images the model sees: the training part's once loaded, else
  data.image_size where it is set, else None (not known before the data is read)."""
  if datasets is not None:
    return tuple(datasets.train.images.shape[1:3])
  size = config.data.image_size
  if isinstance(size, int) and not isinstance(size, bool):
    return (size, size)
  if isinstance(size, (tuple, list)) and len(size) == 2:
    return tuple(size)
  return None


def image_at_least(key: str, minimum: Callable[[Any], int] | int, breaks: dict) -> Constraint:
  """The images must be at least ``minimum`` pixels (an int, or a function of the model config)
  on each side for the model part chosen by ``key`` (its feature maps shrink below its kernels
  otherwise)."""
  def problem(config, datasets):
    need = minimum(config.model) if callable(minimum) else minimum
    hw = image_hw(config, datasets)
    if hw is None or min(hw) >= need:
      return None
    value = config[key.split(".")[0]][key.split(".")[1]]
    return (f"{key}={value!r} needs images of at least {need} x {need} pixels (they are "
            f"{hw[0]} x {hw[1]}); set data.image_size={need} or more, or choose another {key}")
  return Constraint((key, "data.image_size"), problem, breaks)
