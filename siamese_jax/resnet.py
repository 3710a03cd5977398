"""ResNet encoders for colour images (He et al. 2016), with GroupNorm in place of BatchNorm.

GroupNorm (Wu & He 2018) normalises each example on its own, so the encoder keeps no batch
statistics: it stays a pure function of ``(params, x)`` (see ``siamese_jax.models``), behaves the
same in training and evaluation, and does not degrade with the few examples a device sees when a
batch is split over many. The last GroupNorm of every block starts with a zero scale (Goyal et al.
2017), so each block starts as the identity.

Two stems: "imagenet" (7x7 stride-2 conv and 3x3 stride-2 max pool: /4, for 64 px and up, as
the flax ImageNet example's ResNet) and "small" (one 3x3 conv, no pooling: for 32-64 px images,
as He et al.'s CIFAR networks). Stage ``i`` has ``filters * 2**i`` channels and, after the first,
halves the resolution. A global average pool and a Dense give the embedding.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from siamese_jax import conv, pooling

STEMS = ("imagenet", "small")


class ResidualBlock(nn.Module):
  """Conv 3x3 (stride) -> GroupNorm -> relu -> Conv 3x3 -> GroupNorm, plus the shortcut, relu.

  The shortcut is a strided 1x1 conv and GroupNorm where the shape changes. ``filters`` must be
  divisible by ``norm_groups``.
  x: [B, H, W, C] -> [B, ceil(H / strides), ceil(W / strides), filters].
  """
  filters: int
  strides: int = 1
  norm_groups: int = 8
  conv_impl: str = "xla"  # siamese_jax.conv.CONV_IMPLS

  @nn.compact
  def __call__(self, x):
    impl = conv.conv_function(self.conv_impl)
    y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False, conv_general_dilated=impl)(x)
    y = nn.relu(nn.GroupNorm(num_groups=self.norm_groups)(y))
    y = nn.Conv(self.filters, (3, 3), use_bias=False, conv_general_dilated=impl)(y)
    y = nn.GroupNorm(num_groups=self.norm_groups, scale_init=nn.initializers.zeros)(y)
    if x.shape != y.shape:
      x = nn.Conv(self.filters, (1, 1), self.strides, use_bias=False, name="shortcut_conv",
                  conv_general_dilated=impl)(x)
      x = nn.GroupNorm(num_groups=self.norm_groups, name="shortcut_norm")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Stem, ``len(stage_sizes)`` stages of ResidualBlocks, global average pool, Dense.

  x: [B, H, W, C] float (any H, W >= 1, any C) -> [B, embedding_dim]. See the module docstring
  for the stems and widths.
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  filters: int = 64
  embedding_dim: int = 128
  norm_groups: int = 8
  stem: str = "imagenet"
  conv_impl: str = "xla"  # siamese_jax.conv.CONV_IMPLS

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if self.stem not in STEMS:
      raise ValueError(f"ResNet: unknown stem {self.stem!r}; choose one of {', '.join(STEMS)}.")
    if self.filters % self.norm_groups:
      raise ValueError(f"ResNet: filters={self.filters} is not divisible by norm_groups="
                       f"{self.norm_groups}; set model.norm_groups to a divisor of model.filters.")
    impl = conv.conv_function(self.conv_impl)
    if self.stem == "imagenet":
      x = nn.Conv(self.filters, (7, 7), 2, use_bias=False, name="stem_conv",
                  conv_general_dilated=impl)(x)
      x = nn.relu(nn.GroupNorm(num_groups=self.norm_groups, name="stem_norm")(x))
      x = pooling.max_pool(x, 3, 2, "SAME")
    else:
      x = nn.Conv(self.filters, (3, 3), use_bias=False, name="stem_conv",
                  conv_general_dilated=impl)(x)
      x = nn.relu(nn.GroupNorm(num_groups=self.norm_groups, name="stem_norm")(x))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(self.filters * 2 ** stage, strides, self.norm_groups, self.conv_impl)(x)
    return nn.Dense(self.embedding_dim)(jnp.mean(x, axis=(1, 2)))


def resnet18(**kwargs) -> ResNet:
  """ResNet-18's layout (2, 2, 2, 2) with the ImageNet stem; ``kwargs``: ResNet's other fields."""
  return ResNet(stage_sizes=(2, 2, 2, 2), stem="imagenet", **kwargs)


def resnet34(**kwargs) -> ResNet:
  """ResNet-34's layout (3, 4, 6, 3) with the ImageNet stem."""
  return ResNet(stage_sizes=(3, 4, 6, 3), stem="imagenet", **kwargs)
