"""Vision Transformers in timm's layout: ViT (Dosovitskiy et al. 2021) and DINOv2 (Oquab et al.
2023, layer scale), for their pretrained weights.

Submodules carry timm's names (``patch_embed/proj``, ``blocks_3/attn/qkv``, ``blocks_3/ls1``,
``norm``) so ``keymaps.VIT`` reads timm's checkpoints by name; ``keymaps.DINOV2_HF`` reads Hugging
Face's ``facebook/dinov2-*`` into the same tree. The features are timm's pre-logits: the class
token after the final LayerNorm.

Any input size: the position embeddings of the checkpoint's grid are resampled to the input's
patch grid, as timm does with ``dynamic_img_size=True`` (``resample_abs_pos_embed``: bicubic with
antialiasing, PyTorch's ``F.interpolate(..., antialias=True)``, Keys' a = -0.5) or, for weights
in Hugging Face's layout, as its ``Dinov2Embeddings.interpolate_pos_encoding`` (bicubic without
antialiasing, a = -0.75): ``pos_interpolation`` "timm" or "hf". The resampling is a pair of
fixed matrices (``resize_matrix``), exact to PyTorch's kernels.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

INTERPOLATIONS = ("timm", "hf")


def _cubic(x, a):
  """Keys' cubic convolution kernel at offsets x (numpy)."""
  x = np.abs(x)
  return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


@functools.lru_cache(maxsize=64)
def resize_matrix(size_in: int, size_out: int, antialias: bool) -> np.ndarray:
  """[size_out, size_in] float64: PyTorch's 1-d bicubic ``F.interpolate(size=size_out,
  align_corners=False)`` as a matrix; ``antialias`` as its ``antialias=True`` (the support widened
  by the scale when shrinking, a = -0.5, weights renormalised over the input), else its plain
  kernel (a = -0.75, four taps clamped at the border)."""
  scale = size_in / size_out
  m = np.zeros((size_out, size_in))
  for i in range(size_out):
    if antialias:
      support = 2.0 * max(scale, 1.0)
      invscale = 1.0 / scale if scale >= 1.0 else 1.0
      center = scale * (i + 0.5)
      lo = max(int(center - support + 0.5), 0)
      hi = min(int(center + support + 0.5), size_in)
      j = np.arange(lo, hi)
      w = _cubic((j - center + 0.5) * invscale, -0.5)
      m[i, lo:hi] = w / w.sum()
    else:
      src = (i + 0.5) * scale - 0.5
      base = int(np.floor(src))
      t = src - base
      for k, w in zip(range(-1, 3), _cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75)):
        m[i, min(max(base + k, 0), size_in - 1)] += w
  return m


def resample_grid(pos, grid_in: tuple[int, int], grid_out: tuple[int, int], antialias: bool):
  """pos [gh_in * gw_in, D] (row-major patch grid) -> [gh_out * gw_out, D]; unchanged where the
  grids are equal."""
  if tuple(grid_in) == tuple(grid_out):
    return pos
  rows = jnp.asarray(resize_matrix(grid_in[0], grid_out[0], antialias), jnp.float32)
  cols = jnp.asarray(resize_matrix(grid_in[1], grid_out[1], antialias), jnp.float32)
  grid = pos.astype(jnp.float32).reshape(grid_in[0], grid_in[1], -1)
  out = jnp.einsum("ph,hwd,qw->pqd", rows, grid, cols, precision="highest")
  return out.reshape(grid_out[0] * grid_out[1], -1)


class LayerScale(nn.Module):
  """x * gamma per channel (DINOv2's layer scale). x: [..., D] -> [..., D]."""
  init_value: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    gamma = self.param("gamma", nn.initializers.constant(self.init_value), (x.shape[-1],))
    return x * gamma.astype(self.dtype)


class Attention(nn.Module):
  """timm's Attention: fused ``qkv`` Dense [D, 3D], softmax(q k^T / sqrt(d_head)) v, ``proj``.
  x: [B, N, D] -> [B, N, D]."""
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, d = x.shape
    qkv = nn.Dense(3 * d, dtype=self.dtype, name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(b, n, 3, self.num_heads, d // self.num_heads), 3, axis=2)
    scale = (d // self.num_heads) ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q[:, :, 0] * scale, k[:, :, 0])
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v[:, :, 0]).reshape(b, n, d)
    return nn.Dense(d, dtype=self.dtype, name="proj")(out)


class Mlp(nn.Module):
  """fc1, exact GELU, fc2. x: [..., D] -> [..., D]."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    x = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x), approximate=False)
    return nn.Dense(d, dtype=self.dtype, name="fc2")(x)


class Block(nn.Module):
  """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))) with
  mlp = fc1, exact GELU, fc2. x: [B, N, D] -> [B, N, D]."""
  num_heads: int
  mlp_ratio: float = 4.0
  layer_scale: bool = False
  eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    norm = lambda name: nn.LayerNorm(self.eps, dtype=self.dtype, use_fast_variance=False, name=name)
    scale = ((lambda name: LayerScale(dtype=self.dtype, name=name)) if self.layer_scale
             else (lambda name: lambda y: y))
    x = x + scale("ls1")(Attention(self.num_heads, self.dtype, name="attn")(norm("norm1")(x)))
    mlp = Mlp(int(d * self.mlp_ratio), self.dtype, name="mlp")
    return x + scale("ls2")(mlp(norm("norm2")(x)))


class VisionTransformer(nn.Module):
  """timm's VisionTransformer without its classifier: patch embedding (a conv of stride
  ``patch_size``), class token, position embeddings (of a ``pos_grid`` patch grid, resampled to
  the input's), ``depth`` Blocks, LayerNorm; the class token's features.

  x: [B, H, W, 3] float32 normalised as the checkpoint expects (H, W: multiples of patch_size;
  a remainder is cropped, as PyTorch's conv) -> [B, embed_dim].
  """
  patch_size: int = 16
  embed_dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  pos_grid: tuple[int, int] = (14, 14)
  layer_scale: bool = False
  pos_interpolation: str = "timm"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout: as timm's pretrained configurations
    if self.pos_interpolation not in INTERPOLATIONS:
      raise ValueError(f"VisionTransformer: pos_interpolation={self.pos_interpolation!r}; choose "
                       f"one of {', '.join(INTERPOLATIONS)}")
    p, d = self.patch_size, self.embed_dim
    x = nn.Conv(d, (p, p), p, padding="VALID", dtype=self.dtype,
                name="patch_embed_proj")(x.astype(self.dtype))
    b, gh, gw, _ = x.shape
    cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d))
    pos = self.param("pos_embed", nn.initializers.normal(0.02),
                     (1, 1 + self.pos_grid[0] * self.pos_grid[1], d))
    patches = resample_grid(pos[0, 1:], self.pos_grid, (gh, gw), self.pos_interpolation == "timm")
    pos = jnp.concatenate([pos[0, :1], patches])
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(self.dtype),
                         x.reshape(b, gh * gw, d)], axis=1)
    x = x + pos.astype(self.dtype)
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_ratio, self.layer_scale, dtype=self.dtype,
                name=f"blocks_{i}")(x)
    x = nn.LayerNorm(1e-6, dtype=self.dtype, use_fast_variance=False, name="norm")(x)
    return x[:, 0].astype(jnp.float32)


def stage_of(name: str, names) -> int:
  """The stage of a top-level param ``name`` (of all ``names``) for ``model.freeze='stageN'``: 0
  for the embeddings; the blocks in four stages as a ResNet's (blocks 0-2 of 12 are stage 1,
  ..., 9-11 stage 4); after all (5) for the final norm."""
  if name.startswith("blocks_"):
    depth = sum(n.startswith("blocks_") for n in names)
    return 1 + int(name[len("blocks_"):]) * 4 // depth
  return 0 if name in ("patch_embed_proj", "cls_token", "pos_embed") else 5
