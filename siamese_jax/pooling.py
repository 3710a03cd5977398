"""Max pooling as reshapes, strided slices and elementwise maxima.

The encoders' max pools are written with these instead of ``nn.max_pool``: the same values, and
their gradients are elementwise selects where ``nn.max_pool``'s ``reduce_window`` needs
``select_and_scatter`` (and XLA:CPU also materialises index tensors for it). On 2 CPU cores that
was about a third of the Omniglot convnet's step (59-61 -> 41 ms) and 30 ms of ResNet-18's at
64 x 64 (benchmarks/README.md, "Convnets on CPU against PyTorch"). A window's gradient goes to
its maximum; where a window holds a tie the tied entries share it (``nn.max_pool`` gives it to
one of them), which a real image's float activations almost never hit.
"""

import jax.numpy as jnp
from jax import lax


def max_pool_2x2(x):
  """2 x 2 max pool, stride 2, VALID (odd sizes floor): [B, H, W, C] -> [B, H//2, W//2, C]."""
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def max_pool(x, window: int, stride: int, padding):
  """``nn.max_pool(x, (window, window), (stride, stride), padding)`` of x [B, H, W, C].

  ``padding``: "SAME", "VALID" or ((top, bottom), (left, right)); padded entries are -inf (never
  the maximum). Separable: the maximum of ``window`` strided slices along H, then along W.
  """
  _, h, w, _ = x.shape
  if isinstance(padding, str):
    padding = lax.padtype_to_pads((h, w), (window, window), (stride, stride), padding)
  (top, bottom), (left, right) = padding
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
  for axis in (1, 2):
    size = x.shape[axis]
    out = (size - window) // stride + 1
    parts = [lax.slice_in_dim(x, i, i + (out - 1) * stride + 1, stride, axis)
             for i in range(window)]
    x = parts[0]
    for part in parts[1:]:
      x = jnp.maximum(x, part)
  return x
