"""How a run's training, validation and test parts are made from its data config: the data
protocol. ``load_datasets(config)`` is what training, ``inference.recalibrate`` and the report call.

1. The training and test splits (``data.train_split``, ``data.test_split``) of the source that
   ``data.name`` chooses in ``siamese_jax.data.SOURCES`` (with ``data.source_b``: paired with a
   second source, see ``two_sources``).
2. ``data.train_classes``: training keeps those classes; the test split keeps every class.
3. Classes never trained on: where the data has groups of classes (Omniglot's alphabets) and the
   splits differ, the test part keeps only the groups absent from training; else, with
   ``data.split_by='classes'`` and a source that does not split by itself (a folder does), both
   splits are pooled and whole classes (``data.test_fraction`` of them, drawn from the seed) held
   out as test: the protocol of CUB-200, Cars196, SOP.
4. Validation: ``data.validation_fraction`` of the training part held out by images, classes or
   groups (``data.validation_by``; auto: classes where every test class is unseen, else images),
   drawn from ``config.seed``. What is chosen (best checkpoint, threshold) is chosen on it.
5. ``data.rotation_classes`` / ``data.mirror_classes``: new classes added to the training part
   only, after the validation split.
"""

from typing import NamedTuple

import numpy as np

from siamese_jax import data, splits

# The data.* keys read here, beside those of the chosen sources (siamese_jax.data.SOURCES).
READS = ("name", "train_split", "test_split", "train_classes", "split_by", "test_fraction",
         "validation_by", "validation_fraction", "rotation_classes", "mirror_classes")


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
  groups needs a source whose images have groups."""
  if data_config.validation_by in splits.GROUPS and not has_groups(data_config):
    return (f"data.validation_by={data_config.validation_by!r} needs data with groups of classes "
            f"(omniglot's alphabets), which data.name={data_config.name!r} has not; use "
            "'classes' or 'images'")
  return None


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


def load_datasets(config) -> Datasets:
  """The three parts as the config asks (see the module docstring and Datasets)."""
  source = data.find(config.data)
  full_train = data.load_split(config.data, config.data.train_split, seed=config.seed)
  test_set = data.load_split(config.data, config.data.test_split, seed=config.seed)
  test_split = {"split": config.data.test_split}
  if config.data.train_classes is not None:  # the test split keeps classes never trained on
    full_train = splits.take(full_train, np.flatnonzero(np.isin(
        full_train.labels, config.data.train_classes)), f"; classes {config.data.train_classes}")
  if test_set.group_names is not None and config.data.train_split != config.data.test_split:
    test_set = splits.without_groups(test_set, full_train.group_names)
  elif config.data.split_by == "classes" and "split_by" not in source.reads:
    full_train, test_set, test_split = _split_by_classes(config, full_train, test_set)
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
    names = full_train.class_names or [str(c) for c in range(full_train.num_classes)]
    split["validation_classes"] = [names[c] for c in np.unique(full_train.labels[held_out])]
  train_part = splits.take(full_train, kept, note)
  if config.data.rotation_classes or config.data.mirror_classes:  # after the split:
    train_part = splits.with_rotated_classes(  # validation classes stay as drawn
        train_part, turns=(1, 2, 3) if config.data.rotation_classes else (),
        mirror=config.data.mirror_classes)
  return Datasets(train_part, splits.take(full_train, held_out, " (validation part)"), test_set,
                  {**split, "test": test_split})
