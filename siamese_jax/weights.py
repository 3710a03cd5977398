"""Initial weights from a file (``model.pretrained``): one run's encoder as another run's start.

A params file of siamese_jax is an ``.npz`` of a model's params flattened to keys such as
``encoder/Dense_0/kernel`` (``save_params``), or a run's ``--workdir`` (its latest end-of-epoch
checkpoint, read by ``siamese_jax.checkpoints``). ``initializer(model_config)`` is the hook that
``train.create_train_state`` calls on the freshly initialised params: each tower built from
``model.encoder`` gets the file's encoder through its ``models.Component.load_weights`` (None:
``load_encoder`` here), by path, so any missing, extra or mis-shaped parameter is a one-line
error; the pair head or classifier keeps its random initialisation. Input statistics
(``model.input_normalization``) are not read from the file: the run sets them from its data.
"""

import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax import checkpoints, models

SEPARATOR = "/"
PASS_PARAMS = ("pass an .npz of siamese_jax.weights.save_params or a run's --workdir, or "
               "model.pretrained=None")


def flatten(params) -> dict[str, np.ndarray]:
  """{"encoder/Dense_0/kernel": array} of a params tree (nested dicts of arrays)."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {SEPARATOR.join(str(key.key) for key in path): np.asarray(leaf) for path, leaf in leaves}


def unflatten(flat: dict) -> dict:
  """flatten's inverse: nested dicts from "a/b/c" keys."""
  tree = {}
  for name, leaf in flat.items():
    *sections, last = name.split(SEPARATOR)
    node = tree
    for section in sections:
      node = node.setdefault(section, {})
    node[last] = leaf
  return tree


def save_params(path, params) -> None:
  """Writes ``params`` (a whole model's, e.g. ``state.params``) to ``path`` as flatten's .npz."""
  with open(pathlib.Path(path).expanduser(), "wb") as file:  # np.savez would append ".npz"
    np.savez(file, **flatten(params))


def _error(path, reason: str) -> checkpoints.CheckpointError:
  return checkpoints.CheckpointError(f"model.pretrained={str(path)!r}: {reason}")


def read_params(path) -> dict[str, np.ndarray]:
  """A whole model's params, flattened, from an .npz of ``save_params`` or a run's workdir (or
  its checkpoints/ folder). A CheckpointError naming model.pretrained and ``path`` otherwise."""
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    workdir = path.parent if path.name == "checkpoints" and not (path / "config.json").exists() \
        else path
    try:
      return flatten(checkpoints.load_trained(workdir)[1].params)
    except checkpoints.CheckpointError as error:
      raise _error(path, str(error)) from None
  try:
    with np.load(path, allow_pickle=False) as saved:
      return {name: saved[name] for name in saved.files}
  except (OSError, ValueError) as error:
    reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
    raise _error(path, f"cannot read it as an .npz ({reason}); {PASS_PARAMS}") from None


def load_encoder(path, encoder_params) -> dict:
  """``encoder_params`` (an encoder's own, see ``models.encoder_path``) replaced by the encoder
  of the params in ``path`` (see ``read_params``), each leaf cast to the model's dtype. Every
  parameter must be there with the model's shape, and no other: else a one-line CheckpointError
  naming the first that differs."""
  saved = read_params(path)
  encoder = {name: leaf for name, leaf in saved.items() if name.startswith("encoder" + SEPARATOR)}
  if not encoder:
    raise _error(path, f"it has no encoder params (no key starts with 'encoder/'); {PASS_PARAMS}")
  inner = SEPARATOR.join(("encoder",) + models.encoder_path(unflatten(encoder)["encoder"]))
  encoder = {name[len(inner) + 1:]: leaf for name, leaf in encoder.items()
             if name.startswith(inner + SEPARATOR)}
  model = flatten(encoder_params)
  shapes = lambda flat: {name: tuple(leaf.shape) for name, leaf in flat.items()}
  checkpoints.check_same_params(shapes(encoder), shapes(model), f"model.pretrained={str(path)!r}",
                                "pass the params of a run with this model.encoder and the "
                                "same model.* sizes, or model.pretrained=None")
  return unflatten({name: jnp.asarray(encoder[name], model[name].dtype) for name in model})


def _replace(tree: dict, path: tuple[str, ...], change: Callable) -> dict:
  """``tree`` with its subtree at ``path`` replaced by ``change(subtree)`` (copies along it)."""
  if not path:
    return change(tree)
  return {**tree, path[0]: _replace(tree[path[0]], path[1:], change)}


def initializer(model_config) -> Callable | None:
  """``load(params) -> params`` for ``train.create_train_state``: model.pretrained's encoder in
  every tower built from model.encoder (both towers of separate weights without model.encoder_b
  or model.input_size_b). None where model.pretrained is None."""
  path = model_config.pretrained
  if path is None:
    return None
  load = models.ENCODERS[model_config.encoder].load_weights or load_encoder
  towers = ["encoder"]
  if not (model_config.shared_weights or model_config.encoder_b or model_config.input_size_b):
    towers.append("encoder_b")

  def load_pretrained(params):
    for tower in towers:
      if tower in params:
        inner = (tower,) + models.encoder_path(params[tower])
        params = _replace(params, inner, lambda encoder: load(path, encoder))
    return params

  return load_pretrained
