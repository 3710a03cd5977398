"""The record every data source declares: what ``data.name`` it answers to, the ``data.*`` keys it
reads, its splits, its constraints, and how it loads a split. ``siamese_jax.data.SOURCES`` lists
them; the run's data protocol, ``config_checks`` and ``data.is_known`` loop over that table, so a
new source is one module holding its record (and its test) plus one line in the table.

A source's ``load(data, split, seed=0, download=None)`` reads the run's ``data`` config section
(``config.data``, or any object with those attributes): only the keys its ``reads`` names. ``seed``
is the run's seed (``config.seed``), for sources that draw their own split; ``download`` False
never downloads, None (a run's) downloads only where the host answers.
"""

import os
import pathlib
import types
from typing import Any, Callable, NamedTuple

from siamese_jax.data.labelled import LabelledImages


def _none(data) -> None:
  """The default of a record's optional callables: no problem (``check``), no validation split
  (``validation_split``)."""
  del data
  return None


class DataSource(NamedTuple):
  """One source of labelled images.

  name: how ``data.name`` names it (for messages and --help; a pattern such as "<tfds name>"
    where ``accepts`` takes many names).
  accepts: ``accepts(data) -> bool``, whether this source loads the ``data`` config (first match
    in ``SOURCES`` wins; a source that must import something slow to decide goes last).
  reads: the ``data.*`` keys (without "data.") its load and check read.
  load: ``load(data, split, seed=0, download=None) -> LabelledImages``.
  splits: the split names it has, or None where any non-empty name may be asked for and the
    data decides at load (a folder's subfolders, a tfds dataset's splits and slices).
  check: ``check(data) -> str | None``, a one-line problem with the config (naming the key and
    the fix) that can be known before any data is read, or None.
  groups: whether its images carry groups of classes (``LabelledImages.groups``: Omniglot's
    alphabets), which ``data.validation_by='groups'`` and within-group one-shot need; for a
    record that ``wraps``, whether it keeps them.
  wraps: a record applied on top of the source that ``data.name`` chooses (the two-source
    pairing, chosen by ``data.source_b``): its ``load(data, split, seed, download, inner)`` gets
    that source's split ``inner`` and returns what the run uses.
  validation_split: ``validation_split(data) -> str | None``, a split of the source that is the
    run's validation part (a folder's val/), used instead of one held out of the training split;
    None: held out (``data.validation_fraction``).
  only_for: ``data.*`` keys that name something only this source has (a tfds dataset's
    features): set while another source is chosen, they are an error, not the warning of a key
    nothing reads.
  constraints: ``siamese_jax.constraints.Constraint``s on the config and the loaded data.
  """
  name: str
  accepts: Callable[[Any], bool]
  reads: tuple[str, ...]
  load: Callable[..., LabelledImages]
  splits: tuple[str, ...] | None = None
  check: Callable[[Any], str | None] = _none
  groups: bool = False
  wraps: bool = False
  validation_split: Callable[[Any], str | None] = _none
  only_for: tuple[str, ...] = ()
  constraints: tuple = ()

  def knows_split(self, split) -> bool:
    """Whether ``split`` may be asked for, as far as is known before reading any data."""
    if self.splits is not None:
      return split in self.splits
    return isinstance(split, str) and split != ""


def named(name: str) -> Callable[[Any], bool]:
  """``accepts`` for a source with one fixed name."""
  return lambda data: data.name == name


def tfds_folder(data) -> pathlib.Path:
  """The tfds data folder of ``data``: ``data.tfds_data_dir``, else tfds's default
  (``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``); prepared datasets and decoded caches."""
  if data.tfds_data_dir:
    return pathlib.Path(data.tfds_data_dir).expanduser()
  return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def with_values(data, **changes) -> types.SimpleNamespace:
  """A copy of the ``data`` config section (a ConfigDict or a namespace) with ``changes``."""
  values = data.to_dict() if hasattr(data, "to_dict") else dict(vars(data))
  return types.SimpleNamespace(**{**values, **changes})
