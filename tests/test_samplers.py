"""Property tests for siamese_jax.samplers: balance, label correctness, no self-pairs, distinctness,
reproducibility from the key, held-out and within-group episodes, and host-side errors."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import samplers
from tests.helpers import SHARED_DATA

pairs_jit = jax.jit(samplers.sample_balanced_pairs, static_argnums=2)
pk_jit = jax.jit(samplers.sample_pk_batch, static_argnums=(2, 3))
episode_jit = jax.jit(samplers.sample_episode, static_argnums=(2, 3, 4),
                      static_argnames=("within_group",))


@st.composite
def labelled(draw, min_classes=2, min_size=2, max_size=12):
  """(labels [N] shuffled, num_classes) with every class of min_size..max_size examples."""
  sizes = draw(st.lists(st.integers(min_size, max_size), min_size=min_classes, max_size=8))
  labels = np.repeat(np.arange(len(sizes)), sizes)
  seed = draw(st.integers(0, 2**16))
  return np.random.default_rng(seed).permutation(labels), len(sizes)


def _np(*arrays):
  return [np.asarray(a) for a in arrays]


@hypothesis.given(labelled(min_size=0), st.integers(0, 2**16))
def test_class_index_groups_every_example_once(data, seed):
  labels, c = data
  index = samplers.build_class_index(labels, c)
  order, start, count = _np(index.order, index.start, index.count)
  assert sorted(order) == list(range(len(labels))) and index.sizes == tuple(count)
  for k in range(c):
    assert (labels[order[start[k]:start[k] + count[k]]] == k).all()


@hypothesis.given(labelled(), st.integers(0, 2**16), st.sampled_from([1, 6, 33]))
def test_balanced_pairs(data, seed, batch_size):
  labels, c = data
  index = samplers.build_class_index(labels, c)
  key = jax.random.key(seed)
  a, b, same = _np(*samplers.sample_balanced_pairs(key, index, batch_size))
  assert a.shape == b.shape == same.shape == (batch_size,) and a.dtype == np.int32
  assert same.sum() == batch_size // 2  # balanced
  np.testing.assert_array_equal(labels[a] == labels[b], same == 1)  # labels correct
  assert (a != b).all()  # never an example with itself
  again = _np(*samplers.sample_balanced_pairs(key, index, batch_size))  # reproducible
  np.testing.assert_array_equal(again[0], a)
  np.testing.assert_array_equal(again[1], b)


def test_jit_gives_the_same_batches_as_eager():
  labels = np.random.default_rng(0).permutation(np.repeat(np.arange(5), [3, 4, 5, 6, 7]))
  index, key = samplers.build_class_index(labels, 5), jax.random.key(3)
  for jitted, eager in ((pairs_jit(key, index, 16), samplers.sample_balanced_pairs(key, index, 16)),
                        (pk_jit(key, index, 3, 3), samplers.sample_pk_batch(key, index, 3, 3)),
                        (episode_jit(key, index, 3, 1, 2),
                         samplers.sample_episode(key, index, 3, 1, 2))):
    for x, y in zip(jitted, eager):
      np.testing.assert_array_equal(x, y)
  other = samplers.sample_balanced_pairs(jax.random.key(4), index, 16)[1]
  assert not np.array_equal(other, pairs_jit(key, index, 16)[1])  # another key, another batch


@hypothesis.given(st.integers(2, 6).flatmap(
    lambda c: st.tuples(*[st.lists(st.integers(1, 6), min_size=c, max_size=c)] * 2)),
    st.integers(0, 2**16))
def test_two_source_pairs_across_image_sets(sizes, seed):
  """Source B is another image set with the same classes (e.g. another dataset's)."""
  rng = np.random.default_rng(seed)
  labels_a, labels_b = (rng.permutation(np.repeat(np.arange(len(s)), s)) for s in sizes)
  c = len(sizes[0])
  index_a, index_b = (samplers.build_class_index(l, c) for l in (labels_a, labels_b))
  a, b, same = _np(*samplers.sample_two_source_pairs(jax.random.key(seed), index_a, 16, index_b))
  assert a.max() < len(labels_a) and b.max() < len(labels_b) and same.sum() == 8
  np.testing.assert_array_equal(labels_a[a] == labels_b[b], same == 1)


def test_two_source_pairs_need_both_sources_to_match():
  index = samplers.build_class_index(np.repeat(np.arange(3), 2), 3)
  with pytest.raises(ValueError, match="3 and 2 classes"):
    samplers.sample_two_source_pairs(jax.random.key(0), index, 8,
                                     samplers.build_class_index(np.arange(2), 2))
  with pytest.raises(ValueError, match="class 1 has 0 examples"):
    samplers.sample_two_source_pairs(jax.random.key(0), index, 8,
                                     samplers.build_class_index(np.array([0, 2]), 3))


@hypothesis.given(labelled(min_size=4), st.integers(0, 2**16), st.integers(1, 4))
def test_pk_batch(data, seed, k):
  labels, c = data
  p = min(c, 3)
  index = samplers.build_class_index(labels, c)
  idx, batch_labels = _np(*samplers.sample_pk_batch(jax.random.key(seed), index, p, k))
  assert idx.shape == (p * k,) and len(np.unique(idx)) == p * k  # K distinct examples per class
  np.testing.assert_array_equal(labels[idx], batch_labels)
  classes = batch_labels.reshape(p, k)
  assert (classes == classes[:, :1]).all() and len(np.unique(classes[:, 0])) == p


def test_pk_batch_scales_to_60000_examples():
  labels = np.random.default_rng(0).integers(0, 10, 60000)
  idx, batch_labels = _np(*pk_jit(jax.random.key(1), samplers.build_class_index(labels, 10), 8, 16))
  np.testing.assert_array_equal(labels[idx], batch_labels)
  assert len(np.unique(idx)) == 128


def test_distinct_offsets_are_uniform_in_every_position():
  counts = jnp.full((20000,), 5)
  offsets = np.asarray(samplers._distinct_offsets(jax.random.key(0), counts, 2))
  assert (offsets[:, 0] != offsets[:, 1]).all()
  for column in offsets.T:  # each of the 5 offsets ~ 1/5 of the time, in each position
    np.testing.assert_allclose(np.bincount(column, minlength=5) / len(column), 0.2, atol=0.015)


@hypothesis.given(labelled(min_classes=4, min_size=4), st.integers(0, 2**16), st.integers(1, 2),
                  st.integers(1, 2))
def test_episode(data, seed, k_shot, n_query):
  labels, c = data
  index = samplers.build_class_index(labels, c)
  held_out = np.arange(c // 2, c)  # classes never seen in training
  support, query, class_ids = _np(*samplers.sample_episode(jax.random.key(seed), index, 2, k_shot,
                                                            n_query, classes=held_out))
  assert support.shape == (2, k_shot) and query.shape == (2, n_query)
  assert len(set(class_ids)) == 2 and set(class_ids) <= set(held_out)
  np.testing.assert_array_equal(labels[support], np.repeat(class_ids[:, None], k_shot, 1))
  np.testing.assert_array_equal(labels[query], np.repeat(class_ids[:, None], n_query, 1))
  assert not set(support.ravel()) & set(query.ravel())


@hypothesis.given(st.integers(0, 2**16))
def test_within_group_episodes(seed):
  labels = np.repeat(np.arange(9), 3)
  group_of_class = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])  # group 0 is too small for 3-way
  index = samplers.build_class_index(labels, 9)
  _, _, class_ids = _np(*samplers.sample_episode(jax.random.key(seed), index, 3, 1, 1,
                                                 group_of_class, within_group=True))
  assert len(set(group_of_class[class_ids])) == 1 and group_of_class[class_ids[0]] != 0


def test_within_group_episodes_on_omniglot_small1():
  """Omniglot's alphabets as the groups."""
  from siamese_jax.data import files
  path = SHARED_DATA / "omniglot" / "images_background_small1.zip"
  if not path.is_file():
    pytest.skip(f"{path} not found")
  drawings = files.read_omniglot_zip(path)
  classes, labels = np.unique([d.label for d in drawings], return_inverse=True)
  names, alphabet = np.unique([d.alphabet for d in drawings], return_inverse=True)
  group_of_class = np.zeros(len(classes), np.int32)
  group_of_class[labels] = alphabet
  index = samplers.build_class_index(labels, len(classes))
  for seed in range(5):  # 20-way 1-shot, within one alphabet, 19 queries each (20 drawers)
    support, query, class_ids = _np(*episode_jit(jax.random.key(seed), index, 20, 1, 19,
                                                 group_of_class, within_group=True))
    assert len(set(group_of_class[class_ids])) == 1 and len(set(class_ids)) == 20
    np.testing.assert_array_equal(labels[query], np.repeat(class_ids[:, None], 19, 1))
  with pytest.raises(ValueError, match="within_group needs a group with >= 41"):
    samplers.sample_episode(jax.random.key(0), index, 41, 1, 1, group_of_class,
                            within_group=True)


def test_keras_example_pairs():
  labels = np.random.default_rng(0).permutation(np.repeat(np.arange(4), [5, 3, 6, 4]))
  a, b, same = samplers.keras_example_pairs(labels)
  assert len(a) == 2 * 4 * 2 and (same == np.tile([1.0, 0.0], 8)).all()
  np.testing.assert_array_equal(labels[a] == labels[b], same == 1)
  for x, y in zip(a[same == 1], b[same == 1]):  # positive = next image of the class
    members = list(np.flatnonzero(labels == labels[x]))
    assert members.index(y) == members.index(x) + 1
  np.testing.assert_array_equal(samplers.keras_example_pairs(labels)[1], b)  # fixed by the seed


@pytest.mark.parametrize("call,match", [
    (lambda i: samplers.sample_balanced_pairs(jax.random.key(0), i, 8), "class 1 has 1 examples"),
    (lambda i: samplers.sample_pk_batch(jax.random.key(0), i, 2, 2), "class 1 has 1 examples"),
    (lambda i: samplers.sample_pk_batch(jax.random.key(0), i, 4, 1), "4 classes per batch"),
    (lambda i: samplers.sample_episode(jax.random.key(0), i, 2, 1, 1), "class 1 has 1 examples"),
    (lambda i: samplers.sample_episode(jax.random.key(0), i, 4, 1, 1), "4-way"),
    (lambda i: samplers.sample_episode(jax.random.key(0), i, 2, 1, 1, within_group=True),
     "group_of_class"),
])
def test_too_small_classes_fail_on_the_host(call, match):
  index = samplers.build_class_index(np.array([0, 0, 0, 1, 2, 2]), 3)
  with pytest.raises(ValueError, match=match):
    call(index)
  with pytest.raises(ValueError, match=match):  # also when traced under jit
    jax.jit(call)(index)


def test_bad_labels_and_keras_errors():
  with pytest.raises(ValueError, match="build_class_index"):
    samplers.build_class_index(np.array([0, 3]), 3)
  with pytest.raises(ValueError, match="keras_example_pairs"):
    samplers.keras_example_pairs(np.array([0, 0, 1]))


def test_gather_images_is_indexing():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (10, 4, 3, 1)), jnp.uint8)
  idx = jnp.array([[3, 3], [0, 9]])
  np.testing.assert_array_equal(samplers.gather_images(images, idx), images[idx])
  np.testing.assert_array_equal(jax.jit(samplers.gather_images)(images, idx[0]), images[idx[0]])


def test_transform_view():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)), jnp.uint8)
  key = jax.random.key(0)
  view = samplers.transform_view(key, images)
  assert view.shape == images.shape and view.dtype == jnp.uint8
  np.testing.assert_array_equal(view, samplers.transform_view(key, images))  # reproducible
  assert not np.array_equal(view, images)
  identity = samplers.transform_view(key, images, max_shift=0.0, max_degrees=0.0)
  np.testing.assert_array_equal(identity, images)
  inverted = samplers.transform_view(key, images, max_shift=0.0, max_degrees=0.0, invert=True)
  np.testing.assert_array_equal(inverted, 255 - np.asarray(images))
  floats = jax.jit(samplers.transform_view)(key, images.astype(jnp.float32))
  assert floats.dtype == jnp.float32 and np.abs(np.asarray(floats) - np.asarray(view)).max() <= 0.5


def test_transform_view_scale_and_shear():
  key = jax.random.key(1)
  # a plus sign centred in a 29 x 29 image: scaling and shearing about the centre keep the centre
  image = np.zeros((4, 29, 29, 1), np.float32)
  image[:, 14, 10:19], image[:, 10:19, 14] = 255.0, 255.0
  still = dict(max_shift=0.0, max_degrees=0.0)
  warped = np.asarray(samplers.transform_view(key, image, max_scale=0.3, max_shear=0.3, **still))
  assert np.all(warped[:, 14, 14] == 255.0)
  assert not np.allclose(warped, image) and not np.allclose(warped[0], warped[1])  # per image
  # scaling changes the arm's length (more or less ink), shear alone keeps the horizontal arm's row
  sums = warped.sum(axis=(1, 2, 3))
  assert np.ptp(sums) > 0
  sheared = np.asarray(samplers.transform_view(key, image, max_shear=0.3, **still))
  assert np.all(sheared[:, 14, 14] == 255.0) and not np.allclose(sheared, image)
  # zero ranges draw nothing: the view of rotation and shift alone, bit for bit
  np.testing.assert_array_equal(samplers.transform_view(key, image, max_scale=0.0, max_shear=0.0),
                                samplers.transform_view(key, image))


def test_transform_view_elastic_warp_is_smooth_local_and_off_at_zero():
  key = jax.random.key(2)
  image = np.zeros((4, 28, 28, 1), np.float32)
  image[:, 6:22, 13:15] = 255.0  # a vertical stroke
  still = dict(max_shift=0.0, max_degrees=0.0)
  warped = np.asarray(samplers.transform_view(key, image, elastic=2.0, **still))
  assert warped.shape == image.shape and not np.allclose(warped, image)
  assert not np.allclose(warped[0], warped[1])  # a field per image
  # offsets of at most 2 pixels: no ink more than 2 pixels (plus interpolation) from the stroke
  cols = np.nonzero(warped.max(axis=(0, 1, 3)) > 0)[0]
  assert cols.min() >= 13 - 3 and cols.max() <= 14 + 3
  # elastic 0 draws nothing: the view of rotation and shift alone, bit for bit
  np.testing.assert_array_equal(samplers.transform_view(key, image, elastic=0.0),
                                samplers.transform_view(key, image))
