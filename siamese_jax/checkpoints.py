"""Checkpoints through orbax: the last N and the best, written atomically, read without pickle.

orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed mid-write leaves the previous checkpoints intact; arrays are stored as tensorstore/OCDBT
and metadata as JSON, never pickled.
"""

import os

import orbax.checkpoint as ocp

from siamese_jax.train import TrainState

BEST_METRIC = "test_accuracy"


class CheckpointError(ValueError):
  """A checkpoint that cannot be read into the model at hand."""


def make_manager(directory: str, keep_last: int = 3) -> ocp.CheckpointManager:
  """A manager in ``directory`` that keeps the ``keep_last`` latest steps and the best one
  (highest ``test_accuracy`` among those saved with metrics)."""
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=keep_last),
      ocp.checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], n=1,
                                    keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _savable(state: TrainState) -> dict:
  return {"params": state.params, "opt_state": state.opt_state, "step": state.step}


def save(manager: ocp.CheckpointManager, state: TrainState, epoch: int, metrics: dict,
         progress: dict) -> None:
  """Saves ``state`` as checkpoint ``epoch``; ``metrics`` rank it, ``progress`` (JSON) is
  what the run needs to continue (epoch, history, elapsed time)."""
  args = ocp.args.Composite(state=ocp.args.StandardSave(_savable(state)),
                            progress=ocp.args.JsonSave(progress))
  manager.save(epoch, args=args, metrics=metrics, force=True)
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, state: TrainState, epoch: int | None = None):
  """(state, progress) of checkpoint ``epoch`` (default: the latest), into ``state``'s layout."""
  epoch = manager.latest_step() if epoch is None else epoch
  target = _savable(state)
  try:
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), progress=ocp.args.JsonRestore()))
  except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
    first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    raise CheckpointError(
        f"checkpoint {epoch} in {manager.directory} does not fit this model ({first_line}); "
        "use the config it was trained with, or another --workdir") from None
  saved = restored["state"]
  new_state = state.replace(params=saved["params"], opt_state=saved["opt_state"],
                            step=saved["step"])
  return new_state, restored["progress"]
