"""Validation of a run's config at the boundary, with one-line messages that say the fix."""

import pathlib
import shutil

import jax
import numpy as np

from siamese_jax import (batches, config_keys, constraints, conv, data, distances, losses, memory,
                         models, normalization, splits, train)
from siamese_jax.data import protocol
from siamese_jax.pretrained import resnet as pretrained_resnet, tower, vit as pretrained_vit

MIN_FREE_BYTES = 50 * 2 ** 20

ConfigError = constraints.ConfigError  # a value that cannot work; the message names the key


def chosen_constraints(config) -> tuple[constraints.Constraint, ...]:
  """Every constraint the config's chosen records declare (siamese_jax.constraints): the data
  protocol's and the memory estimates, the data sources', the encoders' and the head's
  (models.ENCODERS, models.HEADS), the objective's and its batch kind's (batches.CONSTRAINTS),
  and every evaluator's. The one walk over the records: no name is special-cased here."""
  from siamese_jax import evaluators  # here: it imports plots (matplotlib, sklearn: seconds),
  # which checkpoints -> config_checks must not cost predict's fast verify
  model, objective = config.model, losses.OBJECTIVES[config.loss.name]
  encoders = dict.fromkeys(name for name in (model.encoder, model.encoder_b) if name is not None)
  return (*protocol.CONSTRAINTS,
          *(c for record in data.chosen(config.data) for c in record.constraints),
          *(c for name in encoders for c in models.ENCODERS[name].constraints),
          *models.HEADS[model.head].constraints,
          *objective.constraints, *batches.CONSTRAINTS.get(objective.batch_kind, ()),
          *(c for evaluator in evaluators.EVALUATORS.values() for c in evaluator.constraints),
          *memory.CONSTRAINTS)


def every_constraint() -> tuple[constraints.Constraint, ...]:
  """The constraints of every record in the tables, chosen or not (for the reliability report,
  which breaks each one)."""
  from siamese_jax import evaluators  # see chosen_constraints
  return (*protocol.CONSTRAINTS,
          *(c for record in data.SOURCES for c in record.constraints),
          *(c for table in (models.ENCODERS, models.HEADS) for record in table.values()
            for c in record.constraints),
          *(c for record in losses.OBJECTIVES.values() for c in record.constraints),
          *(c for kind in batches.CONSTRAINTS.values() for c in kind),
          *(c for evaluator in evaluators.EVALUATORS.values() for c in evaluator.constraints),
          *memory.CONSTRAINTS)


def _check_constraints(config, datasets=None) -> None:
  problem = constraints.first_problem(chosen_constraints(config), config, datasets)
  _require(problem is None, problem)


def _finite(value) -> bool:
  """Whether every number in ``value`` (a number or a tuple of them) is finite."""
  if isinstance(value, (tuple, list)):
    return all(_finite(v) for v in value)
  return not isinstance(value, float) or bool(np.isfinite(value))


def _check_finite(config) -> None:
  """No declared key takes NaN or inf (a rate, a size or a momentum of NaN trains nothing)."""
  for key in config_keys.KEYS:
    value = _value(config, key.path)
    example = key.default.get() if hasattr(key.default, "get") else key.default
    _require(_finite(value), f"{key.path}={value!r} must be a number, not nan or inf"
             + (f", e.g. {example!r}" if example is not None else ""))


def _check_only_for(config) -> None:
  """A data.* key that names something only another source has (SOURCES' ``only_for``)."""
  chosen = data.chosen(config.data)
  defaults = config_keys.get_config().data
  for record in data.SOURCES:
    if record in chosen:
      continue
    for key in record.only_for:
      _require(config.data[key] == defaults[key],
               f"data.{key}={config.data[key]!r} is read only by data.name={record.name} "
               f"(data.name={config.data.name!r} has no such feature); leave data.{key} unset")


PAIR_SOURCES = ("balanced", "two_source")


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def _choice(value, valid, key: str) -> None:
  _require(value in valid,
           f"{key}={value!r} is not known; choose one of {', '.join(map(str, valid))}")


def _positive(value, key: str, kind=(int, float)) -> None:
  _require(isinstance(value, kind) and not isinstance(value, bool) and value > 0
           and np.isfinite(value), f"{key}={value!r} must be a positive number")


def choices() -> dict[str, tuple]:
  """Every key whose value is a name, with the names it accepts: read from the tables that
  resolve them, so the check, --help and the code cannot disagree."""
  return {
      "data.validation_by": ("auto",) + splits.BY,
      "data.split_by": splits.BY,
      "model.encoder": tuple(models.ENCODERS),
      "model.head": tuple(models.HEADS),
      "model.distance": tuple(distances.PAIR_DISTANCES),
      "model.activation": tuple(models.ACTIVATIONS),
      "model.input_normalization": normalization.MODES,
      "model.freeze": models.FREEZE,
      "model.pooling": pretrained_resnet.POOLINGS,
      "model.dtype": tuple(tower.DTYPES),
      "model.pos_interpolation": pretrained_vit.INTERPOLATIONS,
      "model.conv_impl": conv.CONV_IMPLS,
      **losses.choices(),
      "optimizer.name": tuple(train.OPTIMIZERS),
      "optimizer.schedule": tuple(train.SCHEDULES),
      "train.unroll": train.UNROLL_SETTINGS,
      "train.pair_source": PAIR_SOURCES,
  }


def _value(config, path: str):
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def _nullable() -> frozenset[str]:
  from ml_collections.config_dict import FieldReference
  return frozenset(key.path for key in config_keys.KEYS
                   if key.default is None or isinstance(key.default, FieldReference))


_NULLABLE = _nullable()  # keys declared None (a placeholder): None is a value they may keep


def _check_declared_values_set(config) -> None:
  """Every key declared with a value (not a None placeholder) must keep one."""
  from ml_collections.config_dict import FieldReference
  for key in config_keys.KEYS:
    if key.default is None or isinstance(key.default, FieldReference):
      continue
    _require(_value(config, key.path) is not None,
             f"{key.path}=None is not allowed: it takes a value such as {key.default!r} "
             f"({key.help})")


def validate(config) -> None:
  """Raises ConfigError for the first value that cannot work: each key's own checks, then the
  constraints of the records the config chooses (``chosen_constraints``) that are known before
  any data is read."""
  _check_declared_values_set(config)
  _check_finite(config)
  for key, valid in choices().items():
    value = _value(config, key)
    if value is None and key in _NULLABLE:  # None: the loss's own default (its record's)
      continue
    _choice(value, valid, key)
  for key in ("name", "train_split", "test_split"):
    _require(isinstance(config.data[key], str) and config.data[key] != "",
             f"data.{key}={config.data[key]!r} must be a name, e.g. "
             f"{ {'name': 'mnist', 'train_split': 'train', 'test_split': 'test'}[key]!r}")
  _check_data_source(config.data)
  if config.data.channels is not None:
    _choice(config.data.channels, (1, 3), "data.channels")
  _require(isinstance(config.data.test_fraction, (int, float))
           and 0 < config.data.test_fraction < 1,
           f"data.test_fraction={config.data.test_fraction!r} must be in (0, 1), e.g. 0.2")
  _check_image_size(config.data.image_size)
  size = config.data.image_size
  _require(not (config.data.rotation_classes and isinstance(size, (tuple, list))
                and len(set(size)) > 1),
           f"data.rotation_classes=True turns images by 90 degrees, which data.image_size={size!r} "
           "(not square) cannot take; use a square size or data.rotation_classes=False")
  _require(config.data.download is None or isinstance(config.data.download, bool),
           f"data.download={config.data.download!r} must be None (where the host answers), True "
           "or False")
  _require(isinstance(config.data.nested_classes, bool),
           f"data.nested_classes={config.data.nested_classes!r} must be True or False")
  fraction = config.data.validation_fraction
  _require(isinstance(fraction, (int, float)) and 0 < fraction < 1,
           f"data.validation_fraction={fraction!r} must be in (0, 1), e.g. 0.1")
  if config.model.embedding_dim is not None:
    _positive(config.model.embedding_dim, "model.embedding_dim", int)
  shift = config.model.test_time_shift
  _require(isinstance(shift, int) and not isinstance(shift, bool) and 0 <= shift <= 4,
           f"model.test_time_shift={shift!r} must be an integer from 0 (off) to 4, e.g. 2")
  for i, width in enumerate(config.model.features):
    _positive(width, f"model.features[{i}]", int)
  _require(len(config.model.dropout_rates) in (0, len(config.model.features)),
           f"model.dropout_rates has {len(config.model.dropout_rates)} rates for "
           f"{len(config.model.features)} model.features layers; give one rate per layer or ()")
  rate_ok = lambda r: isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r < 1
  for i, rate in enumerate(config.model.dropout_rates):
    _require(rate_ok(rate), f"model.dropout_rates[{i}]={rate!r} must be in [0, 1)")
  _require(rate_ok(config.model.input_dropout),
           f"model.input_dropout={config.model.input_dropout!r} must be in [0, 1)")
  _positive(config.model.filters, "model.filters", int)
  _positive(config.model.filter_growth, "model.filter_growth", int)
  _check_resnet_and_norm(config.model)
  _check_initial_weights(config)
  _check_objective(config)
  _require(isinstance(config.eval.threshold, (int, float)) and np.isfinite(config.eval.threshold),
           f"eval.threshold={config.eval.threshold!r} must be a number (unless set, it is "
           "loss.margin / 2)")
  batch_kind = losses.OBJECTIVES[config.loss.name].batch_kind
  _positive(config.optimizer.learning_rate, "optimizer.learning_rate")
  momentum, warmup = config.optimizer.momentum, config.optimizer.warmup_steps
  _require(isinstance(momentum, (int, float)) and not isinstance(momentum, bool)
           and 0 <= momentum < 1, f"optimizer.momentum={momentum!r} must be in [0, 1), e.g. 0.9")
  _require(isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 0,
           f"optimizer.warmup_steps={warmup!r} must be a whole number >= 0 (0: no warm-up)")
  for key in ("epochs", "batch_size", "classes_per_batch", "samples_per_class", "steps_per_call",
              "checkpoints_to_keep"):
    _positive(config.train[key], f"train.{key}", int)
  if config.train.steps_per_epoch is not None:
    _positive(config.train.steps_per_epoch, "train.steps_per_epoch", int)
  pair_losses = [name for name, record in losses.OBJECTIVES.items() if record.batch_kind == "pairs"]
  _require(config.train.pair_source == "balanced" or batch_kind == "pairs",
           f"train.pair_source='two_source' needs a pair loss ({' or '.join(pair_losses)})")
  _check_two_sources(config)
  _check_augmentation(config.train)
  if config.data.device_budget_mb is not None:
    _positive(config.data.device_budget_mb, "data.device_budget_mb")
  if config.train.program_budget_mb is not None:
    _positive(config.train.program_budget_mb, "train.program_budget_mb")
  _positive(config.eval.pairs, "eval.pairs", int)
  if config.eval.far is not None:
    _require(isinstance(config.eval.far, (int, float)) and 0 <= config.eval.far < 1,
             f"eval.far={config.eval.far!r} must be a false-accept rate in [0, 1), e.g. 0.001")
  _positive(config.eval.plot_points, "eval.plot_points", int)
  _check_only_for(config)
  _check_constraints(config)


def _check_image_size(size) -> None:
  """data.image_size: None, a positive int S, or a pair (H, W) of them."""
  whole = lambda n: isinstance(n, int) and not isinstance(n, bool) and n > 0
  _require(size is None or whole(size) or (isinstance(size, (tuple, list)) and len(size) == 2
                                           and all(whole(n) for n in size)),
           f"data.image_size={size!r} must be a positive int S (S x S) or a pair (H, W) of them, "
           "e.g. 64 or (112,92), or None to keep the images' size")


def _check_data_source(data_config) -> None:
  """The records data.name and data.source_b choose (siamese_jax.data.SOURCES): a source takes
  data.name, knows both splits, and each record's own constraints hold, then the protocol's."""
  records = data.chosen(data_config)
  _require(bool(records), f"data.name={data_config.name!r} is not known; use "
           f"{', '.join(data.names())} (with data.dir) or a tfds image dataset name such as "
           "cifar10")
  for key in ("train_split", "test_split"):
    _require(records[0].knows_split(data_config[key]),
             f"data.{key}={data_config[key]!r} is not known; choose one of "
             f"{', '.join(records[0].splits or ())}")
  for problem in [record.check(data_config) for record in records]:
    _require(problem is None, problem)


def _check_objective(config) -> None:
  """The chosen loss's record (siamese_jax.losses): a head it trains, then the checks it
  declares, in order."""
  record, head = losses.OBJECTIVES[config.loss.name], config.model.head
  wanted = (f"model.head={record.heads[0]!r}" if len(record.heads) == 1
            else f"model.head one of {', '.join(record.heads)}")
  fitting = [name for name, other in losses.OBJECTIVES.items() if head in other.heads]
  _require(head in record.heads,
           f"loss.name={record.name!r} needs {wanted} (got {head!r})"
           + (f"; for model.head={head!r} use loss.name={' or '.join(map(repr, fitting))}"
              if fitting else ""))
  for check in record.checks:
    value = _value(config, check.path)
    _require(check.ok(value), f"{check.path}={value!r} {check.must}")


def _check_two_sources(config) -> None:
  """data.source_b and two-source pairs go together; a second tower's keys need two towers."""
  source_b, two_source = config.data.source_b, config.train.pair_source == "two_source"
  _require(two_source == (source_b is not None),
           "train.pair_source='two_source' and data.source_b go together: set both (e.g. "
           "data.source_b='uci_digits', data.image_size=32) or neither")
  model = config.model
  _require(model.encoder_b is None or model.encoder_b in models.ENCODERS,
           f"model.encoder_b={model.encoder_b!r} is not known; choose one of "
           f"{', '.join(models.ENCODERS)} or None")
  if model.input_size_b is not None:
    _positive(model.input_size_b, "model.input_size_b", int)
  _require((model.encoder_b is None and model.input_size_b is None) or not model.shared_weights,
           "model.encoder_b and model.input_size_b shape a second tower: set "
           "model.shared_weights=False")
  for path, example in (("train_classes", "(0, 1, 2, 3, 4, 5, 6, 7)"), ("test_classes", "(8, 9)")):
    classes = config.data[path]
    _require(classes is None or (isinstance(classes, (tuple, list)) and len(set(classes)) >= 2
                                 and len(set(classes)) == len(classes)
                                 and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                         for c in classes)),
             f"data.{path}={classes!r} must be None or distinct class ids >= 0, at least 2 "
             f"(e.g. {example})")


def _check_resnet_and_norm(model_config) -> None:
  _positive(model_config.norm_groups, "model.norm_groups", int)
  reads = models.keys_read(model_config)
  if "norm_groups" in reads:
    _require(model_config.filters % model_config.norm_groups == 0,
             f"model.norm_groups={model_config.norm_groups} does not divide model.filters="
             f"{model_config.filters}; GroupNorm needs whole groups (e.g. norm_groups=8, 16 or 32)")
  sizes = model_config.resnet_stage_sizes
  _require(isinstance(sizes, (tuple, list)) and len(sizes) > 0
           and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes),
           f"model.resnet_stage_sizes={sizes!r} must be a non-empty tuple of positive ints, e.g. "
           "(2, 2, 2, 2)")


def _check_initial_weights(config) -> None:
  """model.pretrained names something there; optimizer.backbone_lr_scale is a positive number."""
  path = config.model.pretrained
  _require(path is None or (isinstance(path, str) and pathlib.Path(path).expanduser().exists()),
           f"model.pretrained={path!r}: no such file or folder; pass an .npz of "
           "siamese_jax.weights.save_params or a run's --workdir (or, for a pretrained backbone, a "
           ".safetensors state dict), or None for a random start")
  if path is not None and pathlib.Path(path).suffix in tower.CHECKPOINT_SUFFIXES:
    _require(config.model.encoder in models.PRETRAINED_ENCODERS,
             f"model.pretrained={path!r} is a PyTorch checkpoint: it loads into a pretrained "
             f"backbone, model.encoder one of {', '.join(models.PRETRAINED_ENCODERS)}")
  if config.model.encoder in models.PRETRAINED_ENCODERS:
    try:
      tower.backbone_args(config.model.backbone_args)
    except ValueError as error:
      raise ConfigError(str(error)) from None
  _positive(config.optimizer.backbone_lr_scale, "optimizer.backbone_lr_scale")


def _range_pair(value, key: str, upper: float | None, example: str) -> None:
  """``value`` is (low, high) with 0 < low <= high (<= upper if given)."""
  _require(isinstance(value, (tuple, list)) and len(value) == 2
           and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
           and 0 < value[0] <= value[1] and (upper is None or value[1] <= upper),
           f"{key}={value!r} must be (low, high) with 0 < low <= high"
           + (f" <= {upper:g}" if upper is not None else "") + f", e.g. {example}")


def _check_augmentation(train_config) -> None:
  if train_config.augment_crop is not None:
    _range_pair(train_config.augment_crop, "train.augment_crop", 1.0, "(0.35, 1.0)")
  _range_pair(train_config.augment_crop_ratio, "train.augment_crop_ratio", None, "(0.75, 1.33)")
  _require(isinstance(train_config.augment_flip, bool),
           f"train.augment_flip={train_config.augment_flip!r} must be True or False")
  for name, top, example in (("augment_scale", 1.0, "0.2"), ("augment_shear", 1.0, "0.2"),
                             ("augment_elastic", 8.0, "2.5 (pixels)")):
    value = train_config[name]
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < top,
             f"train.{name}={value!r} must be a number in [0, {top:g}), e.g. {example}")


def unused_keys(config) -> list[str]:
  """One line for each model.* or loss.* key set away from its default that the chosen model or
  loss does not read (it would have no effect), and for each warning the chosen records'
  constraints give (``Constraint.warn``: a train.batch_size that P x K batches do not read)."""
  defaults = config_keys.get_config()
  model_reads = models.keys_read(config.model) | (
      {"num_classes"} if train.needs_num_classes(config) else set())
  loss_reads = {"name"} | set(losses.OBJECTIVES[config.loss.name].reads)
  found = []
  for section, reads, chosen in (
      ("model", model_reads, f"model.encoder={config.model.encoder!r} with "
                             f"model.head={config.model.head!r}"),
      ("loss", loss_reads, f"loss.name={config.loss.name!r}")):
    for key in config[section]:
      if key not in reads and config[section][key] != defaults[section][key]:
        found.append(f"{section}.{key}={config[section][key]!r} has no effect: {chosen} does "
                     f"not read it (it reads {', '.join(f'{section}.{k}' for k in sorted(reads))})")
  return (found + _unused_data_keys(config, defaults)
          + constraints.warnings(chosen_constraints(config), config))


LOOP_READS = ("device_budget_mb",)  # data.* keys the training loop reads (streaming.py)


def data_keys_read(data_config) -> set[str]:
  """The data.* keys (without "data.") a run of ``data_config`` reads: its chosen records'
  (siamese_jax.data.SOURCES), the data protocol's and the training loop's."""
  return ({key for record in data.chosen(data_config) for key in record.reads}
          | set(protocol.READS) | set(LOOP_READS))


def _unused_data_keys(config, defaults) -> list[str]:
  reads = data_keys_read(config.data)
  source = " + ".join(record.name for record in data.chosen(config.data))
  return [f"data.{key}={config.data[key]!r} has no effect: data.name={config.data.name!r} "
          f"({source}) does not read it" for key in config.data
          if key not in reads and config.data[key] != defaults.data[key]]


def validate_against_data(config, datasets, batch_spec) -> None:
  """Checks that the batches and evaluation pairs the config asks for can be drawn from the
  training, validation and test parts (a data.protocol.Datasets), and the chosen records'
  constraints that need the data (``chosen_constraints``), before anything compiles."""
  train_set = datasets.train
  size = len(train_set.labels)
  classes = config.model.num_classes
  _require(not (train.needs_num_classes(config) and classes and classes < train_set.num_classes),
           f"model.num_classes={classes} is fewer than the {train_set.num_classes} training "
           "classes; leave it unset (None: the data's)")
  _require(batch_spec.examples <= size,
           f"train.batch_size={batch_spec.examples} is larger than the {size} training images; "
           "use a smaller batch")
  _check_constraints(config, datasets)
  for name, part in (("training", train_set), ("validation", datasets.validation),
                     ("test", datasets.test)):
    part_counts = np.bincount(part.labels, minlength=part.num_classes)
    _require(part.num_classes >= 2 and np.all(part_counts >= 2),
             f"the {name} part needs at least 2 classes with at least 2 images each to form "
             f"positive and negative pairs (it has {part.num_classes} classes, the smallest with "
             f"{int(part_counts.min()) if len(part_counts) else 0}); check the data or "
             "data.validation_fraction")
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
