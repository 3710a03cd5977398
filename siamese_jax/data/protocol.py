"""How a run's training, validation and test parts are made from its data config: the data
protocol. ``load_datasets(config)`` is what training, ``inference.recalibrate`` and the report call.

1. The training and test splits (``data.train_split``, ``data.test_split``) of the source that
   ``data.name`` chooses in ``siamese_jax.data.SOURCES`` (with ``data.source_b``: paired with a
   second source, see ``two_sources``).
2. ``data.train_classes``: training keeps those classes; the test split keeps every class, or
   those of ``data.test_classes`` where it is set (ids of the source's labels, as train_classes').
3. Classes never trained on: where the data has groups of classes (Omniglot's alphabets) and the
   splits differ, the test part keeps only the groups absent from training; else, with
   ``data.split_by='classes'`` and a source that does not split by itself (a folder does), both
   splits are pooled and whole classes (``data.test_fraction`` of them, drawn from the seed) held
   out as test: the protocol of CUB-200, Cars196, SOP.
   A source that splits by itself (it reads ``data.split_by``: a folder's train/ and test/) is
   held to its word in one warning (``classes_line``): with ``data.split_by='images'``, a test
   class without training images; with 'classes', a test class that was trained on. A warning,
   not an error: a test/ of people never trained on is a sound protocol, which the run then
   scores as such, and data.split_by='classes' declares it; the line catches a misspelt or
   forgotten class folder, or the same person in both splits.
4. Validation: the source's own validation split where it has one (a folder's val/:
   ``DataSource.validation_split``), else ``data.validation_fraction`` of the training part held
   out by images, classes or groups (``data.validation_by``; auto: classes where every test class
   is unseen, else images), drawn from ``config.seed``. What is chosen (best checkpoint,
   threshold) is chosen on it.
5. ``data.rotation_classes`` / ``data.mirror_classes``: new classes added to the training part
   only, after the validation split.

``describe(config, datasets)`` is what summary.json records of the three parts (``splits``),
``counts_lines(datasets)`` what training prints of them.
"""

import logging
from typing import NamedTuple

import numpy as np

from siamese_jax import constraints, data, splits

# The data.* keys read here, beside those of the chosen sources (siamese_jax.data.SOURCES).
READS = ("name", "train_split", "test_split", "train_classes", "test_classes", "split_by",
         "test_fraction", "validation_by", "validation_fraction", "rotation_classes", "mirror_classes")
NAMES_SHOWN = 10  # class names printed per part (all go to summary.json)


class Datasets(NamedTuple):
  """train (what the steps draw from), validation (held out of the train split: what is chosen
  is chosen on it), test (the test split: reported only); ``split`` records how validation was
  held out."""
  train: data.LabelledImages
  validation: data.LabelledImages
  test: data.LabelledImages
  split: dict


def check(data_config) -> str | None:
  """A one-line problem of the protocol's keys with the chosen source, or None: holding out whole
  groups (for validation or for test) needs a source whose images have groups."""
  for key, instead in (("validation_by", "'classes' or 'images'"),
                       ("split_by", "'classes' or 'images'")):
    if getattr(data_config, key) in splits.GROUPS and not has_groups(data_config):
      return (f"data.{key}={getattr(data_config, key)!r} needs data with groups of classes (omniglot's "
              f"alphabets), which data.name={data_config.name!r} has not; use {instead}")
  return None


def _groups(config, datasets) -> str | None:
  return check(config.data)


def _train_classes_present(config, full_train) -> str | None:
  """data.train_classes must name classes of the training split (ids 0 .. classes - 1)."""
  wanted = config.data.train_classes
  if wanted is None:
    return None
  absent = sorted(set(wanted) - set(range(full_train.num_classes)))
  if not absent:
    return None
  return (f"data.train_classes names {', '.join(map(str, absent))}, which the "
          f"{config.data.train_split} split has not (its classes are 0 to "
          f"{full_train.num_classes - 1}); name present classes or set data.train_classes=None")


# What the protocol needs of every run (siamese_jax.constraints); data.train_classes is checked
# at load (load_datasets): the parts renumber their classes, only the split knows its ids.
CONSTRAINTS = (
    constraints.Constraint(("data.validation_by",), _groups, {"data.validation_by": "alphabets"}),
    constraints.Constraint(("data.split_by",), _groups, {"data.split_by": "alphabets"}),
)


def has_groups(data_config) -> bool:
  """Whether the data the config chooses has groups of classes (every chosen record keeps them)."""
  records = data.chosen(data_config)
  return bool(records) and all(record.groups for record in records)


def unseen(train_set, test_set) -> bool:
  """Whether every test class is one never trained on (classes compared by name)."""
  return (train_set.class_names is not None and test_set.class_names is not None
          and not set(train_set.class_names) & set(test_set.class_names))


def _split_by_classes(config, train_split, test_split):
  """(train, test, record): the dataset's two splits pooled and whole classes held out as test
  (data.test_fraction of them, drawn from the seed)."""
  pooled = splits.pool(train_split, test_split, f" + {config.data.test_split}")
  kept, held = splits.split_by_classes(pooled.labels, config.data.test_fraction, config.seed)
  names = pooled.class_names
  record = {"by": "classes", "fraction": config.data.test_fraction, "seed": config.seed,
            "test_classes": [names[c] for c in np.unique(pooled.labels[held])]}
  note = f"; classes held out as test: {', '.join(record['test_classes'][:20])}"
  return (splits.take(pooled, kept, "; trained classes"), splits.take(pooled, held, note), record)


def class_names(dataset) -> list[str]:
  """The names of a LabelledImages's classes in label order ("0".."9" where unnamed)."""
  return (list(dataset.class_names) if dataset.class_names is not None
          else [str(c) for c in range(dataset.num_classes)])


def classes_line(train_set, test_set, test_split: str, split_by: str) -> str | None:
  """One line where the test split's classes break what ``split_by`` promises (by name), else
  None: with "images", test classes without training images; with "classes", test classes that
  were trained on."""
  test_names, train_names = set(class_names(test_set)), set(class_names(train_set))
  found = sorted(test_names - train_names if split_by == "images" else test_names & train_names)
  if not found:
    return None
  count = "all" if len(found) == test_set.num_classes else len(found)
  shown = f"({', '.join(found[:5])}{', ...' if len(found) > 5 else ''})"
  if split_by == "images":
    return (f"{count} of the {test_set.num_classes} classes of the {test_split} split {shown} "
            "have no training images, yet data.split_by='images' tests classes that were trained "
            "on: check the class folders' names, or set data.split_by='classes' if the "
            f"{test_split} classes are meant to be new (they are scored as such either way)")
  return (f"{count} of the {test_set.num_classes} classes of the {test_split} split {shown} are "
          "also training classes, yet data.split_by='classes' tests classes never trained on: "
          "move them out of one split, or set data.split_by='images'")


def load_datasets(config) -> Datasets:
  """The three parts as the config asks (see the module docstring and Datasets)."""
  source = data.find(config.data)
  download = config.data.download
  full_train = data.load_split(config.data, config.data.train_split, seed=config.seed,
                               download=download)
  test_set = data.load_split(config.data, config.data.test_split, seed=config.seed,
                             download=download)
  test_split = {"split": config.data.test_split}
  if "split_by" in source.reads:  # a source that splits by itself: does it keep its word?
    line = classes_line(full_train, test_set, config.data.test_split, config.data.split_by)
    if line is not None:
      logging.warning("%s", line)
  problem = _train_classes_present(config, full_train)
  if problem is not None:
    raise constraints.ConfigError(problem)
  if config.data.test_classes is not None:
    # Named by their ids ("6") where the source has no names: take renumbers the labels, and
    # whether every test class is new (``unseen``) is decided by name.
    full_train, test_set = (part._replace(class_names=class_names(part))
                            for part in (full_train, test_set))
  if config.data.train_classes is not None:  # the test split keeps classes never trained on
    full_train = splits.take(full_train, np.flatnonzero(np.isin(
        full_train.labels, config.data.train_classes)), f"; classes {config.data.train_classes}")
  if config.data.test_classes is not None:
    kept = np.flatnonzero(np.isin(test_set.labels, config.data.test_classes))
    if not len(kept):
      raise ValueError(f"data.test_classes={config.data.test_classes!r}: none of these class ids "
                       f"is in the {config.data.test_split} split (its ids are 0.."
                       f"{test_set.num_classes - 1}); choose ids it has")
    test_set = splits.take(test_set, kept, f"; classes {config.data.test_classes}")
  if test_set.group_names is not None and config.data.train_split != config.data.test_split:
    test_set = splits.without_groups(test_set, full_train.group_names)
  elif config.data.split_by == "classes" and "split_by" not in source.reads:
    full_train, test_set, test_split = _split_by_classes(config, full_train, test_set)
  validation_split = source.validation_split(config.data)
  if validation_split is not None:
    train_part, validation, split = _validation_split(config, full_train, validation_split)
  else:
    train_part, validation, split = _held_out(config, full_train, test_set)
  if config.data.rotation_classes or config.data.mirror_classes:  # after the split:
    train_part = splits.with_rotated_classes(  # validation classes stay as drawn
        train_part, turns=(1, 2, 3) if config.data.rotation_classes else (),
        mirror=config.data.mirror_classes)
  return Datasets(train_part, validation, test_set, {**split, "test": test_split})


def _held_out(config, full_train, test_set):
  """(training part, validation part, record): data.validation_fraction of the training split
  held out by data.validation_by."""
  if config.data.validation_by != "auto":
    by = config.data.validation_by
  else:
    by = "classes" if unseen(full_train, test_set) else "images"
  kept, held_out = splits.split(full_train.labels, config.data.validation_fraction, by,
                                config.seed, groups=full_train.groups)
  note = f"; {config.data.validation_fraction:g} of its {by} held out for validation (seed {config.seed})"
  split = {"by": by, "fraction": config.data.validation_fraction, "seed": config.seed,
           "validation_indices": held_out.tolist()}
  if by != "images":
    names = class_names(full_train)
    split["validation_classes"] = [names[c] for c in np.unique(full_train.labels[held_out])]
  return (splits.take(full_train, kept, note),
          splits.take(full_train, held_out, " (validation part)"), split)


def _validation_split(config, full_train, name: str):
  """(training part, validation part, record): the source's own validation split ``name`` (a
  folder's val/); data.validation_fraction and data.validation_by are not used."""
  validation = data.load_split(config.data, name, seed=config.seed, download=config.data.download)
  by = "classes" if unseen(full_train, validation) else "images"
  split = {"by": by, "split": name, "seed": config.seed}
  if by != "images":
    split["validation_classes"] = class_names(validation)
  logging.info("validation part: the %s split (%s), not held out of %s", name, validation.source,
               config.data.train_split)
  return (full_train._replace(source=f"{full_train.source}; validation: the {name} split"),
          validation._replace(source=f"{validation.source} (validation part)"), split)


def describe(config, datasets: Datasets) -> dict:
  """summary.json's ``splits``: for "train", "validation" and "test", where the part came from,
  its image shape [N, H, W, C] and its class names in label order ("classes")."""
  held = {k: v for k, v in datasets.split.items() if k != "test"}
  validation_from = ({} if "split" in held else {"held_out_of": config.data.train_split})
  return {"train": {"split": config.data.train_split,
                    "shape": list(datasets.train.images.shape), "source": datasets.train.source,
                    "classes": class_names(datasets.train)},
          "validation": {**validation_from, "shape": list(datasets.validation.images.shape),
                         **held, "classes": class_names(datasets.validation)},
          "test": {**datasets.split["test"], "shape": list(datasets.test.images.shape),
                   "source": datasets.test.source, "classes": class_names(datasets.test)}}


def counts_lines(datasets: Datasets) -> list[str]:
  """One line per part: its class and image counts, and its first class names."""
  lines = []
  for name, part in (("training", datasets.train), ("validation", datasets.validation),
                     ("test", datasets.test)):
    names = class_names(part)
    more = f", ... ({len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else ""
    lines.append(f"{name} part: {part.num_classes} classes, {len(part.labels)} images "
                 f"({', '.join(names[:NAMES_SHOWN])}{more})")
  return lines
