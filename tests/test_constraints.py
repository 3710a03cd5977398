"""Constraints declared with the records (siamese_jax.constraints) and walked by config_checks:
each bad config of issue 31 is refused in one line naming the key, before anything compiles."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from siamese_jax import (config_checks, config_keys, constraints, memory, models)
from siamese_jax.data import labelled, protocol
from tests.helpers import tiny_config


def config_with(**changes):
  """The declared defaults with {"section.key": value} changes (keys written with __ for .)."""
  config = config_keys.get_config()
  return config_keys.override(config, {k.replace("__", "."): v for k, v in changes.items()})


def fake_datasets(side=28, classes=10, per_class=20, channels=1) -> protocol.Datasets:
  """Three parts of ``classes`` classes x ``per_class`` blank images of side x side."""
  labels = np.repeat(np.arange(classes, dtype=np.int32), per_class)
  part = labelled.LabelledImages(np.zeros((len(labels), side, side, channels), np.uint8), labels,
                                 classes, "fake")
  return protocol.Datasets(part, part, part, {})


def refused(config, datasets=None) -> str:
  """The one-line ConfigError of ``config`` (checked against ``datasets`` when given)."""
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate(config)
    if datasets is not None:
      from siamese_jax import batches, losses
      spec = batches.batch_spec_from_config(config, losses.OBJECTIVES[config.loss.name].batch_kind)
      config_checks.validate_against_data(config, datasets, spec)
  message = str(error.value)
  assert "\n" not in message
  return message


@pytest.mark.bad_input
def test_koch_on_28_pixel_images_is_refused_naming_the_encoder_and_the_size():
  message = refused(config_with(model__encoder="koch"), fake_datasets(28))
  assert "model.encoder='koch'" in message and "65 x 65" in message
  assert "data.image_size=65" in message
  # known before any data is read where data.image_size says the size
  assert "65 x 65" in refused(config_with(model__encoder="koch", data__image_size=28))


@pytest.mark.parametrize("name", [n for n, c in models.ENCODERS.items() if c.constraints])
@pytest.mark.parametrize("final_pool", [True, False])
def test_each_declared_smallest_image_builds_and_one_pixel_less_does_not(name, final_pool):
  model_config = config_with(model__encoder=name, model__final_pool=final_pool).model
  config = config_with(model__encoder=name, model__final_pool=final_pool)
  side = next(side for side in range(1, 200) if constraints.first_problem(
      models.ENCODERS[name].constraints, config, fake_datasets(side)) is None)
  encoder = models.ENCODERS[name].build(model_config)

  def builds(s):
    try:
      shapes = jax.eval_shape(lambda x: encoder.init(jax.random.key(0), x),
                              jax.ShapeDtypeStruct((1, s, s, 1), jnp.float32))
    except Exception:  # noqa: BLE001 - any failure to build counts
      return False
    return all(0 not in leaf.shape for leaf in jax.tree.leaves(shapes))
  assert builds(side) and not builds(side - 1)


@pytest.mark.bad_input
@pytest.mark.parametrize("key", ["validation_by", "split_by"])
def test_groups_asked_of_mnist_are_refused(key):
  message = refused(config_with(**{f"data__{key}": "alphabets"}))
  assert f"data.{key}='alphabets' needs data with groups" in message


@pytest.mark.bad_input
def test_pk_batches_warn_when_batch_size_is_set_to_another_size():
  config = config_with(loss__name="triplet", train__batch_size=64)
  config_checks.validate(config)
  lines = [line for line in config_checks.unused_keys(config) if "train.batch_size" in line]
  assert len(lines) == 1 and "8 x 4 = 32" in lines[0]
  assert not [line for line in config_checks.unused_keys(config_with(loss__name="triplet"))
              if "batch_size" in line]


@pytest.mark.bad_input
def test_one_evaluation_pair_is_refused():
  assert "eval.pairs=1" in refused(config_with(eval__pairs=1))


@pytest.mark.bad_input
@pytest.mark.parametrize("key", ["image_key", "label_key"])
def test_tfds_feature_keys_on_mnist_are_refused(key):
  message = refused(config_with(**{f"data__{key}": "image"}))
  assert f"data.{key}='image'" in message and "leave" in message


FLOAT_KEYS = [key.path for key in config_keys.KEYS if isinstance(key.default, float)]


@pytest.mark.bad_input
@pytest.mark.parametrize("path", FLOAT_KEYS)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_every_float_key_refuses_nan_and_inf(path, value):
  assert refused(config_with(**{path.replace(".", "__"): value})).startswith(path)


@pytest.mark.bad_input
def test_momentum_nan_is_refused():
  message = refused(config_with(optimizer__name="momentum", optimizer__momentum=math.nan))
  assert "optimizer.momentum=nan must be a number, not nan" in message


@pytest.mark.bad_input
def test_num_classes_below_the_labels_is_refused_before_training():
  config = config_with(loss__name="cross_entropy", model__head="classifier", model__num_classes=3)
  message = refused(config, fake_datasets(classes=10))
  assert "model.num_classes=3" in message and "10 training classes" in message


@pytest.mark.bad_input
def test_more_classes_per_batch_than_classes_is_one_line():
  config = config_with(loss__name="triplet", train__classes_per_batch=11)
  assert "P x K = 11 x 4 cannot be filled" in refused(config, fake_datasets(classes=10))


@pytest.mark.bad_input
def test_train_classes_absent_from_the_split_are_refused_at_load(tfds_dir):
  config = tiny_config("contrastive", tfds_dir, **{"data.train_classes": (0, 1, 42)})
  with pytest.raises(config_checks.ConfigError, match=r"^data.train_classes names 42, which the "
                     r"train split has not \(its classes are 0 to 9\)"):
    protocol.load_datasets(config)


@pytest.mark.bad_input
def test_eval_pairs_beyond_memory_are_refused_before_anything_runs():
  message = refused(config_with(eval__pairs=10 ** 14))
  assert message.startswith("eval.pairs=100000000000000") and "lower eval.pairs" in message


@pytest.mark.bad_input
def test_image_size_beyond_memory_is_refused_before_the_data_is_read():
  message = refused(config_with(data__image_size=10 ** 6))
  assert message.startswith("data.image_size=1000000") and "lower data.image_size" in message


@pytest.mark.bad_input
def test_embedding_dim_beyond_memory_is_refused_before_compiling():
  message = refused(config_with(model__embedding_dim=10 ** 11), fake_datasets(28))
  assert message.startswith("model.embedding_dim=100000000000") and "lower it" in message


def test_defaults_fit_in_memory_and_pass_every_constraint():
  config = config_with()
  config_checks.validate(config)
  assert constraints.first_problem(config_checks.chosen_constraints(config), config,
                                   fake_datasets()) is None


def test_allocation_failures_become_one_line_naming_the_key():
  with pytest.raises(config_checks.ConfigError, match=r"^out of memory while scoring; lower "
                     r"eval.pairs$"):
    with memory.answers_exhaustion("eval.pairs", "scoring"):
      raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1234 bytes\n  more")
  with pytest.raises(KeyError):  # other errors pass through
    with memory.answers_exhaustion("eval.pairs", "scoring"):
      raise KeyError("x")


def test_a_new_records_constraint_is_walked_without_naming_it(monkeypatch):
  """The walk is generic: an encoder added to the table brings its own need."""
  need = constraints.Constraint(("model.embedding_dim",), lambda config, datasets: (
      "model.embedding_dim must be even" if (config.model.embedding_dim or 2) % 2 else None))
  table = {**models.ENCODERS, "odd_hater": models.Component(
      models.ENCODERS["mlp_2d"].build, ("embedding_dim",), constraints=(need,))}
  monkeypatch.setattr(models, "ENCODERS", table)
  assert refused(config_with(model__encoder="odd_hater", model__embedding_dim=3)) == (
      "model.embedding_dim must be even")


def test_every_declared_constraint_is_broken_by_its_overrides():
  """Each constraint's ``breaks`` overrides make that constraint answer (the report's cases)."""
  for constraint in config_checks.every_constraint():
    assert constraint.breaks, constraint.keys
    config = config_with(**{k.replace(".", "__"): v for k, v in constraint.breaks.items()})
    message = constraint.problem(config, None) or constraint.problem(config, fake_datasets(28))
    assert message is not None, constraint.keys


@pytest.mark.bad_input
@pytest.mark.parametrize("changes,message", [
    ({"optimizer__momentum": -1.0}, "optimizer.momentum=-1.0 must be in [0, 1)"),
    ({"optimizer__momentum": 1e300}, "optimizer.momentum=1e+300 must be in [0, 1)"),
    ({"optimizer__warmup_steps": -1}, "optimizer.warmup_steps=-1 must be a whole number >= 0"),
    ({"model__dropout_rates": ("abc", 0.1, 0.0)}, "model.dropout_rates[0]='abc' must be in"),
])
def test_values_the_reliability_report_found_accepted_are_refused(changes, message):
  assert refused(config_with(**changes)).startswith(message)


@pytest.mark.bad_input
@pytest.mark.slow
def test_running_out_of_memory_in_the_final_evaluation_is_one_line(tfds_dir, tmp_path,
                                                                   monkeypatch):
  from siamese_jax import evaluators, experiment

  def exhausted(context):
    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 5 TiB.\nXLA")
  monkeypatch.setattr(evaluators, "summary_figures", exhausted)
  config = tiny_config("contrastive", tfds_dir, **{"train.epochs": 1, "plots.latent": False})
  with pytest.raises(config_checks.ConfigError, match=r"^out of memory while evaluating the "
                     r"final state; lower eval.pairs") as error:
    experiment.train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(error.value)
