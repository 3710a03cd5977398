"""Checkpoints through orbax: the last N and the best, written atomically, read without pickle.

orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed mid-write leaves the previous checkpoints intact; arrays are stored as tensorstore/OCDBT
and metadata as JSON, never pickled.
"""

import contextlib
import json
import os
import pathlib
import sys
import tempfile

import jax
import ml_collections
import orbax.checkpoint as ocp

from siamese_jax import config_keys, losses, models, train, workdir as workdir_lib
from siamese_jax.train import TrainState

# The best checkpoint is the one with the highest ROC AUC on validation pairs (held out of the
# training split), never a test-split figure.
BEST_METRIC = "val_roc_auc"


class CheckpointError(ValueError):
  """A checkpoint that cannot be read into the model at hand."""


class DamagedCheckpoint(CheckpointError):
  """A checkpoint whose files are truncated, empty or garbled (not the model's fault); ``what``
  says which and why, without the fix."""

  def __init__(self, what: str, step: int | None = None):
    super().__init__(f"{what}; {FIX_DAMAGED}")
    self.what, self.step = what, step


# The JSON files orbax writes into a checkpoint (relative to its folder), with those of every
# process's array metadata; the state's arrays themselves (OCDBT) are checked by reading them.
JSON_FILES = ("_CHECKPOINT_METADATA", "metrics/metrics", "progress/metadata", "state/_METADATA",
              "state/_sharding")
REQUIRED_FILES = ("progress/metadata", "state/_METADATA")
FIX_DAMAGED = ("pass --config.train.overwrite=True to train afresh, or train into another "
               "--workdir")


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:160] if text else type(error).__name__


def damage(step_dir: pathlib.Path) -> str | None:
  """Why checkpoint folder ``step_dir`` cannot be read ("an empty folder", "progress/metadata is
  not JSON (...)", ...), or None when its JSON files read (its arrays are not read here)."""
  if not any(step_dir.iterdir()):
    return "an empty folder"
  for name in REQUIRED_FILES:
    if not (step_dir / name).is_file():
      return f"{name} is missing"
  files = [step_dir / name for name in JSON_FILES]
  files += sorted((step_dir / "state" / "array_metadatas").glob("*"))
  for path in files:
    if path.is_file():
      try:
        json.loads(path.read_bytes().decode("utf-8"))
      except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{path.relative_to(step_dir)} is not JSON ({_first_line(error)})"
  return None


def damaged_steps(directory) -> dict[int, str]:
  """{step: why} of the checkpoint folders in ``directory`` that cannot be read (see damage)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return {}
  found = {}
  for path in directory.iterdir():
    if path.name.isdigit() and path.is_dir():
      reason = damage(path)
      if reason:
        found[int(path.name)] = reason
  return found


def _set_aside(step_dir: pathlib.Path, aside: pathlib.Path) -> pathlib.Path:
  aside.mkdir(parents=True, exist_ok=True)
  target, n = aside / step_dir.name, 1
  while target.exists():
    target, n = aside / f"{step_dir.name}.{n}", n + 1
  step_dir.rename(target)
  return target


def set_aside_damaged(directory, aside) -> list[str]:
  """Before a resumed run lists ``directory``'s checkpoints: removes its empty step folders and
  moves its damaged ones (see damage) into ``aside`` (kept for inspection, out of orbax's way, so
  the run resumes from the newest good one and saves those steps again); returns one line for
  each. CheckpointError (one line) when no checkpoint in it is good."""
  directory, aside = pathlib.Path(directory), pathlib.Path(aside)
  damaged = damaged_steps(directory)
  good = [p for p in directory.iterdir() if p.name.isdigit() and p.is_dir()
          and int(p.name) not in damaged] if directory.is_dir() else []
  real = {step: why for step, why in damaged.items() if why != "an empty folder"}
  if real and not good:
    listed = "; ".join(f"checkpoint {step}: {why}" for step, why in sorted(real.items()))
    raise DamagedCheckpoint(f"{directory}: no readable checkpoint ({listed})")
  lines = []
  for step, why in sorted(damaged.items(), reverse=True):
    step_dir = directory / str(step)
    if why == "an empty folder":
      step_dir.rmdir()
      lines.append(f"{step_dir} was an empty folder, not a checkpoint: removed and ignored")
    else:
      lines.append(f"checkpoint {step} in {directory} is damaged ({why}): moved to "
                   f"{_set_aside(step_dir, aside)}; resuming from the previous one")
  return lines


def restore_latest_good(manager: ocp.CheckpointManager, state: TrainState, aside,
                        say=print):
  """(state, progress) of the newest checkpoint in ``manager`` whose arrays read, after moving
  any newer one whose arrays do not into ``aside`` (with a ``say`` line each); None when
  ``manager`` holds none. CheckpointError when none is readable or they are of another model."""
  while (step := manager.latest_step()) is not None:
    try:
      return restore(manager, state, step)
    except DamagedCheckpoint as error:
      if len(manager.all_steps()) == 1:
        raise
      directory = pathlib.Path(str(manager.directory))
      moved = _set_aside(directory / str(step), pathlib.Path(aside))
      say(f"warning: {error.what}: moved to {moved}; resuming from the previous one")
      manager.reload()
  return None


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
            fix: str = "use the config it was trained with, or another --workdir", where=None):
  """(state, progress) of checkpoint ``step`` (default: the latest), into ``state``'s layout.

  A checkpoint of another model raises CheckpointError, a damaged one DamagedCheckpoint; ``fix``
  is what its message tells the user to do, ``where`` the folder it names (default: the
  manager's)."""
  epoch = manager.latest_step() if step is None else step
  where = where or manager.directory
  target = _savable(state)
  try:
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), progress=ocp.args.JsonRestore()))
  except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
    first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    if _is_damage(error):
      raise DamagedCheckpoint(f"checkpoint {epoch} in {where} is damaged "
                              f"({first_line})", epoch) from None
    raise CheckpointError(
        f"checkpoint {epoch} in {where} does not fit this model ({first_line}); "
        f"{fix}") from None
  saved = restored["state"]
  new_state = state.replace(params=saved["params"], opt_state=saved["opt_state"],
                            step=saved["step"])
  return new_state, restored["progress"]


def _is_damage(error: BaseException) -> bool:
  """Whether an orbax/tensorstore read failed on the files rather than on the model's layout."""
  return (isinstance(error, (UnicodeDecodeError, json.JSONDecodeError))
          or any(word in str(error) for word in ("DATA_LOSS", "Invalid JSON", "Error reading",
                                                  "Error decoding")))


# Native image sizes, for runs whose config.json and summary.json do not say which size trained.
NATIVE_IMAGE_SIZES = {"mnist": 28, "fashion_mnist": 28, "omniglot": 105}


def read_progress(manager: ocp.CheckpointManager, step: int) -> dict:
  """The progress JSON saved with checkpoint ``step`` (epoch, history, image_shape, ...)."""
  return manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))["progress"]


def epoch_steps(manager: ocp.CheckpointManager, skip=()) -> dict[int, int]:
  """{epoch: step} of the end-of-epoch checkpoints in ``manager`` (not a preempted run's), but
  those of the steps in ``skip`` (damaged ones)."""
  found = {}
  for step in manager.all_steps():
    if step in skip:
      continue
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


def _calibrated_best_epoch(workdir: pathlib.Path, epochs: dict[int, int]) -> int | None:
  """The epoch of calibration.json's ``best_step`` (the final one where the validation part was
  too small to choose: evaluators.calibration.file_contents) among ``epochs`` {epoch: step};
  None where that file or step is missing or unreadable (then ``best_epoch`` decides)."""
  try:
    step = json.loads((workdir / workdir_lib.CALIBRATION_FILE).read_text())["best_step"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return next((epoch for epoch, saved in epochs.items() if saved == step), None)


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


@contextlib.contextmanager
def _reading(directory: pathlib.Path):
  """Yields (a reader manager of ``directory``'s good checkpoints, {step: why} of its damaged
  ones): orbax reads every checkpoint's metrics when it opens a folder, so where some are damaged
  (see damage) it opens a temporary folder of links to the others, leaving the run's untouched."""
  damaged = damaged_steps(directory)
  with contextlib.ExitStack() as stack:
    view = directory
    if damaged:
      view = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="checkpoints-")))
      for path in directory.iterdir():
        if path.name.isdigit() and path.is_dir() and int(path.name) not in damaged:
          (view / path.name).symlink_to(path.resolve(), target_is_directory=True)
    manager = _reader(view)
    stack.callback(manager.close)
    yield manager, damaged


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
  if not workdir_lib.is_utf8(workdir.resolve()):  # tensorstore reads UTF-8 paths only
    raise CheckpointError(f"{str(workdir)!r}: its name is not UTF-8, which orbax cannot read; "
                          "rename the folder (or a link to it) in UTF-8")
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


def _abstract_state(config, summary: dict, progress: dict, where: pathlib.Path,
                    saved: dict[str, tuple] | None = None) -> TrainState:
  """The run's TrainState as shapes on one device (no init compiled or run), whatever the mesh
  it was saved from; sets config.data.image_size to the size the run trained on. ``saved``: the
  checkpoint's param shapes, whose objective's learned parameters (``params["loss"]``, e.g.
  margin's beta, proxies) join the model's with those shapes, float32, so that their optimiser
  state is restored too."""
  try:
    model = models.build_model(config.model)
    tx = train.optimizer_from_config(config, total_steps=1)  # model.freeze: a split state
  except (ValueError, AttributeError, KeyError) as error:
    raise CheckpointError(f"{where}: {str(error).splitlines()[0]}; {PASS_A_RUN}") from None
  image_shape = _image_shape(config, summary, progress)
  config.data.image_size = image_shape[0] if image_shape[0] == image_shape[1] else image_shape[:2]
  loss_prefix = losses.objective.LOSS_PARAMS + "/"
  loss_shapes = {name[len(loss_prefix):]: shape for name, shape in (saved or {}).items()
                 if name.startswith(loss_prefix)}

  def make(key):
    state = train.create_train_state(key, model, image_shape, tx)
    if not loss_shapes:
      return state
    params = {**state.params, losses.objective.LOSS_PARAMS: {
        name: jax.numpy.zeros(shape, jax.numpy.float32) for name, shape in loss_shapes.items()}}
    return TrainState.create(apply_fn=state.apply_fn, params=params, tx=tx, loss_state={})

  abstract = jax.eval_shape(make, jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)


def describe_checkpoint(workdir, step: int) -> dict:
  """{"epoch", "image_shape": (H, W, C)} of checkpoint ``step`` of the run in ``workdir`` (as
  ``load_trained`` reads them)."""
  workdir = pathlib.Path(workdir).expanduser()
  config, summary = _read_run_config(workdir)
  with _reading(workdir / "checkpoints") as (manager, _):
    progress = read_progress(manager, step)
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
  with _reading(checkpoint_dir) as (manager, damaged):
    for step, why in sorted(damaged.items(), reverse=True):
      _warn(f"checkpoint {step} in {checkpoint_dir} is damaged ({why}); using the newest good "
            "one")
    epochs = epoch_steps(manager, skip=damaged)
    if not epochs:
      if damaged:
        raise DamagedCheckpoint(f"{checkpoint_dir}: no readable checkpoint (checkpoint "
                                f"{max(damaged)}: {damaged[max(damaged)]})")
      raise no_checkpoints
    while True:
      try:
        return config, _restore_epoch(manager, config, summary, workdir, epochs, epoch)
      except DamagedCheckpoint as error:
        if epoch not in (None, "latest", "best") or len(epochs) == 1:
          raise
        _warn(f"{error.what}; using the newest good one")
        epochs = {e: s for e, s in epochs.items() if s != error.step}


def _warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stderr, flush=True)


def _restore_epoch(manager, config, summary: dict, workdir: pathlib.Path, epochs: dict[int, int],
                   epoch) -> TrainState:
  """The state of ``epoch`` (a number, "best", "latest" or None) among ``epochs`` {epoch: step}
  (see load_trained); fills config.model.num_classes and data.image_size."""
  checkpoint_dir = workdir / "checkpoints"
  if epoch == "best":
    epoch = _calibrated_best_epoch(workdir, epochs) or best_epoch(manager, epochs)
  epoch = max(epochs) if epoch in (None, "latest") else epoch
  if epoch not in epochs:
    raise CheckpointError(f"{checkpoint_dir}: no checkpoint of epoch {epoch}; pass one of "
                          f"{', '.join(map(str, sorted(epochs)))}, best or latest")
  step = epochs[epoch]
  try:
    saved = _saved_param_shapes(manager, step)
    progress = read_progress(manager, step)
  except (ValueError, KeyError, TypeError) as error:
    if _is_damage(error):
      raise DamagedCheckpoint(f"checkpoint {step} in {checkpoint_dir} is damaged "
                              f"({_first_line(error)})", step) from None
    raise
  if config.model.head in models.CLASSIFIER_HEADS and not config.model.num_classes:
    # runs saved before num_classes was filled in before config.json was written
    config.model.num_classes = saved.get("classifier/kernel", (None,))[-1]
  config_path = workdir / "config.json"
  fix = (f"{config_path} is not the config of these checkpoints; {PASS_A_RUN} (its "
         "config.json and checkpoints/ together)")
  state = _abstract_state(config, summary, progress, config_path, saved)
  # Checked on metadata first: a failed orbax restore leaves never-awaited reads behind.
  check_same_params(saved, _param_shapes(state.params), f"checkpoint {step} in "
                    f"{checkpoint_dir}", fix)
  return restore(manager, state, step, fix=fix, where=checkpoint_dir)[0]
