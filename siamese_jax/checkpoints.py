"""Checkpoints through orbax: the last N and the best, written atomically, read without pickle.

orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed mid-write leaves the previous checkpoints intact; arrays are stored as tensorstore/OCDBT
and metadata as JSON, never pickled.
"""

import json
import os
import pathlib

import jax
import ml_collections
import orbax.checkpoint as ocp

from siamese_jax import config_keys, models, train
from siamese_jax.train import TrainState

# The best checkpoint is the one with the highest ROC AUC on validation pairs (held out of the
# training split), never a test-split figure.
BEST_METRIC = "val_roc_auc"


class CheckpointError(ValueError):
  """A checkpoint that cannot be read into the model at hand."""


def make_manager(directory: str, keep_last: int = 3,
                 asynchronous: bool = False) -> ocp.CheckpointManager:
  """A manager in ``directory`` that keeps the ``keep_last`` latest checkpoints and the best one
  (highest BEST_METRIC among those saved with metrics). Checkpoints are numbered by the global
  optimiser step: an epoch's is ``epoch * steps_per_epoch``, a preempted run's any step.

  ``asynchronous``: ``save`` returns once the arrays are copied to host memory and orbax writes
  them on a background thread (still atomically: a checkpoint appears only when complete); call
  ``manager.wait_until_finished()`` before reading one back or exiting."""
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=keep_last),
      ocp.checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], n=1,
                                    keep_checkpoints_without_metrics=False),
  ])
  # best_fn too: without it orbax neither writes the metrics nor answers best_step() with
  # anything but the latest step (the policy alone only decides what is kept).
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                         enable_async_checkpointing=asynchronous,
                                         best_fn=lambda metrics: metrics[BEST_METRIC],
                                         best_mode="max")
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _savable(state: TrainState) -> dict:
  return {"params": state.params, "opt_state": state.opt_state, "step": state.step}


def save(manager: ocp.CheckpointManager, state: TrainState, metrics: dict | None,
         progress: dict, wait: bool = True) -> None:
  """Saves ``state`` as checkpoint ``state.step``; ``metrics`` rank it (None: a mid-epoch
  checkpoint, never "best"), ``progress`` (JSON) is what the run needs to continue (epoch,
  the next call of that epoch, history, elapsed time). ``wait=False`` with an asynchronous
  manager: return while orbax still writes (see make_manager)."""
  args = ocp.args.Composite(state=ocp.args.StandardSave(_savable(state)),
                            progress=ocp.args.JsonSave(progress))
  manager.save(int(jax.device_get(state.step)), args=args, metrics=metrics, force=True)
  if wait:
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, state: TrainState, step: int | None = None,
            fix: str = "use the config it was trained with, or another --workdir"):
  """(state, progress) of checkpoint ``step`` (default: the latest), into ``state``'s layout.

  A checkpoint of another model raises CheckpointError; ``fix`` is what its message tells
  the user to do."""
  epoch = manager.latest_step() if step is None else step
  target = _savable(state)
  try:
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), progress=ocp.args.JsonRestore()))
  except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
    first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    raise CheckpointError(
        f"checkpoint {epoch} in {manager.directory} does not fit this model ({first_line}); "
        f"{fix}") from None
  saved = restored["state"]
  new_state = state.replace(params=saved["params"], opt_state=saved["opt_state"],
                            step=saved["step"])
  return new_state, restored["progress"]


# Native image sizes, for runs whose config.json and summary.json do not say which size trained.
NATIVE_IMAGE_SIZES = {"mnist": 28, "fashion_mnist": 28, "omniglot": 105}


def read_progress(manager: ocp.CheckpointManager, step: int) -> dict:
  """The progress JSON saved with checkpoint ``step`` (epoch, history, image_shape, ...)."""
  return manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))["progress"]


def epoch_steps(manager: ocp.CheckpointManager) -> dict[int, int]:
  """{epoch: step} of the end-of-epoch checkpoints in ``manager`` (not a preempted run's)."""
  found = {}
  for step in manager.all_steps():
    progress = read_progress(manager, step)
    if not progress.get("next_call"):
      found[int(progress["epoch"])] = step
  return found


def best_epoch(manager: ocp.CheckpointManager, epochs: dict[int, int]) -> int:
  """The epoch, among ``epochs`` {epoch: step} kept in ``manager``, whose checkpoint has the
  highest BEST_METRIC in the history saved with the latest one (what BestN kept); the latest
  epoch when none has the metric."""
  history = read_progress(manager, epochs[max(epochs)]).get("history", [])
  scored = {h["epoch"]: h[BEST_METRIC] for h in history
            if h.get("epoch") in epochs and h.get(BEST_METRIC) is not None}
  return max(scored, key=lambda e: (scored[e], e)) if scored else max(epochs)


def _read_json(path: pathlib.Path, what_to_do: str):
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
    raise CheckpointError(f"{path}: cannot read it as JSON ({reason}); {what_to_do}") from None


def _as_tuples(value):
  """JSON lists back to the tuples a config holds (hashable, as flax module fields want)."""
  if isinstance(value, dict):
    return {key: _as_tuples(item) for key, item in value.items()}
  if isinstance(value, list):
    return tuple(_as_tuples(item) for item in value)
  return value


def _image_shape(config, summary: dict, progress: dict) -> tuple[int, int, int]:
  """(H, W, C) the run trained on: as its checkpoint records it, else from data.image_size or
  summary.json of older runs, else the native size."""
  if progress.get("image_shape"):
    return tuple(int(n) for n in progress["image_shape"])
  if config.data.image_size:  # S, or (H, W)
    size = config.data.image_size
    return (*((size, size) if isinstance(size, int) else size), 1)
  train_shape = summary.get("data", {}).get("train_shape")
  if train_shape and len(train_shape) == 4:
    return tuple(int(n) for n in train_shape[1:])
  size = NATIVE_IMAGE_SIZES.get(config.data.name, 28)
  return (size, size, 1)


def _reader(directory: pathlib.Path) -> ocp.CheckpointManager:
  """A manager for reading ``directory`` that knows its items, so their metadata reads too."""
  # (read_only=True would say so in two absl warnings on every load)
  options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers={
      "state": ocp.StandardCheckpointHandler(), "progress": ocp.JsonCheckpointHandler()})


def _saved_param_shapes(manager: ocp.CheckpointManager, epoch: int) -> dict[str, tuple]:
  """{"encoder/Dense_0/kernel": shape} of checkpoint ``epoch``'s params, from metadata only."""
  tree = manager.item_metadata(epoch)["state"]
  return _param_shapes(getattr(tree, "tree", tree)["params"])


def _param_shapes(params) -> dict[str, tuple]:
  """{"encoder/Dense_0/kernel": shape} of a params tree (arrays or shapes)."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
          for path, leaf in leaves}


def check_same_params(saved: dict, model: dict, where: str, fix: str) -> None:
  """CheckpointError naming the first parameter whose name or shape differs."""
  for name in sorted(set(saved) | set(model)):
    if saved.get(name) != model.get(name):
      raise CheckpointError(f"{where} does not fit this model (param {name} is "
                            f"{saved.get(name, 'absent')} there, {model.get(name, 'absent')} in "
                            f"the model); {fix}")


PASS_A_RUN = "pass the workdir of a training run (the --workdir of python main.py)"


def _read_run_config(workdir: pathlib.Path) -> tuple[ml_collections.ConfigDict, dict]:
  """(config from config.json with lists as tuples, summary.json or {}) of a run's workdir."""
  if not workdir.is_dir():
    raise CheckpointError(f"{workdir}: no such folder; {PASS_A_RUN}")
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise CheckpointError(f"{config_path} not found, so the model is unknown; {PASS_A_RUN}")
  saved = _read_json(config_path, f"train again into {workdir} or {PASS_A_RUN}")
  if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
    raise CheckpointError(f"{config_path} has no model section; {PASS_A_RUN}")
  summary_path = workdir / "summary.json"
  summary = _read_json(summary_path, f"delete it or {PASS_A_RUN}") if summary_path.is_file() else {}
  return _onto_defaults(_as_tuples(saved), config_path), summary


def _onto_defaults(saved: dict, where: pathlib.Path) -> ml_collections.ConfigDict:
  """The declared defaults (siamese_jax/config_keys.py) updated with a saved config's values, so a
  run saved before a key was declared reads back with that key's default (and one saved under a
  key's earlier name, ``config_keys.RENAMED``, under its present one)."""
  config = config_keys.get_config()
  flat = {}

  def flatten(prefix, node):
    for key, value in node.items():
      if isinstance(value, dict):
        flatten(f"{prefix}{key}.", value)
      else:
        flat[f"{prefix}{key}"] = value
  flatten("", config_keys.upgrade(saved))
  unknown = [path for path in flat if path not in config_keys.declared_paths()]
  if unknown:
    raise CheckpointError(f"{where}: unknown config keys {', '.join(sorted(unknown))}; {PASS_A_RUN}")
  return config_keys.override(config, flat)


def _abstract_state(config, summary: dict, progress: dict, where: pathlib.Path) -> TrainState:
  """The run's TrainState as shapes on one device (no init compiled or run), whatever the mesh
  it was saved from; sets config.data.image_size to the size the run trained on."""
  try:
    model = models.build_model(config.model)
    tx = train.optimizer_from_config(config, total_steps=1)  # model.freeze: a split state
  except (ValueError, AttributeError, KeyError) as error:
    raise CheckpointError(f"{where}: {str(error).splitlines()[0]}; {PASS_A_RUN}") from None
  image_shape = _image_shape(config, summary, progress)
  config.data.image_size = image_shape[0] if image_shape[0] == image_shape[1] else image_shape[:2]
  abstract = jax.eval_shape(lambda key: train.create_train_state(key, model, image_shape, tx),
                            jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)


def describe_checkpoint(workdir, step: int) -> dict:
  """{"epoch", "image_shape": (H, W, C)} of checkpoint ``step`` of the run in ``workdir`` (as
  ``load_trained`` reads them)."""
  workdir = pathlib.Path(workdir).expanduser()
  config, summary = _read_run_config(workdir)
  manager = _reader(workdir / "checkpoints")
  try:
    progress = read_progress(manager, step)
  finally:
    manager.close()
  return {"epoch": int(progress["epoch"]), "image_shape": _image_shape(config, summary, progress)}


def load_trained(workdir, epoch: int | str | None = None
                 ) -> tuple[ml_collections.ConfigDict, TrainState]:
  """(config, state) of the training run in ``workdir``, for evaluation.

  The model is rebuilt from ``workdir/config.json`` (lists read back as tuples, undeclared keys
  refused, keys it lacks at their defaults) and its parameters restored from the latest
  end-of-epoch checkpoint in ``workdir/checkpoints``, or from that of ``epoch`` (an epoch number,
  "latest", or "best": see ``best_epoch``). Images are [H, W, C] of
  data.image_size, else summary.json's data.train_shape, else 28 (MNIST) or 105 (Omniglot);
  the returned config's data.image_size is set to that size.
  ``state.tx`` is rebuilt from config.optimizer only so that the optimiser state restores; its
  schedule length is not the run's, so continue training with train_and_evaluate, not with it.
  Raises CheckpointError (one line that says what to do) when anything is missing or the
  checkpoint is not of this model.
  """
  workdir = pathlib.Path(workdir).expanduser()
  config, summary = _read_run_config(workdir)
  checkpoint_dir = workdir / "checkpoints"
  no_checkpoints = CheckpointError(
      f"{checkpoint_dir}: no checkpoints; train into {workdir} for at least one epoch (python "
      f"main.py --workdir {workdir} ...) or {PASS_A_RUN}")
  if not checkpoint_dir.is_dir():
    raise no_checkpoints
  manager = _reader(checkpoint_dir)
  try:
    epochs = epoch_steps(manager)
    if not epochs:
      raise no_checkpoints
    if epoch == "best":
      epoch = best_epoch(manager, epochs)
    epoch = max(epochs) if epoch in (None, "latest") else epoch
    if epoch not in epochs:
      raise CheckpointError(f"{checkpoint_dir}: no checkpoint of epoch {epoch}; pass one of "
                            f"{', '.join(map(str, sorted(epochs)))}, best or latest")
    step = epochs[epoch]
    saved = _saved_param_shapes(manager, step)
    if config.model.head in models.CLASSIFIER_HEADS and not config.model.num_classes:
      # runs saved before num_classes was filled in before config.json was written
      config.model.num_classes = saved.get("classifier/kernel", (None,))[-1]
    config_path = workdir / "config.json"
    fix = (f"{config_path} is not the config of these checkpoints; {PASS_A_RUN} (its "
           "config.json and checkpoints/ together)")
    state = _abstract_state(config, summary, read_progress(manager, step), config_path)
    # Checked on metadata first: a failed orbax restore leaves never-awaited reads behind.
    check_same_params(saved, _param_shapes(state.params), f"checkpoint {step} in "
                      f"{checkpoint_dir}", fix)
    state, _ = restore(manager, state, step, fix=fix)
  finally:
    manager.close()
  return config, state
