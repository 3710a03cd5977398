"""What a train step eats: ``BatchSpec`` says how a batch is drawn, ``sample_batch`` draws it on
device (indices from ``siamese_jax.samplers``, then a gather from the uint8 images).

A batch is drawn in three parts, so that a host-side input path can draw the same batches
(``siamese_jax.streaming``): ``draw_indices`` (which examples: a pure function of the key, run on
any device), ``gather_batch`` (their images and labels: on device, or with NumPy on the host) and
``augment_batch`` (the random views, on device). ``sample_batch`` is the three in turn.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax import augment, constraints, samplers
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
  pair_source: str = "balanced"  # "two_source": first member from source A, second from B
  augment: bool = False  # random rotation + shift of every image (Koch et al.'s distortions)
  augment_scale: float = 0.0  # with augment: each axis scaled by 1 +- this
  augment_shear: float = 0.0  # with augment: each axis sheared by +- this
  augment_elastic: float = 0.0  # with augment: a smooth random warp of up to this many pixels
  crop_scale: tuple[float, float] | None = None  # random resized crops of this area range
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # their aspect ratio (w / h) range
  flip: bool = False  # random left-right flips

  @property
  def examples(self) -> int:
    return self.classes_per_batch * self.samples_per_class if self.kind == "pk" else self.batch_size


def _pk_size(config, datasets) -> str | None:
  """A warning where train.batch_size is neither P x K nor the declared default or a variant's
  (``:tiny`` sets one batch size for every loss): a P x K batch kind does not read it (the steps
  draw P x K examples), which the user may not know."""
  from siamese_jax import config_keys  # noqa: PLC0415 (config_keys imports nothing of ours)
  t = config.train
  size = t.batch_size
  declared = {config_keys.get_config().train.batch_size} | {  # not a user's choice
      variant["train.batch_size"] for variant in config_keys.VARIANTS.values()
      if "train.batch_size" in variant}
  if size in declared or size == t.classes_per_batch * t.samples_per_class:
    return None
  return (f"train.batch_size={size} has no effect: loss.name={config.loss.name!r} trains on P x "
          f"K batches of train.classes_per_batch x train.samples_per_class = "
          f"{t.classes_per_batch} x {t.samples_per_class} = "
          f"{t.classes_per_batch * t.samples_per_class} examples; set P and K for the batch you "
          "want")


def _pk_classes(config, datasets) -> str | None:
  """P classes of K images each must exist in the training part."""
  if datasets is None:
    return None
  p, k = config.train.classes_per_batch, config.train.samples_per_class
  counts = np.bincount(datasets.train.labels, minlength=datasets.train.num_classes)
  filled = int(np.sum(counts >= k))
  if p <= filled:
    return None
  return (f"train.classes_per_batch={p}: P x K = {p} x {k} cannot be filled: only {filled} "
          f"classes have {k} images; lower train.classes_per_batch or train.samples_per_class")


# What each batch kind needs of the config and the data (siamese_jax.constraints), walked by
# config_checks for the chosen objective's kind.
CONSTRAINTS = {
    "pk": (constraints.Constraint(("train.batch_size", "train.classes_per_batch",
                                   "train.samples_per_class"), _pk_size,
                                  {"loss.name": "triplet", "train.batch_size": 64}, warn=True),
           constraints.Constraint(("train.classes_per_batch", "train.samples_per_class"),
                                  _pk_classes,
                                  {"loss.name": "triplet", "train.classes_per_batch": 11})),
    "pairs": (),
    "uniform": (),
}


def batch_spec_from_config(config, kind: str) -> BatchSpec:
  """The BatchSpec of ``config.train`` for batches of ``kind`` (the loss's, see train.LOSSES)."""
  crop = config.train.augment_crop
  return BatchSpec(kind=kind, batch_size=config.train.batch_size,
                   classes_per_batch=config.train.classes_per_batch,
                   samples_per_class=config.train.samples_per_class,
                   pair_source=config.train.pair_source, augment=config.train.augment,
                   augment_scale=config.train.augment_scale,
                   augment_shear=config.train.augment_shear,
                   augment_elastic=config.train.augment_elastic,
                   crop_scale=None if crop is None else tuple(float(s) for s in crop),
                   crop_ratio=tuple(float(r) for r in config.train.augment_crop_ratio),
                   flip=config.train.augment_flip)


def _keys(key):
  """A batch key's (draw, view, augment) keys: how every part below splits it."""
  return jax.random.split(key, 3)


def draw_indices(key, index: samplers.ClassIndex, num_examples: int, spec: BatchSpec) -> dict:
  """Which examples a batch holds, from the batch ``key``; runs on whatever device ``index`` is on.

  pairs: {idx_a, idx_b [B] int32, same [B] float32, mask [B]} (``pair_source="two_source"``:
  idx_a from the first source of a two-source set, idx_b from the second, see
  ``siamese_jax.data.two_sources``); pk and uniform: {idx [B] int32, mask [B]}. ``num_examples``
  (static) is N, the size of the image set (for uniform draws).
  """
  key = _keys(key)[0]
  if spec.kind == "pairs":
    if spec.pair_source == "two_source":  # a two-source set (siamese_jax.data.two_sources)
      index_a, index_b = samplers.split_sources(index)
      idx_a, idx_b, same = samplers.sample_two_source_pairs(key, index_a, spec.batch_size, index_b)
    else:
      idx_a, idx_b, same = samplers.sample_balanced_pairs(key, index, spec.batch_size)
    return {"idx_a": idx_a, "idx_b": idx_b, "same": same, "mask": jnp.ones_like(same)}
  if spec.kind == "pk":
    idx, _ = samplers.sample_pk_batch(key, index, spec.classes_per_batch, spec.samples_per_class)
  else:
    idx = jax.random.randint(key, (spec.batch_size,), 0, num_examples)
  return {"idx": idx, "mask": jnp.ones(idx.shape, jnp.float32)}


def gather_batch(images, labels, drawn: dict, take=samplers.gather_images) -> dict:
  """The images (and labels) of ``draw_indices``'s indices, un-augmented.

  images [N, H, W, C] uint8, labels [N] int32, and ``drawn`` with indices of any leading shape
  [...] (e.g. [steps, B]); ``take(images, idx)`` is the gather: ``samplers.gather_images`` on
  device, NumPy indexing on the host. Returns pairs {x_a, x_b [..., H, W, C], same, mask} or
  {x [..., H, W, C], label [...], mask}. (A P x K batch's labels are its classes repeated K times.)
  """
  batch = {name: value for name, value in drawn.items() if not name.startswith("idx")}
  if "idx" in drawn:
    return {**batch, "x": take(images, drawn["idx"]), "label": labels[drawn["idx"]]}
  return {**batch, "x_a": take(images, drawn["idx_a"]), "x_b": take(images, drawn["idx_b"])}


def _augment_images(key, x, spec: BatchSpec):
  """The random views ``spec`` asks for, of images [B, H, W, C] (same shape and dtype)."""
  if spec.augment:
    x = samplers.transform_view(key, x, max_scale=spec.augment_scale,
                                max_shear=spec.augment_shear, elastic=spec.augment_elastic)
  if spec.crop_scale is not None:
    x = augment.random_resized_crop(jax.random.fold_in(key, 1), x, spec.crop_scale,
                                    spec.crop_ratio)
  if spec.flip:
    x = augment.random_flip(jax.random.fold_in(key, 2), x)
  return x


def augment_batch(key, batch: dict, spec: BatchSpec) -> dict:
  """``gather_batch``'s batch with its random views, from the batch ``key`` (on device).

  Every image is augmented as ``spec`` says (Koch's affine ``augment``, then ``crop_scale``
  random resized crops, then ``flip``). Shapes and dtypes are kept.
  """
  augment_key = _keys(key)[2]
  if "x" in batch:
    return {**batch, "x": _augment_images(augment_key, batch["x"], spec)}
  augment_a, augment_b = jax.random.split(augment_key)
  x_a = _augment_images(augment_a, batch["x_a"], spec)
  x_b = _augment_images(augment_b, batch["x_b"], spec)
  return {**batch, "x_a": x_a, "x_b": x_b}


def sample_batch(key, data: DeviceData, spec: BatchSpec) -> dict:
  """One batch drawn on device from ``key``.

  pairs: {x_a, x_b [B, H, W, C] uint8, same [B] float32, mask [B]}; pk and uniform:
  {x [B, H, W, C], label [B] int32, mask [B]}.
  """
  drawn = draw_indices(key, data.index, data.labels.shape[0], spec)
  return augment_batch(key, gather_batch(data.images, data.labels, drawn), spec)
