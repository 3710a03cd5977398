"""How the encoders' convolutions are computed: XLA's convolution, or patches times a matrix.

``nn.Conv`` calls ``lax.conv_general_dilated`` unless given another function of the same
signature; ``conv_as_matmul`` is one: the image's k x k neighbourhoods laid side by side (pads
and strided slices, pure data movement) and one matrix product with the kernel reshaped to
``[k * k * C_in, C_out]``. Same parameters (``kernel [kh, kw, C_in, C_out]``, ``bias``), same
numbers up to float32 rounding, so a checkpoint written with either loads into the other.

Why: XLA:CPU's convolutions are fast only outside loops (inside ``lax.scan`` the weight-gradient
convolutions fall to a generic path, jax-ml/jax#12868), and even there slower than its matrix
products for the small images and widths these encoders run at; its dot products take the
same fast GEMM path everywhere. On GPUs and TPUs XLA's own convolutions are the fast ones.
``CONV_IMPLS`` names the choices (``model.conv_impl``), ``resolve`` turns "auto" into one.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "matmul")


def _pads(padding, in_size, kernel, stride) -> list[tuple[int, int]]:
  """``padding`` ("SAME", "VALID" or [(lo, hi)] per spatial axis) as explicit pairs."""
  if isinstance(padding, str):
    return lax.padtype_to_pads(in_size, kernel, stride, padding)
  return [tuple(p) for p in padding]


def conv_as_matmul(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, precision=None, **unused):
  """``lax.conv_general_dilated`` of NHWC images and an HWIO kernel, as im2col and one matmul.

  lhs: [B, H, W, C_in]; rhs: [kh, kw, C_in, C_out]; window_strides (sh, sw); padding "SAME",
  "VALID" or ((top, bottom), (left, right)) -> [B, H_out, W_out, C_out]. Only what the encoders
  use: no dilation, one feature group (anything else raises). The patches are
  ``[B, H_out, W_out, kh * kw * C_in]`` in (row, column, channel) order, the order of the
  kernel's reshape, so no transpose is needed.
  """
  del unused
  if dimension_numbers is not None and tuple(dimension_numbers) not in (
      ("NHWC", "HWIO", "NHWC"), lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))):
    raise NotImplementedError(f"conv_as_matmul: NHWC images and HWIO kernels only, got "
                              f"{dimension_numbers}")
  if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))) or (
      feature_group_count != 1) or lhs.ndim != 4:
    raise NotImplementedError("conv_as_matmul: 2-D convolutions without dilation or feature "
                              "groups only; use model.conv_impl='xla'")
  b, h, w, c = lhs.shape
  kh, kw, _, out = rhs.shape
  sh, sw = window_strides
  (top, bottom), (left, right) = _pads(padding, (h, w), (kh, kw), (sh, sw))
  x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
  h_out, w_out = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
  cols = [lax.slice(x, (0, i, j, 0), (b, i + (h_out - 1) * sh + 1, j + (w_out - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  y = jnp.dot(patches.reshape(-1, kh * kw * c), rhs.reshape(kh * kw * c, out), precision=precision)
  return y.reshape(b, h_out, w_out, out)


def resolve(impl: str, backend: str | None = None) -> str:
  """``impl`` with "auto" made concrete: "matmul" on CPU, "xla" elsewhere."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"model.conv_impl={impl!r} is not known; choose one of "
                     f"{', '.join(CONV_IMPLS)}.")
  if impl == "auto":
    return "matmul" if (backend or jax.default_backend()) == "cpu" else "xla"
  return impl


def conv_function(impl: str) -> Callable | None:
  """What ``nn.Conv(conv_general_dilated=...)`` takes for ``impl`` (None: flax's default,
  ``lax.conv_general_dilated``)."""
  return conv_as_matmul if resolve(impl) == "matmul" else None
