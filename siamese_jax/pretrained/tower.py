"""A pretrained backbone as the Siamese tower: ``models.ENCODERS``'s resnet50, vit_*, dinov2 ...

``PretrainedEncoder`` takes the library's images ([B, H, W, C] in [0, 1], C = 1 or 3), repeats a
grey channel three times, normalises with the checkpoint's statistics (the architecture's
``normalisation``: ImageNet's mean and std, 0.5 and 0.5 for timm's augreg ViTs; constants of the
module, so predict, index and export apply them with nothing to carry), runs the
backbone (``pretrained.ARCHITECTURES``) in ``model.dtype`` and maps its features to
``model.embedding_dim`` with a Dense layer ``embedding`` (the tower's head: trained at the full
rate, never frozen). Its params are ``{"backbone": the backbone's, "embedding": ...}``;
``load_weights`` fills "backbone" from a checkpoint through ``pretrained.keymaps``.
"""

import ast
import pathlib
import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax import pretrained

IMAGENET_MEAN, IMAGENET_STD = pretrained.IMAGENET
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class PretrainedEncoder(nn.Module):
  """x [B, H, W, 1 or 3] in [0, 1] -> [B, embedding_dim] (or the backbone's features [B, F]
  where ``embedding_dim`` is None). See the module docstring."""
  backbone: nn.Module
  embedding_dim: int | None = 512
  mean: tuple = IMAGENET_MEAN
  std: tuple = IMAGENET_STD

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
    features = self.backbone(x, train=train).astype(jnp.float32)
    if self.embedding_dim is None:
      return features
    return nn.Dense(self.embedding_dim, name="embedding")(features)


def backbone_args(text: str | None) -> dict:
  """``model.backbone_args`` ("stage_sizes=(1, 1, 1, 1), widths=(8, 16, 32, 64)") as a dict of
  literals; None or "" -> {}. A ValueError naming the key for anything else."""
  if not text:
    return {}
  try:
    call = ast.parse(f"f({text})", mode="eval").body
    if call.args:
      raise ValueError
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords}
  except (SyntaxError, ValueError):
    raise ValueError(f"model.backbone_args={text!r}: write keyword=literal pairs, e.g. "
                     "'stage_sizes=(1, 1, 1, 1), widths=(8, 16, 32, 64)'") from None


def build(arch: str, model_config) -> PretrainedEncoder:
  """The tower of ``arch`` for ``model_config`` (reads embedding_dim, pooling, dtype,
  backbone_args, pos_interpolation)."""
  if model_config.dtype not in DTYPES:
    raise ValueError(f"model.dtype={model_config.dtype!r}; choose one of {', '.join(DTYPES)}")
  spec = pretrained.ARCHITECTURES[arch]
  fields = {"dtype": DTYPES[model_config.dtype], **backbone_args(model_config.backbone_args)}
  if spec.convolutional:
    fields["pooling"] = model_config.pooling
  else:
    fields["pos_interpolation"] = model_config.pos_interpolation
  try:
    backbone = pretrained.build(arch, **fields)
  except TypeError as error:
    raise ValueError(f"model.backbone_args={model_config.backbone_args!r}: {error}") from None
  mean, std = spec.normalisation
  return PretrainedEncoder(backbone, model_config.embedding_dim, mean, std)


def head_layers(encoder_params) -> tuple[str, ...]:
  """The tower's head: its ``embedding`` Dense (none where model.embedding_dim is None)."""
  return ("embedding",) if "embedding" in encoder_params else ()


def load_weights(arch: str):
  """``models.Component.load_weights`` of ``arch``: a PyTorch checkpoint (.safetensors, .pth,
  .bin) fills the tower's "backbone" through the key maps (the embedding layer stays random); any
  other path is siamese_jax's own (an .npz or a run's workdir: ``weights.load_encoder``)."""

  def load(path, encoder_params):
    if pathlib.Path(str(path)).suffix not in CHECKPOINT_SUFFIXES:
      from siamese_jax import weights  # weights imports models, which imports this module
      return weights.load_encoder(path, encoder_params)
    shapes = {"/".join(k.key for k in p): tuple(leaf.shape) for p, leaf in
              jax.tree_util.tree_flatten_with_path(encoder_params["backbone"])[0]}
    try:
      flat = pretrained.keymaps.convert(pretrained.read_state_dict(path), shapes, arch)
    except pretrained.WeightsError as error:
      from siamese_jax import checkpoints  # main reports its errors in one line
      raise checkpoints.CheckpointError(f"model.pretrained={str(path)!r}: {error}") from None
    backbone = jax.tree_util.tree_map_with_path(
        lambda p, leaf: jnp.asarray(flat["/".join(k.key for k in p)], leaf.dtype),
        encoder_params["backbone"])
    return {**encoder_params, "backbone": backbone}

  return load


def stage_of(arch: str):
  """``(encoder param path) -> stage`` for model.freeze='stageN' (see ARCHITECTURES' stage_of);
  the embedding layer is after every stage."""
  spec = pretrained.ARCHITECTURES[arch]

  def stage(path: tuple[str, ...], names) -> int:
    return spec.stage_of(path[1], names) if path[0] == "backbone" and len(path) > 1 else 10 ** 6

  return stage

