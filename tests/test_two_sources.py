"""Two-source pairs (issue 18 part 1): the UCI digits source, two datasets combined into one
labelled set, the sampler that takes each side of a pair from its own source, towers of two
architectures, and the new-class split (data.train_classes)."""

import jax
import numpy as np
import optax
import pytest

from experiments import default
from siamese_jax import (batches, config_checks, data, evaluate, models, samplers,
                         sharding, train)
from siamese_jax.data import protocol, two_sources, uci_digits
from tests.helpers import tiny_config


def _labelled(labels, size=4, value=0, num_classes=None):
  labels = np.asarray(labels, np.int32)
  images = np.full((len(labels), size, size, 1), value, np.uint8)
  return data.LabelledImages(images, labels, num_classes or int(labels.max()) + 1, "test")


def test_uci_digits_splits_are_fixed_disjoint_and_cover_every_digit():
  train_set, test_set = uci_digits.load("train"), uci_digits.load("test")
  assert train_set.images.shape[1:] == (8, 8, 1) and train_set.images.dtype == np.uint8
  assert len(train_set.labels) + len(test_set.labels) == 1797
  assert train_set.images.max() == 255 and train_set.images.min() == 0  # 16 -> 255
  # about a fifth of every digit is test; no image is in both (compare the pixels as bytes)
  counts = np.bincount(test_set.labels, minlength=10) / np.bincount(
      np.concatenate([train_set.labels, test_set.labels]), minlength=10)
  assert np.all(np.abs(counts - 0.2) < 0.02)
  train_rows = {row.tobytes() for row in train_set.images}
  assert sum(row.tobytes() in train_rows for row in test_set.images) < 5  # duplicates in the data
  np.testing.assert_array_equal(uci_digits.load("test").labels, test_set.labels)  # fixed


def test_uci_digits_at_32_repeat_every_pixel_exactly():
  small, large = data.load("uci_digits", "test"), data.load("uci_digits", "test", image_size=32)
  assert large.images.shape[1:] == (32, 32, 1)
  np.testing.assert_array_equal(np.repeat(np.repeat(small.images, 4, 1), 4, 2), large.images)


def test_combine_offsets_the_second_source_and_names_the_classes():
  first, second = _labelled([0, 1, 2, 1], value=1), _labelled([2, 0, 0], value=2, num_classes=3)
  both = two_sources.combine(first, second, "mnist", "uci_digits")
  np.testing.assert_array_equal(both.labels, [0, 1, 2, 1, 5, 3, 3])
  assert both.num_classes == 6 and both.class_names[0] == "mnist/0"
  assert both.class_names[5] == "uci_digits/2"
  np.testing.assert_array_equal(both.images[:, 0, 0, 0], [1] * 4 + [2] * 3)
  np.testing.assert_array_equal(two_sources.source_of(both.labels, 6), [0] * 4 + [1] * 3)
  np.testing.assert_array_equal(two_sources.shared_class(both.labels, 6), [0, 1, 2, 1, 2, 0, 0])


def test_combine_refuses_other_classes_or_shapes():
  with pytest.raises(ValueError, match="same classes"):
    two_sources.combine(_labelled([0, 1]), _labelled([0, 1, 2]), "a", "b")
  with pytest.raises(ValueError, match="data.image_size"):
    two_sources.combine(_labelled([0, 1]), _labelled([0, 1], size=8), "a", "b")


def test_split_sources_halves_share_the_examples():
  labels = np.array([0, 1, 1, 2, 3, 5, 4, 4, 5])  # 3 classes per source
  index = samplers.build_class_index(labels, 6)
  first, second = samplers.split_sources(index)
  assert first.num_classes == second.num_classes == 3
  assert first.sizes == (1, 2, 1) and second.sizes == (1, 2, 2)
  for cls in range(3):
    a = np.asarray(first.order)[first.start[cls]:first.start[cls] + first.count[cls]]
    b = np.asarray(second.order)[second.start[cls]:second.start[cls] + second.count[cls]]
    assert set(labels[a]) == {cls} and set(labels[b]) == {cls + 3}
  with pytest.raises(ValueError, match="even number"):
    samplers.split_sources(samplers.build_class_index(np.arange(5), 5))


@pytest.mark.parametrize("seed", range(3))
def test_two_source_batches_take_each_side_from_its_source(seed):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.concatenate([np.repeat(np.arange(4), 5),
                                           np.repeat(np.arange(4, 8), 2)])).astype(np.int32)
  images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1)  # pixel = own index
  device = sharding.device_data(images, labels, 8, sharding.make_mesh(jax.devices()[:1]))
  spec = batches.BatchSpec(kind="pairs", batch_size=32, pair_source="two_source")
  batch = batches.sample_batch(jax.random.key(seed), device, spec)
  a, b = (np.asarray(batch[x]).reshape(-1) for x in ("x_a", "x_b"))
  assert np.all(labels[a] < 4) and np.all(labels[b] >= 4)
  np.testing.assert_array_equal(labels[a] == labels[b] - 4, np.asarray(batch["same"]) > 0)
  assert np.asarray(batch["same"]).sum() == 16


def _two_tower_config(**overrides):
  config = default.get_config().model
  config.update({**dict(encoder="embedding_net", embedding_dim=8, shared_weights=False,
                        encoder_b="mlp", input_size_b=8, features=(16, 8), dropout_rates=()),
                 **overrides})
  return config


def test_towers_of_two_architectures_see_their_own_input():
  model = models.build_model(_two_tower_config())
  x_a = jax.random.uniform(jax.random.key(1), (3, 32, 32, 1))
  small = jax.random.uniform(jax.random.key(2), (3, 8, 8, 1))
  x_b = np.repeat(np.repeat(small, 4, 1), 4, 2)  # the 8 x 8 images kept at 32 x 32
  params = model.init(jax.random.key(0), x_a, x_b, train=False)["params"]
  assert set(params) == {"encoder", "encoder_b"}  # the distance head has none
  assert "Conv_0" in params["encoder"] and params["encoder_b"]["encoder"]["Dense_0"][
      "kernel"].shape == (64, 16)  # the second tower reads the 64 pixels of the 8 x 8 image
  _, emb_a, emb_b = model.apply({"params": params}, x_a, x_b, train=False)
  assert emb_a.shape == emb_b.shape == (3, 8)
  mlp = models.MLPEncoder(features=(16, 8))
  np.testing.assert_allclose(emb_b, mlp.apply({"params": params["encoder_b"]["encoder"]}, small),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.apply({"params": params}, x_b, tower=1, method="embed"), emb_b,
                             rtol=1e-6)


def test_towers_must_agree_in_size_and_input_size_must_divide():
  model = models.build_model(_two_tower_config(features=(16, 4)))
  x = np.zeros((1, 32, 32, 1), np.float32)
  with pytest.raises(ValueError, match="output 8 and 4"):
    model.init(jax.random.key(0), x, x, train=False)
  model = models.build_model(_two_tower_config(input_size_b=7))
  with pytest.raises(ValueError, match="does not divide"):
    model.init(jax.random.key(0), x, x, train=False)


def test_second_tower_keys_are_read_only_with_two_towers():
  reads = models.keys_read(_two_tower_config())
  assert {"encoder_b", "input_size_b", "features"} <= reads
  assert "encoder_b" not in models.keys_read(_two_tower_config(shared_weights=True))


@pytest.mark.parametrize("changes,message", [
    ({"train.pair_source": "two_source"}, "go together"),
    ({"data.source_b": "uci_digits"}, "go together"),
    ({"data.source_b": "nope", "train.pair_source": "two_source"}, "data.source_b"),
    ({"model.encoder_b": "mlp"}, "shared_weights=False"),
    ({"model.encoder_b": "nope", "model.shared_weights": False}, "model.encoder_b"),
    ({"data.train_classes": (3,)}, "data.train_classes"),
    ({"data.train_classes": (1, 1, 2)}, "data.train_classes"),
    ({"data.test_classes": (3,)}, "data.test_classes"),
    ({"data.test_classes": (-1, 2)}, "data.test_classes"),
])
def test_config_checks_name_the_key(changes, message):
  config = default.override(default.get_config(), changes)
  with pytest.raises(config_checks.ConfigError, match=message):
    config_checks.validate(config)


def test_two_source_datasets_hold_validation_out_per_source(tfds_dir):
  config = tiny_config("contrastive", tfds_dir, **{
      "data.source_b": "uci_digits", "train.pair_source": "two_source", "data.image_size": 32})
  config_checks.validate(config)
  datasets = protocol.load_datasets(config)
  for part in datasets:
    if isinstance(part, data.LabelledImages):
      assert part.num_classes == 20 and part.images.shape[1:] == (32, 32, 1)
      counts = np.bincount(part.labels, minlength=20)
      assert counts[:10].min() > 0 and counts[10:].min() > 0
  assert len(datasets.test.labels) == 2000 + len(uci_digits.load("test").labels)


def test_train_classes_keep_the_other_classes_for_test(tfds_dir):
  config = tiny_config("contrastive", tfds_dir, **{"data.train_classes": tuple(range(8))})
  datasets = protocol.load_datasets(config)
  assert set(datasets.train.labels) == set(range(8)) == set(datasets.validation.labels)
  assert datasets.train.num_classes == 8 and set(datasets.test.labels) == set(range(10))


def test_test_classes_keep_only_those_classes_for_test(tfds_dir):
  """data.train_classes with data.test_classes: a class-disjoint test without pooling the splits;
  every test class is new, so the run scores retrieval and clustering on them."""
  config = tiny_config("contrastive", tfds_dir, **{"data.train_classes": tuple(range(6)),
                                                   "data.test_classes": (6, 7, 8, 9)})
  config_checks.validate(config)
  datasets = protocol.load_datasets(config)
  # Every test class new: validation holds out whole training classes (data.validation_by auto);
  # the sample has no class names, so they are named by their ids.
  assert datasets.split["by"] == "classes"
  assert (set(datasets.train.class_names) | set(datasets.validation.class_names)
          == {"0", "1", "2", "3", "4", "5"})
  assert datasets.test.num_classes == 4 and datasets.test.class_names == ["6", "7", "8", "9"]
  want = np.isin(data.load("mnist", "test").labels, (6, 7, 8, 9)).sum()
  assert len(datasets.test.labels) == want and protocol.unseen(datasets.train, datasets.test)
  config.data.test_classes = (10, 11)
  with pytest.raises(ValueError, match=r"^data.test_classes=\(10, 11\): none of these class ids"):
    protocol.load_datasets(config)


def test_cross_retrieval_matches_a_brute_force_count():
  rng = np.random.default_rng(0)
  reference, reference_labels = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
  query, query_labels = rng.normal(size=(12, 3)), rng.integers(0, 3, 12)
  found = evaluate.cross_retrieval_metrics(query, query_labels, reference, reference_labels)
  dist = np.linalg.norm(query[:, None] - reference[None], axis=-1)
  order = np.argsort(dist, axis=1)
  p1, r_prec, ap = [], [], []
  for q in range(12):
    relevant = reference_labels[order[q]] == query_labels[q]
    r = int(np.sum(reference_labels == query_labels[q]))
    p1.append(relevant[0])
    r_prec.append(relevant[:r].mean())
    hits = np.cumsum(relevant[:r])
    ap.append(np.sum(np.where(relevant[:r], hits / np.arange(1, r + 1), 0)) / r)
  assert found["precision_at_1"] == pytest.approx(np.mean(p1))
  assert found["r_precision"] == pytest.approx(np.mean(r_prec), abs=1e-6)
  assert found["mean_average_precision_at_r"] == pytest.approx(np.mean(ap), abs=1e-6)


def test_two_source_model_trains_a_step():
  """One optimiser step of the two-architecture model on two-source pairs lowers nothing to
  NaN and changes both towers."""
  config = default.override(default.get_config(), {
      "model.encoder": "embedding_net", "model.embedding_dim": 8, "model.shared_weights": False,
      "model.encoder_b": "mlp", "model.input_size_b": 8, "model.features": (16, 8),
      "model.dropout_rates": ()})
  model = models.build_model(config.model)
  state = train.create_train_state(jax.random.key(0), model, [32, 32, 1], optax.adam(1e-2))
  batch = {"x_a": np.full((4, 32, 32, 1), 200, np.uint8), "x_b": np.full((4, 32, 32, 1), 50,
                                                                         np.uint8),
           "same": np.array([1, 1, 0, 0], np.float32), "mask": np.ones(4, np.float32)}
  new_state, metrics = train.train_step(state, batch, jax.random.key(1),
                                        train.loss_spec_from_config(config))
  assert np.isfinite(metrics["loss"])
  for tower in ("encoder", "encoder_b"):
    before = jax.tree_util.tree_leaves(state.params[tower])
    after = jax.tree_util.tree_leaves(new_state.params[tower])
    assert any(not np.allclose(x, y) for x, y in zip(before, after))
