"""Validation of a run's config at the boundary, with one-line messages that say the fix."""

import pathlib
import shutil

import jax
import numpy as np

from siamese_jax import data, distances, models, train

MIN_FREE_BYTES = 50 * 2 ** 20


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and what to do."""


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def _choice(value, valid, key: str) -> None:
  _require(value in valid, f"{key}={value!r} is not known; choose one of {', '.join(valid)}")


def _positive(value, key: str, kind=(int, float)) -> None:
  _require(isinstance(value, kind) and not isinstance(value, bool) and value > 0
           and np.isfinite(value), f"{key}={value!r} must be a positive number")


def validate(config) -> None:
  """Raises ConfigError for the first value that cannot work."""
  _choice(config.data.name, data.NAMES, "data.name")
  for key in ("train_split", "test_split"):
    _choice(config.data[key], data.SPLITS[config.data.name], f"data.{key}")
  if config.data.image_size is not None:
    _positive(config.data.image_size, "data.image_size", int)
  _choice(config.model.encoder, models.ENCODERS, "model.encoder")
  _choice(config.model.head, models.HEADS, "model.head")
  _choice(config.model.distance, tuple(distances.PAIR_DISTANCES), "model.distance")
  if config.model.embedding_dim is not None:
    _positive(config.model.embedding_dim, "model.embedding_dim", int)
  for i, rate in enumerate(config.model.dropout_rates):
    _require(0 <= rate < 1, f"model.dropout_rates[{i}]={rate} must be in [0, 1)")
  _require(0 <= config.model.input_dropout < 1,
           f"model.input_dropout={config.model.input_dropout} must be in [0, 1)")
  _choice(config.loss.name, train.LOSSES, "loss.name")
  _positive(config.loss.margin, "loss.margin")
  _choice(config.loss.mining, ("batch_all", "batch_hard", "semi_hard"), "loss.mining")
  pair_loss = config.loss.name in ("contrastive", "bce")
  if config.loss.name == "contrastive":
    _require(config.model.head == "distance",
             f"loss.name='contrastive' needs model.head='distance' (got {config.model.head!r}); "
             "use loss.name='bce' for the logit heads")
  if config.loss.name == "bce":
    _require(config.model.head in ("abs_diff", "concat", "subtract"),
             "loss.name='bce' needs a logit head: model.head='abs_diff', 'concat' or 'subtract'")
  if config.loss.name == "cross_entropy":
    _require(config.model.head == "classifier",
             "loss.name='cross_entropy' needs model.head='classifier'")
  if not pair_loss and config.loss.name != "cross_entropy":
    _require(config.model.head == "distance",
             "loss.name='triplet' trains the encoder alone: set model.head='distance'")
  _choice(config.optimizer.name, train.OPTIMIZERS, "optimizer.name")
  _positive(config.optimizer.learning_rate, "optimizer.learning_rate")
  _choice(config.optimizer.schedule, train.SCHEDULES, "optimizer.schedule")
  for key in ("epochs", "batch_size", "classes_per_batch", "samples_per_class", "steps_per_call",
              "checkpoints_to_keep"):
    _positive(config.train[key], f"train.{key}", int)
  if config.train.steps_per_epoch is not None:
    _positive(config.train.steps_per_epoch, "train.steps_per_epoch", int)
  _require(config.loss.name != "triplet" or config.train.samples_per_class >= 2,
           "train.samples_per_class must be at least 2 for triplet mining (an anchor needs a "
           "positive)")
  _choice(config.train.pair_source, ("balanced", "two_source"), "train.pair_source")
  _choice(config.train.unroll, train.UNROLL_SETTINGS, "train.unroll")
  _require(config.train.pair_source == "balanced" or pair_loss,
           "train.pair_source='two_source' needs a pair loss (contrastive or bce)")
  _positive(config.eval.pairs, "eval.pairs", int)
  _positive(config.eval.plot_points, "eval.plot_points", int)


def validate_against_data(config, train_set, batch_spec: train.BatchSpec) -> None:
  """Checks that the batches the config asks for can be drawn from ``train_set``."""
  counts = np.bincount(train_set.labels, minlength=train_set.num_classes)
  size = len(train_set.labels)
  _require(batch_spec.examples <= size,
           f"train.batch_size={batch_spec.examples} is larger than the {size} training images; "
           "use a smaller batch")
  if batch_spec.kind == "pk":
    _require(batch_spec.classes_per_batch <= int(np.sum(counts >= batch_spec.samples_per_class)),
             f"P x K = {batch_spec.classes_per_batch} x {batch_spec.samples_per_class} cannot be "
             f"filled: only {int(np.sum(counts >= batch_spec.samples_per_class))} classes have "
             f"{batch_spec.samples_per_class} images; lower train.classes_per_batch or "
             "train.samples_per_class")
  if batch_spec.kind == "pairs":
    _require(np.all(counts >= 2), "every class needs at least 2 training images to form "
             "positive pairs; check the data")
  devices = len(jax.devices())
  _require(batch_spec.examples % devices == 0,
           f"train.batch_size={batch_spec.examples} does not split over {devices} devices; "
           f"use a multiple of {devices}")


def check_writable(workdir: pathlib.Path) -> None:
  """A clear error before training if ``workdir`` cannot be written or its disk is full."""
  probe = workdir / ".write_test"
  try:
    probe.write_bytes(b"ok")
    probe.unlink()
  except OSError as error:
    raise ConfigError(f"cannot write to --workdir {workdir} ({error.strerror}); choose a "
                      "writable folder") from None
  free = shutil.disk_usage(workdir).free
  _require(free >= MIN_FREE_BYTES, f"only {free // 2 ** 20} MiB free under {workdir}; "
           f"free at least {MIN_FREE_BYTES // 2 ** 20} MiB or choose another --workdir")
