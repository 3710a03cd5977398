"""The data-source table (siamese_jax.data.SOURCES): every record declares the data.* keys it reads,
every declared key is read somewhere, and the checks, is_known and the protocol loop over the
table (a toy source added to it is loaded, checked and known with no other change)."""

import importlib

import numpy as np
import pytest

from experiments import default
from siamese_jax import config_checks, config_keys, data, splits
from siamese_jax.data import protocol
from siamese_jax.data.source import DataSource, named
from tests.helpers import SHARED_DATA

DATA_KEYS = {key.path.split(".", 1)[1] for key in config_keys.KEYS if key.path.startswith("data.")}


def test_every_record_declares_keys_that_exist():
  names = [record.name for record in data.SOURCES]
  assert len(set(names)) == len(names)
  for record in data.SOURCES:
    assert record.reads, record.name
    assert set(record.reads) <= DATA_KEYS, (record.name, set(record.reads) - DATA_KEYS)
  assert set(protocol.READS) <= DATA_KEYS and set(config_checks.LOOP_READS) <= DATA_KEYS


def test_every_declared_data_key_is_read_by_a_record_or_the_protocol():
  read = ({key for record in data.SOURCES for key in record.reads} | set(protocol.READS)
          | set(config_checks.LOOP_READS))
  assert DATA_KEYS - read == set()


@pytest.mark.parametrize("changes,flagged", [
    ({"data.image_key": "image"}, "data.image_key='image' has no effect"),
    ({"data.skip_bad_images": True}, "data.skip_bad_images=True has no effect"),
    ({"data.name": "uci_digits", "data.dir": "/x"}, "data.dir='/x' has no effect"),
])
def test_a_key_the_chosen_source_does_not_read_is_flagged(changes, flagged):
  config = default.override(default.get_config(), changes)
  assert any(line.startswith(flagged) for line in config_checks.unused_keys(config))


@pytest.mark.parametrize("experiment", ["default", "contrastive", "bce", "triplet", "embedding_ce",
                                        "omniglot", "omniglot_full", "cars196"])
def test_the_shipped_configs_set_no_data_key_in_vain(experiment):
  config = importlib.import_module(f"experiments.{experiment}").get_config()
  assert not [line for line in config_checks.unused_keys(config) if line.startswith("data.")]


def _toy_load(data_config, split, seed=0, download=None):
  del seed, download
  images = np.full((6, 4, 4, 1), {"a": 1, "b": 2}[split], np.uint8)
  return data.LabelledImages(images, np.array([0, 0, 0, 1, 1, 1], np.int32), 2, f"toy {split}")


TOY = DataSource("toy", named("toy"), ("image_size",), _toy_load, splits=("a", "b"))


def test_is_known_the_checks_and_the_protocol_loop_over_the_table(monkeypatch):
  assert not data.is_known("toy", "a")
  monkeypatch.setattr(data, "SOURCES", (TOY,) + data.SOURCES)
  assert data.is_known("toy", "a") and not data.is_known("toy", "c")
  toy = {"data.name": "toy", "data.train_split": "a", "data.validation_fraction": 0.5}
  with pytest.raises(config_checks.ConfigError, match="data.test_split='test' is not known; "
                                                      "choose one of a, b"):
    config_checks.validate(default.override(default.get_config(), toy))
  config = default.override(default.get_config(), {**toy, "data.test_split": "b"})
  config_checks.validate(config)
  datasets = protocol.load_datasets(config)
  assert set(np.unique(datasets.test.images)) == {2} and datasets.test.source == "toy b"
  assert data.load("toy", "a").source == "toy a"


@pytest.mark.parametrize("by", splits.GROUPS)
def test_holding_out_groups_needs_a_source_with_groups(by):
  with pytest.raises(config_checks.ConfigError,
                     match=f"data.validation_by='{by}' needs data with groups"):
    config_checks.validate(default.override(default.get_config(), {"data.validation_by": by}))
  config_checks.validate(default.override(default.get_config(), {"data.validation_by": by,
      "data.name": "omniglot", "data.train_split": "small1", "data.test_split": "small2"}))


def test_groups_and_its_alias_alphabets_hold_out_the_same_alphabets(tmp_path):
  if not (SHARED_DATA / "omniglot").is_dir():
    pytest.skip(f"{SHARED_DATA / 'omniglot'} not found")
  config = importlib.import_module("experiments.omniglot").get_config("tiny")
  parts = {}
  for by in splits.GROUPS:
    parts[by] = protocol.load_datasets(default.override(config.copy_and_resolve_references(), {
        "data.tfds_data_dir": str(tmp_path), "data.validation_by": by,
        "data.validation_fraction": 0.2}))
  groups, alphabets = parts["groups"], parts["alphabets"]
  assert groups.split["by"] == "groups" and alphabets.split["by"] == "alphabets"
  for name in ("train", "validation", "test"):
    np.testing.assert_array_equal(getattr(groups, name).labels, getattr(alphabets, name).labels)
    np.testing.assert_array_equal(getattr(groups, name).images, getattr(alphabets, name).images)
  train_alphabets = {n.split("/")[0] for n in groups.train.class_names}
  validation_alphabets = {n.split("/")[0] for n in groups.validation.class_names}
  assert len(validation_alphabets) == 1 and not train_alphabets & validation_alphabets
