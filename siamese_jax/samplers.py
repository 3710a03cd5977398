"""On-device samplers: labelled images in, indices of pairs / P x K batches / episodes out.

Samplers return *indices* into the device-resident image array, never image pairs, so no pair
array of an epoch is ever materialised; the train step gathers the images it needs
(``gather_images``, faster on CPU than ``images[idx]``). All of them are pure functions of a
``jax.random`` key (same key, same batch) and jit-able with their sizes static. A class too small for a sampler is a ``ValueError`` raised on the host while the sampler
is traced (the class sizes are static data of the ``ClassIndex``), never a wrong batch in jit.

Classes are drawn uniformly (not by frequency), examples uniformly within their class.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.tree_util.register_dataclass, data_fields=["order", "start", "count"],
                   meta_fields=["sizes"])
@dataclasses.dataclass(frozen=True)
class ClassIndex:
  """Examples grouped by class: ``order[start[c] : start[c] + count[c]]`` are class ``c``'s indices.

  order: [N] int32, start: [C] int32, count: [C] int32 (device arrays, a pytree's leaves).
  sizes: the class sizes again as a static tuple of ints, for host-side checks while tracing
    (None skips them).
  """
  order: jax.Array
  start: jax.Array
  count: jax.Array
  sizes: tuple[int, ...] | None = None

  @property
  def num_classes(self) -> int:
    return self.count.shape[0]


def build_class_index(labels, num_classes: int) -> ClassIndex:
  """Groups example indices by label ([N] ints in [0, num_classes)) into a ClassIndex."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
    raise ValueError(f"build_class_index: labels must be [N] ints in [0, {num_classes}); got shape "
                     f"{labels.shape}, range [{labels.min(initial=0)}, {labels.max(initial=0)}]")
  order = np.argsort(labels, kind="stable").astype(np.int32)
  count = np.bincount(labels, minlength=num_classes).astype(np.int32)
  start = (np.cumsum(count) - count).astype(np.int32)
  return ClassIndex(jnp.asarray(order), jnp.asarray(start), jnp.asarray(count),
                    tuple(int(c) for c in count))


def _check_sizes(index: ClassIndex, needed: int, sampler: str, classes=None) -> None:
  """ValueError naming the first class (of ``classes``, default all) with fewer than ``needed``."""
  if index.sizes is None:
    return
  sizes = np.asarray(index.sizes)
  classes = np.arange(len(sizes)) if classes is None else np.asarray(classes)
  small = classes[sizes[classes] < needed]
  if small.size:
    raise ValueError(f"{sampler}: class {small[0]} has {sizes[small[0]]} examples, fewer than "
                     f"the {needed} it needs ({small.size} such classes); drop those classes from "
                     "the labels or ask for fewer per class")


def _concrete(x):
  """``x`` as a NumPy array if its value is known on the host (not a tracer), else None."""
  if x is None or isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def _member(index: ClassIndex, cls, offset):
  return index.order[index.start[cls] + offset]


def _distinct_offsets(key, counts, k: int):
  """k distinct offsets in ``[0, counts[p])`` per row, in random order: counts [P] -> [P, k] int32.

  Floyd's algorithm (k steps of O(k) each, no sort over the class), then a shuffle of the k
  columns so that any prefix (e.g. the support of an episode) is itself a uniform subset.
  Requires counts >= k (checked on the host by the callers).
  """
  key_floyd, key_shuffle = jax.random.split(key)
  init = (jnp.full(counts.shape + (k,), -1, jnp.int32), counts.astype(jnp.int32), key_floyd)
  chosen, _, _ = jax.lax.fori_loop(0, k, _floyd_step, init)
  perm = jnp.argsort(jax.random.uniform(key_shuffle, chosen.shape), axis=1)
  return jnp.take_along_axis(chosen, perm, axis=1)


def _floyd_step(i, carry):
  """Floyd's step i: draw t in [0, top]; if t is taken, take top instead (module-level: cached)."""
  chosen, counts, key = carry
  top = counts - chosen.shape[1] + i
  t = jax.random.randint(jax.random.fold_in(key, i), counts.shape, 0, top + 1)
  taken = jnp.any(chosen == t[:, None], axis=1)
  return chosen.at[:, i].set(jnp.where(taken, top, t)), counts, key


def _pairs(key, index_a: ClassIndex, index_b: ClassIndex, batch_size: int, exclude_self: bool):
  """First half positive pairs, the rest negative; a from ``index_a``, b from ``index_b``."""
  num_classes = index_a.num_classes
  n_pos = batch_size // 2
  same = (jnp.arange(batch_size) < n_pos).astype(jnp.float32)
  k_cls, k_other, k_a, k_pos, k_neg = jax.random.split(key, 5)
  cls_a = jax.random.randint(k_cls, (batch_size,), 0, num_classes)
  shift = jax.random.randint(k_other, (batch_size,), 1, max(num_classes, 2))
  cls_b = jnp.where(same > 0, cls_a, (cls_a + shift) % num_classes)
  off_a = jax.random.randint(k_a, (batch_size,), 0, index_a.count[cls_a])
  if exclude_self:  # a different member of the same class: a non-zero shift modulo the class size
    pos_shift = jax.random.randint(k_pos, (batch_size,), 1, index_a.count[cls_a])
    off_pos = (off_a + pos_shift) % index_a.count[cls_a]
  else:
    off_pos = jax.random.randint(k_pos, (batch_size,), 0, index_b.count[cls_a])
  off_neg = jax.random.randint(k_neg, (batch_size,), 0, index_b.count[cls_b])
  off_b = jnp.where(same > 0, off_pos, off_neg)
  return _member(index_a, cls_a, off_a), _member(index_b, cls_b, off_b), same


def sample_balanced_pairs(key, index: ClassIndex, batch_size: int):
  """Draws ``batch_size`` pairs, the first half positive (same class), the rest negative.

  Returns (idx_a [B] int32, idx_b [B] int32, same [B] float32). A positive pair never pairs an
  example with itself; a negative pair's class is uniform among the other classes. Needs every
  class to have >= 2 examples and >= 2 classes.
  """
  _check_sizes(index, 2, "sample_balanced_pairs")
  if index.num_classes < 2:
    raise ValueError("sample_balanced_pairs: negative pairs need at least 2 classes")
  return _pairs(key, index, index, batch_size, exclude_self=True)


def split_sources(index: ClassIndex) -> tuple[ClassIndex, ClassIndex]:
  """The two sources of a two-source set's index (``siamese_jax.data.two_sources``: classes
  0..C-1 the first source's, C..2C-1 the second's, class C + c the same as c), as two indices of C
  classes each over the same examples (the halves of ``start`` and ``count``; ``order`` is
  shared, so their members are indices into the one image array)."""
  if index.num_classes % 2:
    raise ValueError(f"split_sources: a two-source set has an even number of classes (C per "
                     f"source), got {index.num_classes}; load it with data.source_b")
  half = index.num_classes // 2
  sizes = (None, None) if index.sizes is None else (index.sizes[:half], index.sizes[half:])
  return (ClassIndex(index.order, index.start[:half], index.count[:half], sizes[0]),
          ClassIndex(index.order, index.start[half:], index.count[half:], sizes[1]))


def sample_two_source_pairs(key, index: ClassIndex, batch_size: int, index_b: ClassIndex):
  """Balanced pairs across two sources, for two-tower models: the first member of every pair
  from ``index``'s examples, the second from ``index_b``'s, classes matched by id (class c of one
  is class c of the other; ``split_sources`` makes the two of one two-source set).

  Same returns and half/half split as ``sample_balanced_pairs``; the two members are never the
  same example as long as the sources share none. Needs >= 2 classes, each with >= 1 example in
  both sources.
  """
  if index_b.num_classes != index.num_classes:
    raise ValueError(f"sample_two_source_pairs: sources have {index.num_classes} and "
                     f"{index_b.num_classes} classes; give both the same label space")
  _check_sizes(index, 1, "sample_two_source_pairs (source A)")
  _check_sizes(index_b, 1, "sample_two_source_pairs (source B)")
  if index.num_classes < 2:
    raise ValueError("sample_two_source_pairs: negative pairs need at least 2 classes")
  return _pairs(key, index, index_b, batch_size, exclude_self=False)


def sample_pk_batch(key, index: ClassIndex, num_classes_per_batch: int, samples_per_class: int):
  """Draws P distinct classes and K distinct examples of each: indices [P*K] int32, labels [P*K].

  O(P K^2) per batch whatever the class sizes (no sort over the dataset). Needs P <= C and every
  class to have >= K examples.
  """
  p, k = num_classes_per_batch, samples_per_class
  if p > index.num_classes:
    raise ValueError(f"sample_pk_batch: {p} classes per batch but the data has {index.num_classes}")
  _check_sizes(index, k, "sample_pk_batch")
  k_cls, k_ex = jax.random.split(key)
  classes = jax.random.permutation(k_cls, index.num_classes)[:p].astype(jnp.int32)
  offsets = _distinct_offsets(k_ex, index.count[classes], k)
  idx = _member(index, classes[:, None], offsets).reshape(-1)
  return idx, jnp.repeat(classes, k)


def sample_episode(key, index: ClassIndex, n_way: int, k_shot: int, n_query: int,
                   group_of_class=None, within_group: bool = False, classes=None):
  """Draws an N-way K-shot episode with Q queries per class.

  Returns (support [N, K] int32, query [N, Q] int32, class_ids [N] int32): indices into the
  images; row n holds examples of class ``class_ids[n]``, support and query never share one.
  classes: [M] class ids the episode may use (e.g. the classes held out of training); default all.
  within_group: all N classes from one group (e.g. Omniglot's alphabets, as Lake et al. 2015),
    chosen uniformly among the groups with >= N usable classes; needs ``group_of_class`` [C] ints.
  Checks on the host (pass ``group_of_class``/``classes`` as NumPy to have all of them): each
  usable class has >= K + Q examples, and N distinct classes (in one group if asked) exist.
  """
  if within_group and group_of_class is None:
    raise ValueError("sample_episode: within_group=True needs group_of_class [C]")
  pool = jnp.arange(index.num_classes) if classes is None else jnp.asarray(classes, jnp.int32)
  pool_np = np.arange(index.num_classes) if classes is None else _concrete(classes)
  if pool.shape[0] < n_way:
    raise ValueError(f"sample_episode: {n_way}-way episodes but only {pool.shape[0]} classes to "
                     "draw from")
  if pool_np is not None:
    if (len(np.unique(pool_np)) != len(pool_np) or pool_np.min() < 0
        or pool_np.max() >= index.num_classes):
      raise ValueError(f"sample_episode: classes must be distinct ids in [0, {index.num_classes})")
    _check_sizes(index, k_shot + n_query, "sample_episode", pool_np)
  k_group, k_cls, k_ex = jax.random.split(key, 3)
  noise = jax.random.uniform(k_cls, pool.shape)
  if within_group:
    pool_group = jnp.asarray(group_of_class, jnp.int32)[pool]
    num_groups = _group_count(group_of_class, pool_np, n_way)
    per_group = jnp.zeros(num_groups, jnp.int32).at[pool_group].add(1)
    eligible = per_group >= n_way
    # Uniform over eligible groups: the smallest uniform among them.
    group = jnp.argmin(jnp.where(eligible, jax.random.uniform(k_group, (num_groups,)), 2.0))
    noise = jnp.where(pool_group == group, noise, 2.0 + noise)
  _, picked = jax.lax.top_k(-noise, n_way)  # the N smallest: N distinct classes, uniformly
  class_ids = pool[picked]
  offsets = _distinct_offsets(k_ex, index.count[class_ids], k_shot + n_query)
  members = _member(index, class_ids[:, None], offsets)
  return members[:, :k_shot], members[:, k_shot:], class_ids


def _group_count(group_of_class, pool_np, n_way: int) -> int:
  """Number of groups (static), after checking on the host that one has >= n_way pool classes."""
  groups = _concrete(group_of_class)
  if groups is None:
    return int(jnp.shape(group_of_class)[0])  # traced: at most one group per class
  if pool_np is not None:
    per_group = np.bincount(groups[pool_np], minlength=groups.max() + 1)
    if per_group.max(initial=0) < n_way:
      raise ValueError(f"sample_episode: within_group needs a group with >= {n_way} usable "
                       f"classes; the largest has {per_group.max(initial=0)}")
  return int(groups.max()) + 1


def gather_images(images, idx):
  """``images[idx]`` as a gather of flat rows: images [N, ...], idx [...] -> [..., *images[0].shape].

  Same result as ``images[idx]``; XLA:CPU gathers the rows of a [N, H*W*C] array several times
  faster than [N, H, W, C] slices (measured 2.5-5x for 256 MNIST images), and the reshapes are free.
  """
  rows = images.reshape(images.shape[0], -1)[jnp.reshape(idx, (-1,))]
  return rows.reshape(jnp.shape(idx) + images.shape[1:])


def keras_example_pairs(labels, num_classes: int | None = None, seed: int = 0):
  """The fixed pairs of Keras' ``mnist_siamese`` example, as indices (host-side NumPy).

  With n = (smallest class size) - 1, for each class d and i < n: a positive (d's i-th, d's
  (i+1)-th example) and a negative (d's i-th, the i-th example of a random other class), in that
  interleaved order. Returns (idx_a [2 C n] int32, idx_b [2 C n] int32, same [2 C n] float32).
  """
  labels = np.asarray(labels)
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  members = [np.flatnonzero(labels == c) for c in range(num_classes)]
  n = min(len(m) for m in members) - 1
  if n < 1 or num_classes < 2:
    raise ValueError(f"keras_example_pairs: needs >= 2 classes of >= 2 examples; the smallest "
                     f"class has {n + 1}")
  rng = np.random.default_rng(seed)
  d = np.repeat(np.arange(num_classes), n)
  i = np.tile(np.arange(n), num_classes)
  other = (d + rng.integers(1, num_classes, d.shape)) % num_classes
  table = np.stack([m[:n + 1] for m in members])  # [C, n + 1]
  idx_a = np.stack([table[d, i], table[d, i]], axis=1).reshape(-1)
  idx_b = np.stack([table[d, i + 1], table[other, i]], axis=1).reshape(-1)
  same = np.tile(np.array([1.0, 0.0], np.float32), len(d))
  return idx_a.astype(np.int32), idx_b.astype(np.int32), same


def transform_view(key, images, max_shift: float = 2.0, max_degrees: float = 15.0,
                   invert: bool = False, max_scale: float = 0.0, max_shear: float = 0.0,
                   elastic: float = 0.0, elastic_grid: int = 4):
  """A random view of each image: a rotation about the centre and a shift (and, where asked, a
  scaling and shear of each axis: Koch et al.'s affine distortions, and an elastic warp), then
  optionally 255 - x.

  images: [B, H, W, C] (uint8 or float); returns the same shape and dtype. Angles are uniform in
  +-max_degrees, shifts uniform in +-max_shift pixels (sub-pixel, bilinear), each axis's scale
  in 1 +- max_scale and shear in +-max_shear; pixels from outside repeat the nearest edge, which
  is background for MNIST (0) and Omniglot (255). ``invert`` assumes the uint8 range [0, 255].
  With max_scale = max_shear = 0 no scale or shear is drawn (the views of a rotation and shift).
  ``elastic`` > 0 also moves every source pixel by a smooth random field (as handwriting varies
  between writers; Simard et al. 2003): offsets uniform in +-elastic pixels on an
  ``elastic_grid`` x ``elastic_grid`` lattice over the image, bilinearly interpolated between.
  """
  b, h, w, _ = images.shape
  k_angle, k_shift = jax.random.split(key)
  angle = jnp.deg2rad(jax.random.uniform(k_angle, (b,), minval=-max_degrees, maxval=max_degrees))
  shift = jax.random.uniform(k_shift, (b, 2), minval=-max_shift, maxval=max_shift)
  k_scale, k_shear = jax.random.split(jax.random.fold_in(key, 1))
  scale = jax.random.uniform(k_scale, (b, 2), minval=1 - max_scale, maxval=1 + max_scale)
  shear = jax.random.uniform(k_shear, (b, 2), minval=-max_shear, maxval=max_shear)
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                            indexing="ij")
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  per_image = (images, angle, shift, scale, shear)
  if elastic:  # drawn only when asked: the warp-free view is the hot path of most runs
    lattice = jax.random.uniform(jax.random.fold_in(key, 2), (b, 2, elastic_grid, elastic_grid),
                                 minval=-elastic, maxval=elastic)
    per_image += (jax.image.resize(lattice, (b, 2, h, w), "linear"),)  # [B, 2, H, W]: (dy, dx)

  def one(image, a, s, zoom, slant, offsets=None):  # image [H, W, C]: each output pixel's source
    y, x = rows - cy - s[0], cols - cx - s[1]
    if max_scale or max_shear:
      y, x = (y + slant[0] * x) / zoom[0], (x + slant[1] * y) / zoom[1]
    src_y = jnp.cos(a) * y + jnp.sin(a) * x + cy
    src_x = -jnp.sin(a) * y + jnp.cos(a) * x + cx
    if offsets is not None:
      src_y, src_x = src_y + offsets[0], src_x + offsets[1]
    warp = lambda channel: jax.scipy.ndimage.map_coordinates(channel, [src_y, src_x], 1, "nearest")
    return jax.vmap(warp, in_axes=2, out_axes=2)(image.astype(jnp.float32))

  out = jax.vmap(one)(*per_image)
  if invert:
    out = 255.0 - out
  if jnp.issubdtype(images.dtype, jnp.integer):
    out = jnp.clip(jnp.round(out), 0, 255)
  return out.astype(images.dtype)
