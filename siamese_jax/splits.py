"""Held-out parts of a split: by images (some of every class) or by classes (whole classes).

Pure functions of the labels and a seed (NumPy's ``default_rng``), so a split is reproducible and
can be recorded. The training run holds out a validation part of its training split with them:
the best checkpoint and any tuned threshold are chosen on it, never on the test split.
"""

import numpy as np

BY = ("images", "classes", "groups", "alphabets")  # "alphabets": Omniglot's word for "groups",
# kept for the configs and saved runs that say it
GROUPS = ("groups", "alphabets")  # the values of BY that hold out whole groups of classes


def split_by_images(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(kept [N - M], held_out [M]) sorted indices into labels [N]: about ``fraction * n_c`` images
  of every class c with n_c images, but 0 or at least 2 (a positive pair needs 2, on both
  sides): 2 where n_c >= 4 and the fraction rounds below 2, and never so many that fewer than 2
  stay."""
  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    take = int(round(fraction * len(members)))
    if fraction > 0 and len(members) >= 4:
      take = max(take, 2)
    take = min(take, len(members) - 2)
    held.append(rng.permutation(members)[:take if take >= 2 else 0])
  held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def split_by_classes(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held_out) sorted indices into labels [N]: every image of ``round(fraction * C)`` of the
  C classes (at least 2 when fraction > 0, so held-out pairs can differ; at most C - 2)."""
  classes = np.unique(labels)
  take = int(round(fraction * len(classes)))
  take = min(max(take, 2 if fraction > 0 else 0), max(len(classes) - 2, 0))
  held_classes = np.random.default_rng(seed).permutation(classes)[:take]
  held = np.isin(labels, held_classes)
  return np.flatnonzero(~held), np.flatnonzero(held)


def split_by_groups(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held_out) sorted indices into groups [N] (each image's group of classes, e.g. its
  Omniglot alphabet): every image of ``round(fraction * G)`` of the G groups, at least 1 and at
  most G - 1, so that both sides keep whole groups (one-shot episodes within a group, as
  Omniglot's test within an alphabet)."""
  names = np.unique(groups)
  if len(names) < 2:
    raise ValueError(f"holding out whole groups needs at least 2, got {len(names)}")
  take = min(max(int(round(fraction * len(names))), 1), len(names) - 1)
  held = np.isin(groups, np.random.default_rng(seed).permutation(names)[:take])
  return np.flatnonzero(~held), np.flatnonzero(held)


def split(labels: np.ndarray, fraction: float, by: str, seed: int,
          groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``split_by_images``, ``split_by_classes`` or (by "groups", or its alias "alphabets")
  ``split_by_groups`` over ``groups`` [N], as ``by`` says."""
  if by not in BY:
    raise ValueError(f"split by {by!r} is not known; choose one of {', '.join(BY)}")
  if by in GROUPS:
    if groups is None:
      raise ValueError(f"data.validation_by={by!r} needs a dataset with groups of classes "
                       "(Omniglot's alphabets); use 'classes' or 'images'")
    return split_by_groups(groups, fraction, seed)
  return (split_by_images if by == "images" else split_by_classes)(labels, fraction, seed)


def take(dataset, idx: np.ndarray, note: str = ""):
  """The examples ``idx`` of a data.LabelledImages, labels renumbered 0..C'-1 in their old order
  (so a subset of classes has no empty class), groups and class names following."""
  classes, labels = np.unique(dataset.labels[idx], return_inverse=True)
  changes = {"images": dataset.images[idx], "labels": labels.astype(np.int32),
             "num_classes": len(classes), "source": dataset.source + note}
  if dataset.class_names is not None:
    changes["class_names"] = [dataset.class_names[c] for c in classes]
  if dataset.groups is not None:
    changes["groups"] = dataset.groups[idx]
  return dataset._replace(**changes)


def without_groups(dataset, group_names):
  """``dataset`` (a data.LabelledImages with groups) without the images of the groups named in
  ``group_names``: labels and groups renumbered 0..C'-1 and 0..G'-1 in their old order, class
  names following. Tests on groups never trained on (Omniglot's small2 shares Greek and Latin with
  small1)."""
  from siamese_jax.idx import DataFileError
  if dataset.groups is None:
    raise ValueError("without_groups: this dataset has no groups of classes")
  drop = set(group_names)
  keep_groups = [i for i, n in enumerate(dataset.group_names) if n not in drop]
  if not keep_groups:
    raise DataFileError(f"every group of this split ({', '.join(dataset.group_names)}) is also "
                        "in the training split; choose another test split")
  keep = np.isin(dataset.groups, keep_groups)
  classes, labels = np.unique(dataset.labels[keep], return_inverse=True)
  _, groups = np.unique(dataset.groups[keep], return_inverse=True)
  class_names = ([dataset.class_names[c] for c in classes] if dataset.class_names is not None
                 else None)
  dropped = sorted(drop & set(dataset.group_names))
  return dataset._replace(
      images=dataset.images[keep], labels=labels.astype(np.int32), num_classes=len(classes),
      groups=groups.astype(np.int32),
      group_names=[dataset.group_names[i] for i in keep_groups], class_names=class_names,
      source=f"{dataset.source}; without the groups also in training ({', '.join(dropped)})"
      if dropped else dataset.source)


def _names(dataset) -> list[str]:
  return (list(dataset.class_names) if dataset.class_names is not None
          else [str(c) for c in range(dataset.num_classes)])


def pool(first, second, note: str = ""):
  """Two data.LabelledImages of one dataset as one: images [N1 + N2, H, W, C], classes matched
  by name (label ids where unnamed, e.g. MNIST digits "0".."9"), in first-seen order, so that
  whole classes can then be held out (``split_by_classes``)."""
  if first.images.shape[1:] != second.images.shape[1:]:
    raise ValueError(f"cannot pool images of shapes {first.images.shape[1:]} and "
                     f"{second.images.shape[1:]}; set data.image_size and data.channels")
  names = _names(first)
  position = {name: i for i, name in enumerate(names)}
  for name in _names(second):
    position.setdefault(name, len(position))
  second_ids = np.array([position[name] for name in _names(second)], np.int32)
  return first._replace(
      images=np.concatenate([first.images, second.images]),
      labels=np.concatenate([first.labels, second_ids[second.labels]]).astype(np.int32),
      num_classes=len(position), class_names=list(position), source=first.source + note)


def with_rotated_classes(dataset, turns=(1, 2, 3), mirror: bool = False):
  """A data.LabelledImages with, for each quarter turn k in ``turns``, every image rotated by
  k * 90 degrees as a NEW class (Santoro et al. 2016; Vinyals et al. 2016: a character turned
  is another character), and with ``mirror`` each of those copies mirrored left-right as yet
  another class (the 8 symmetries of the square with turns (1, 2, 3)): images
  [N * M, H, W, C] with M = (1 + len(turns)) * (2 if mirror else 1), copy i of class c labelled
  ``c + i * C``. Groups follow their images. For the training part only: validation and test
  classes stay as drawn. Square images only."""
  height, width = dataset.images.shape[1:3]
  if height != width:
    raise ValueError(f"rotated classes need square images, got {height} x {width}; set "
                     "data.image_size")
  copies = [dataset.images] + [np.rot90(dataset.images, k, axes=(1, 2)) for k in turns]
  names = [""] + [f"/rotated{90 * k}" for k in turns]
  if mirror:
    copies += [np.flip(c, axis=2) for c in copies]
    names += [n + "/mirrored" for n in names]
  count = dataset.num_classes
  note = f"; + rotations by {', '.join(str(90 * k) for k in turns)} degrees"
  changes = {"images": np.ascontiguousarray(np.concatenate(copies)),
             "labels": np.concatenate([dataset.labels + i * count
                                       for i in range(len(copies))]).astype(np.int32),
             "num_classes": count * len(copies),
             "source": dataset.source + note + (" and their mirror images" if mirror else "")
                       + " as new classes"}
  if dataset.class_names is not None:
    changes["class_names"] = [name + suffix for suffix in names for name in dataset.class_names]
  if dataset.groups is not None:
    changes["groups"] = np.concatenate([dataset.groups] * len(copies))
  return dataset._replace(**changes)
