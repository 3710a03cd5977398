"""On-device samplers: labelled images in, indices of pairs / P x K batches out.

Samplers return *indices* into the device-resident image array, never image pairs, so no pair
array of an epoch is ever materialised; the train step gathers the images it needs.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ClassIndex(NamedTuple):
  """Examples grouped by class: ``order[start[c] : start[c] + count[c]]`` are class ``c``'s indices.

  order: [N] int32, start: [C] int32, count: [C] int32.
  """
  order: jax.Array
  start: jax.Array
  count: jax.Array


def build_class_index(labels, num_classes: int) -> ClassIndex:
  """Groups example indices by label ([N] ints in [0, num_classes)) into a ClassIndex."""
  labels = np.asarray(labels)
  order = np.argsort(labels, kind="stable").astype(np.int32)
  count = np.bincount(labels, minlength=num_classes).astype(np.int32)
  start = (np.cumsum(count) - count).astype(np.int32)
  return ClassIndex(jnp.asarray(order), jnp.asarray(start), jnp.asarray(count))


def _member(index: ClassIndex, cls, offset):
  return index.order[index.start[cls] + offset]


def sample_balanced_pairs(key, index: ClassIndex, batch_size: int):
  """Draws ``batch_size`` pairs, the first half positive (same class), the rest negative.

  Returns (idx_a [B] int32, idx_b [B] int32, same [B] float32). A positive pair never pairs an
  example with itself (classes need at least two examples).
  """
  num_classes = index.count.shape[0]
  n_pos = batch_size // 2
  same = (jnp.arange(batch_size) < n_pos).astype(jnp.float32)
  k_cls, k_other, k_a, k_b = jax.random.split(key, 4)
  cls_a = jax.random.randint(k_cls, (batch_size,), 0, num_classes)
  shift = jax.random.randint(k_other, (batch_size,), 1, num_classes)
  cls_b = jnp.where(same > 0, cls_a, (cls_a + shift) % num_classes)
  off_a = jnp.floor(jax.random.uniform(k_a, (batch_size,)) * index.count[cls_a]).astype(jnp.int32)
  # Positive: a different member of the same class, by a non-zero shift modulo the class size.
  pos_shift = 1 + jnp.floor(jax.random.uniform(k_b, (batch_size,)) *
                            (index.count[cls_a] - 1)).astype(jnp.int32)
  off_pos = (off_a + pos_shift) % index.count[cls_a]
  off_neg = jnp.floor(jax.random.uniform(k_b, (batch_size,)) * index.count[cls_b]).astype(jnp.int32)
  off_b = jnp.where(same > 0, off_pos, off_neg)
  return _member(index, cls_a, off_a), _member(index, cls_b, off_b), same


def sample_pk_batch(key, index: ClassIndex, num_classes_per_batch: int, samples_per_class: int):
  """Draws P distinct classes and K distinct examples of each: indices [P*K] int32, labels [P*K]."""
  num_classes = index.count.shape[0]
  k_cls, k_ex = jax.random.split(key)
  classes = jax.random.permutation(k_cls, num_classes)[:num_classes_per_batch]
  # K distinct offsets per class: the ranks of K smallest uniforms restricted to the class size.
  noise = jax.random.uniform(k_ex, (num_classes_per_batch, index.order.shape[0]))
  valid = jnp.arange(index.order.shape[0])[None, :] < index.count[classes][:, None]
  offsets = jnp.argsort(jnp.where(valid, noise, 2.0), axis=1)[:, :samples_per_class]
  idx = _member(index, classes[:, None], offsets).reshape(-1)
  labels = jnp.repeat(classes, samples_per_class)
  return idx, labels
