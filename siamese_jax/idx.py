"""Reading the IDX files of MNIST and Fashion-MNIST (LeCun's format), gzipped or not."""

import gzip
import os

import numpy as np

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DataFileError(ValueError):
  """A data file is missing, truncated or not what it claims to be; the message says what to do."""


def read_idx_bytes(raw: bytes, name: str = "<bytes>") -> np.ndarray:
  """Parses the bytes of one IDX file into an array of its declared shape and dtype."""
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise DataFileError(f"{name}: not an IDX file (bad magic number); replace it with the "
                        "official file")
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataFileError(f"{name}: truncated IDX header; download the file again")
  shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  body = len(raw) - header
  if body != expected:
    raise DataFileError(f"{name}: holds {body} data bytes but its header {shape} promises "
                        f"{expected}; the file is truncated or corrupt, download it again")
  array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
  return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (``.gz`` or plain) into a native-endian NumPy array."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataFileError(f"{path}: file not found; check the data folder")
  try:
    with open(path, "rb") as f:
      raw = f.read()
    if raw[:2] == b"\x1f\x8b":
      raw = gzip.decompress(raw)
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise DataFileError(f"{path}: cannot be decompressed ({e}); download the file again") from None
  return read_idx_bytes(raw, path)
