"""ResNets with BatchNorm in timm's / torchvision's layout, for their ImageNet weights.

Not ``siamese_jax.resnet`` (GroupNorm, trained from scratch): these match the PyTorch networks
layer for layer, so a checkpoint's weights load by name (``keymaps.RESNET``) and give the same
features. Submodules carry the PyTorch names (``conv1``, ``bn1``, ``layer1_0/conv2``,
``layer1_0/downsample_conv``) so a reader finds each one in the checkpoint.

BatchNorm is frozen (``FrozenBatchNorm``): it always normalises with its running statistics, in
training too (as the Reality Check fine-tuned), so the encoder stays a pure function of
``(params, x)``; the statistics live in ``params`` (``mean``, ``var``) with their gradient stopped,
and ``models.param_labels`` labels them "frozen".
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax import pooling

STATISTICS = ("mean", "var")  # the FrozenBatchNorm params that are never trained
POOLINGS = ("avg", "gem", "none")


class FrozenBatchNorm(nn.Module):
  """``(x - mean) / sqrt(var + eps) * scale + bias`` per channel with fixed statistics.
  x: [..., C] -> [..., C]. params: scale, bias (trainable), mean, var (no gradient)."""
  eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = jax.lax.stop_gradient(self.param("mean", nn.initializers.zeros, (c,)))
    var = jax.lax.stop_gradient(self.param("var", nn.initializers.ones, (c,)))
    mul = scale * jax.lax.rsqrt(var + self.eps)
    return (x * mul.astype(self.dtype) + (bias - mean * mul).astype(self.dtype)).astype(self.dtype)


def _conv(features, kernel, stride, name, dtype):
  """PyTorch's Conv2d(bias=False, padding=kernel // 2): explicit symmetric padding (not SAME,
  which pads stride-2 convs of even inputs on one side only)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), stride, padding=((pad, pad), (pad, pad)),
                 use_bias=False, name=name, dtype=dtype)


class BasicBlock(nn.Module):
  """ResNet-18/34 block: conv3x3(stride) bn relu conv3x3 bn + shortcut, relu.
  x: [B, H, W, C] -> [B, H / stride, W / stride, planes]."""
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x):
    y = nn.relu(FrozenBatchNorm(dtype=self.dtype, name="bn1")(
        _conv(self.planes, 3, self.stride, "conv1", self.dtype)(x)))
    y = _conv(self.planes, 3, 1, "conv2", self.dtype)(y)
    y = FrozenBatchNorm(dtype=self.dtype, name="bn2")(y)
    return nn.relu(y + _shortcut(self, x, self.planes))


class Bottleneck(nn.Module):
  """ResNet-50 block (v1.5, stride on the 3x3 conv as timm and torchvision): conv1x1 bn relu
  conv3x3(stride) bn relu conv1x1 bn + shortcut, relu. x: [B, H, W, C] -> [B, H / stride,
  W / stride, 4 planes]."""
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x):
    bn = lambda name: FrozenBatchNorm(dtype=self.dtype, name=name)
    y = nn.relu(bn("bn1")(_conv(self.planes, 1, 1, "conv1", self.dtype)(x)))
    y = nn.relu(bn("bn2")(_conv(self.planes, 3, self.stride, "conv2", self.dtype)(y)))
    y = bn("bn3")(_conv(self.planes * 4, 1, 1, "conv3", self.dtype)(y))
    return nn.relu(y + _shortcut(self, x, self.planes * 4))


def _shortcut(block: nn.Module, x, features: int):
  """The identity, or PyTorch's ``downsample`` (conv1x1(stride) + bn) where the shape changes."""
  if x.shape[-1] == features and block.stride == 1:
    return x
  x = _conv(features, 1, block.stride, "downsample_conv", block.dtype)(x)
  return FrozenBatchNorm(dtype=block.dtype, name="downsample_bn")(x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """timm's / torchvision's ResNet without its classifier: conv7x7/2, bn, relu, maxpool3x3/2,
  stages ``layer1..layerN`` (the first block of every stage after the first has stride 2), then
  ``pooling``: "avg" (timm's pre-logits features), "gem" (generalised mean, a learned exponent
  ``gem_p`` starting at 3; Radenović et al. 2018) or "none" (the feature map).

  x: [B, H, W, 3] float32, normalised as the checkpoint expects -> [B, widths[-1] * expansion]
  (pooled) or [B, H / 32, W / 32, widths[-1] * expansion]. ``stage_output(n)`` stops after stage n.
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  widths: Sequence[int] = (64, 128, 256, 512)
  stem_width: int = 64
  pooling: str = "avg"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # frozen BatchNorm: the same function in training
    if self.pooling not in POOLINGS:
      raise ValueError(f"ResNet: pooling={self.pooling!r}; choose one of {', '.join(POOLINGS)}")
    block = BLOCKS[self.block]
    x = x.astype(self.dtype)
    x = _conv(self.stem_width, 7, 2, "conv1", self.dtype)(x)
    x = nn.relu(FrozenBatchNorm(dtype=self.dtype, name="bn1")(x))
    x = pooling.max_pool(x, 3, 2, ((1, 1), (1, 1)))
    for stage, (blocks, planes) in enumerate(zip(self.stage_sizes, self.widths)):
      for i in range(blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        x = block(planes, stride, self.dtype, name=f"layer{stage + 1}_{i}")(x)
    if self.pooling == "none":
      return x
    x = x.astype(jnp.float32)
    if self.pooling == "avg":
      return jnp.mean(x, axis=(1, 2))
    p = self.param("gem_p", nn.initializers.constant(3.0), ())
    return jnp.mean(jnp.maximum(x, 1e-6) ** p, axis=(1, 2)) ** (1.0 / p)


def stage_of(name: str, names=()) -> int:
  """The stage of a top-level ResNet param name for ``model.freeze='stageN'``: 0 for the stem
  (conv1, bn1), n for ``layer{n}_*``, after all (5) for the rest (gem_p). ``names``: unused (the
  same call as ``vit.stage_of``)."""
  del names
  if name.startswith("layer"):
    return int(name[len("layer"):].split("_")[0])
  return 0 if name in ("conv1", "bn1") else 5
