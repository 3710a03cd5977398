"""ConvNeXt (Liu et al. 2022) in timm's layout, for its ImageNet weights (``keymaps.CONVNEXT``).

Submodules carry timm's names with "." as "_" (``stem_0``, ``stages_1_downsample_1``,
``stages_2_blocks_4/conv_dw``, ``head_norm``). The features are timm's pre-logits: the global
average pool through ``head.norm`` (a LayerNorm).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from siamese_jax.pretrained.resnet import POOLINGS


class Block(nn.Module):
  """x + gamma * fc2(gelu(fc1(LayerNorm(depthwise conv7x7(x))))). x: [B, H, W, C] -> same."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    y = nn.Conv(c, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=c, dtype=self.dtype,
                name="conv_dw")(x)
    y = nn.LayerNorm(1e-6, dtype=self.dtype, use_fast_variance=False, name="norm")(y)
    y = Mlp(4 * c, self.dtype, name="mlp")(y)
    gamma = self.param("gamma", nn.initializers.constant(1e-6), (c,))
    return x + y * gamma.astype(self.dtype)


class Mlp(nn.Module):
  """fc1, exact GELU, fc2. x: [..., C] -> [..., C]."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x), approximate=False)
    return nn.Dense(c, dtype=self.dtype, name="fc2")(x)


class ConvNeXt(nn.Module):
  """timm's ConvNeXt without its classifier: stem (conv 4x4/4, LayerNorm), stages of Blocks (each
  after the first starts with LayerNorm and conv 2x2/2), pooled ("avg", or "gem" as
  ``resnet.ResNet``'s), then ``head_norm``. x: [B, H, W, 3] -> [B, dims[-1]] ("none": the map).
  """
  depths: Sequence[int] = (3, 3, 9, 3)
  dims: Sequence[int] = (96, 192, 384, 768)
  pooling: str = "avg"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if self.pooling not in POOLINGS:
      raise ValueError(f"ConvNeXt: pooling={self.pooling!r}; choose one of {', '.join(POOLINGS)}")
    ln = lambda name: nn.LayerNorm(1e-6, dtype=self.dtype, use_fast_variance=False, name=name)
    x = nn.Conv(self.dims[0], (4, 4), 4, padding="VALID", dtype=self.dtype,
                name="stem_0")(x.astype(self.dtype))
    x = ln("stem_1")(x)
    for s, (depth, dim) in enumerate(zip(self.depths, self.dims)):
      if s > 0:
        x = ln(f"stages_{s}_downsample_0")(x)
        x = nn.Conv(dim, (2, 2), 2, padding="VALID", dtype=self.dtype,
                    name=f"stages_{s}_downsample_1")(x)
      for b in range(depth):
        x = Block(self.dtype, name=f"stages_{s}_blocks_{b}")(x)
    if self.pooling == "none":
      return x
    x = x.astype(jnp.float32)
    if self.pooling == "avg":
      x = jnp.mean(x, axis=(1, 2))
    else:
      p = self.param("gem_p", nn.initializers.constant(3.0), ())
      x = jnp.mean(jnp.maximum(x, 1e-6) ** p, axis=(1, 2)) ** (1.0 / p)
    return nn.LayerNorm(1e-6, use_fast_variance=False, name="head_norm")(x)


def stage_of(name: str, names=()) -> int:
  """0 for the stem, s + 1 for ``stages_{s}_*`` (its downsample included), 5 for head_norm."""
  del names
  if name.startswith("stages_"):
    return int(name.split("_")[1]) + 1
  return 0 if name.startswith("stem_") else 5
