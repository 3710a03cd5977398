"""Pretrained backbones from PyTorch checkpoints: ``load(arch, path) -> (module, variables)``.

``module.apply(variables, x)`` for x [B, H, W, 3] float32, normalised as the checkpoint expects
(``Architecture.normalisation``: ImageNet's mean and std, or 0.5 and 0.5 for timm's augreg ViTs),
gives timm's pre-logits features,
``model.forward_head(model.forward_features(x), pre_logits=True)``, of the same weights.

``ARCHITECTURES`` is the table: each name with its module and fields (timm's configuration of that
name). The weights come from ``.safetensors`` (read with ``safetensors.numpy``: no torch needed) or,
where torch is installed, a ``.pth`` / ``.bin`` state dict, in timm's, torchvision's (ResNets) or
Hugging Face's (DINOv2) names, mapped by ``keymaps``. ``siamese_jax.pretrained.tower`` makes such
a backbone a Siamese tower (``models.ENCODERS``).
"""

import pathlib
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax.pretrained import convnext, keymaps, resnet, vit
from siamese_jax.pretrained.keymaps import WeightsError

__all__ = ["ARCHITECTURES", "Architecture", "WeightsError", "build", "load", "read_state_dict",
           "variables_from_state"]


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's augreg ViT weights (its pretrained_cfg)


class Architecture(NamedTuple):
  """A backbone: its module class and fields, the ``stage_of(top-level param name, names)`` that
  ``model.freeze='stageN'`` reads, whether it is convolutional (pooling applies), and the input
  normalisation (mean, std per RGB channel of [0, 1] images) of its usual weights (timm's
  ``pretrained_cfg``)."""
  module: Callable
  fields: dict
  stage_of: Callable
  convolutional: bool
  normalisation: tuple = IMAGENET


def _resnet(stage_sizes, block):
  return Architecture(resnet.ResNet, {"stage_sizes": stage_sizes, "block": block},
                      resnet.stage_of, True)


def _vit(patch, dim, heads, grid, layer_scale, normalisation):
  return Architecture(vit.VisionTransformer,
                      {"patch_size": patch, "embed_dim": dim, "depth": 12, "num_heads": heads,
                       "pos_grid": (grid, grid), "layer_scale": layer_scale},
                      vit.stage_of, False, normalisation)


ARCHITECTURES: dict[str, Architecture] = {
    "resnet18": _resnet((2, 2, 2, 2), "basic"),
    "resnet34": _resnet((3, 4, 6, 3), "basic"),
    "resnet50": _resnet((3, 4, 6, 3), "bottleneck"),
    # timm's default weights of these (augreg_in21k_ft_in1k) take (x - 0.5) / 0.5.
    "vit_small_patch16_224": _vit(16, 384, 6, 14, False, HALF),
    "vit_base_patch16_224": _vit(16, 768, 12, 14, False, HALF),
    # DINOv2 was trained at 518 px: a 37 x 37 grid of 14 px patches; ImageNet's statistics.
    "vit_small_patch14_dinov2": _vit(14, 384, 6, 37, True, IMAGENET),
    "vit_base_patch14_dinov2": _vit(14, 768, 12, 37, True, IMAGENET),
    "convnext_tiny": Architecture(convnext.ConvNeXt, {"depths": (3, 3, 9, 3),
                                                      "dims": (96, 192, 384, 768)},
                                  convnext.stage_of, True),
}


def _architecture(arch: str) -> Architecture:
  if arch not in ARCHITECTURES:
    raise WeightsError(f"unknown pretrained architecture {arch!r}; choose one of "
                       f"{', '.join(ARCHITECTURES)}")
  return ARCHITECTURES[arch]


def build(arch: str, **fields) -> nn.Module:
  """The module of ``arch`` with ``fields`` changed (e.g. ``dtype``, ``pooling``, or smaller
  sizes: ``widths=(8, 16, 32, 64)``)."""
  spec = _architecture(arch)
  return spec.module(**{**spec.fields, **fields})


def read_state_dict(path) -> dict[str, np.ndarray]:
  """{key: numpy array} of a ``.safetensors`` file (``safetensors.numpy``), or of a PyTorch
  ``.pth`` / ``.pt`` / ``.bin`` state dict where torch is installed (a checkpoint dict holding it
  under "state_dict" or "model" too). A WeightsError naming the file otherwise."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise WeightsError(f"pretrained weights {str(path)!r}: no such file")
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file
    try:
      return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError
      raise WeightsError(f"pretrained weights {str(path)!r}: not a readable safetensors file "
                         f"({str(error).splitlines()[0]})") from None
  if path.suffix not in (".pth", ".pt", ".bin"):
    raise WeightsError(f"pretrained weights {str(path)!r}: expected .safetensors, or a PyTorch "
                       ".pth/.pt/.bin state dict")
  try:
    import torch
  except ImportError:
    raise WeightsError(f"pretrained weights {str(path)!r}: reading a PyTorch file needs torch; "
                       "install it or convert the file to .safetensors") from None
  state = torch.load(str(path), map_location="cpu", weights_only=True)
  for wrapper in ("state_dict", "model"):
    if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
      state = state[wrapper]
  return {key: value.float().numpy() if value.is_floating_point() else value.numpy()
          for key, value in state.items() if hasattr(value, "numpy")}


def param_shapes(module: nn.Module, image_size: int = 64) -> dict[str, tuple]:
  """{"/"-joined path: shape} of the module's params (abstract: nothing is computed)."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  params = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(x.shape)))["params"]
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in leaves}


def variables_from_state(module: nn.Module, state: dict, arch: str) -> dict:
  """``{"params": ...}`` for ``module`` from a PyTorch ``state`` dict (numpy arrays) through the
  key maps; float32. A one-line WeightsError for any missing, extra or mis-shaped key."""
  shapes = param_shapes(module)
  flat = keymaps.convert(state, shapes, arch)
  params = {}
  for path, value in flat.items():
    node = params
    *sections, last = path.split("/")
    for section in sections:
      node = node.setdefault(section, {})
    node[last] = jnp.asarray(value, jnp.float32)
  return {"params": params}


def load(arch: str, weights_path, **fields) -> tuple[nn.Module, dict]:
  """``(module, variables)`` of ``arch`` (see ARCHITECTURES; ``fields`` as ``build``'s) with the
  weights of ``weights_path``. Weights in Hugging Face's DINOv2 layout resample their position
  embeddings as Hugging Face does (``vit.INTERPOLATIONS``)."""
  state = keymaps.strip_prefixes(read_state_dict(weights_path))
  layout = keymaps.detect(state, arch)
  if layout in (keymaps.DINOV2_HF, keymaps.DINOV2_HF5) and "pos_interpolation" not in fields:
    fields = {**fields, "pos_interpolation": "hf"}
  module = build(arch, **fields)
  try:
    return module, variables_from_state(module, state, arch)
  except WeightsError as error:
    raise WeightsError(f"{weights_path}: {error}") from None
