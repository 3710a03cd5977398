"""The official data files: their names, checksums and shapes, where to look for them, and readers
that verify them (no tfds here; `builders.py` turns what these return into tfds datasets).

Checks run in the order that gives the most specific message: the file exists, is readable
(gzip / zip), is well formed (IDX magic and size, zip layout), has the expected image shape, its
labels match its images, it has the official number of examples, and last its sha256. An IDX
file passes the checksum if either its own bytes match the official archive (tfds's checksum) or
its decompressed bytes match the official IDX file: Debian re-compressed Fashion-MNIST, so only
the latter holds there.
"""

import dataclasses
import functools
import gzip
import hashlib
import io
import os
import pathlib
import http.client
import re
import threading
import urllib.request
import zipfile

import numpy as np

from siamese_jax.idx import DataFileError, read_idx_bytes

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class IdxFile:
  """One official IDX file: ``stem`` (name without ``.gz``), array shape, and two sha256 digests."""
  stem: str
  shape: tuple[int, ...]
  gz_sha256: str  # of the official .gz archive (what tfds checks)
  sha256: str  # of the decompressed IDX bytes


@dataclasses.dataclass(frozen=True)
class IdxDataset:
  """An MNIST-like dataset of four IDX files: ``parts[split] = (images, labels)``."""
  name: str
  parts: dict[str, tuple[IdxFile, IdxFile]]
  num_classes: int
  class_names: tuple[str, ...] | None
  url: str  # where tfds downloads it from (host checked for network)

  @property
  def files(self) -> list[IdxFile]:
    return [f for pair in self.parts.values() for f in pair]


def _mnist_like(name, url, class_names, digests):
  parts = {}
  for split, prefix, n in (("train", "train", 60000), ("test", "t10k", 10000)):
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    shapes = ((n, 28, 28), (n,))
    parts[split] = tuple(IdxFile(s, shape, *digests[s]) for s, shape in zip(stems, shapes))
  return IdxDataset(name, parts, 10, class_names, url)


# (sha256 of the official .gz, sha256 of the decompressed file).
MNIST = _mnist_like("mnist", "https://storage.googleapis.com/cvdf-datasets/mnist/", None, {
    "train-images-idx3-ubyte": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
})
FASHION_MNIST = _mnist_like(
    "fashion_mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
     "Ankle boot"), {
        "train-images-idx3-ubyte": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    })
IDX_DATASETS = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}

# The embedded sample: MNIST's official test files, shipped in siamese_jax/sample_data/.
# Rule: the first SAMPLE_TRAIN_SIZE examples (file order) are "train", the remaining 2,000 "test".
SAMPLE_DIR = pathlib.Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_TRAIN_SIZE = 8000


@dataclasses.dataclass(frozen=True)
class OmniglotZip:
  """One official Omniglot zip; its top-level folder is the zip's stem."""
  filename: str
  sha256: str
  url: str


_OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
OMNIGLOT_ZIPS = {  # split -> zip, as in tfds's omniglot builder
    "train": OmniglotZip(
        "images_background.zip",
        "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640", _OMNIGLOT_URL),
    "test": OmniglotZip(
        "images_evaluation.zip",
        "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee", _OMNIGLOT_URL),
    "small1": OmniglotZip(
        "images_background_small1.zip",
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4", _OMNIGLOT_URL),
    "small2": OmniglotZip(
        "images_background_small2.zip",
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f", _OMNIGLOT_URL),
}
OMNIGLOT_IMAGE_SIZE = 105
OMNIGLOT_NUM_CLASSES = 1623
# The 50 alphabets (30 background + 20 evaluation), sorted as tfds's builder sorts them.
OMNIGLOT_ALPHABETS = tuple(sorted((
    "Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian", "Armenian",
    "Asomtavruli_(Georgian)", "Balinese", "Bengali", "Blackfoot_(Canadian_Aboriginal_Syllabics)",
    "Braille", "Burmese_(Myanmar)", "Cyrillic", "Early_Aramaic", "Futurama", "Grantha", "Greek",
    "Gujarati", "Hebrew", "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Japanese_(hiragana)",
    "Japanese_(katakana)", "Korean", "Latin", "Malay_(Jawi_-_Arabic)", "Mkhedruli_(Georgian)",
    "N_Ko", "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Sanskrit", "Syriac_(Estrangelo)", "Tagalog",
    "Tifinagh",
    "Angelic", "Atemayar_Qelisayer", "Atlantean", "Aurek-Besh", "Avesta", "Ge_ez", "Glagolitic",
    "Gurmukhi", "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)", "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan",
    "ULOG")))

# Folders searched (in order) when load() is not given source_dir; env vars come first.
KNOWN_PLACES = {
    "mnist": ("$SIAMESE_JAX_MNIST_DIR",),
    "fashion_mnist": ("$SIAMESE_JAX_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"),
    "omniglot": ("$SIAMESE_JAX_OMNIGLOT_DIR",
                 str(PROJECT_ROOT.parent / "shared" / "data" / "omniglot")),
}


def known_places(name: str) -> list[pathlib.Path]:
  """The folders searched for ``name``'s official files, env vars expanded, unset ones dropped."""
  places = []
  for place in KNOWN_PLACES[name]:
    if place.startswith("$"):
      place = os.environ.get(place[1:], "")
    if place:
      places.append(pathlib.Path(place).expanduser())
  return places


@functools.lru_cache(maxsize=None)
def network_reachable(url: str, timeout: float = 2.0) -> bool:
  """Whether an HTTP HEAD of ``url`` answers 2xx/3xx within ``timeout`` s (DNS and TLS included).

  A bare TCP connect is not enough: some sandboxes accept every connection and then stall.
  Cached per process, so an offline machine pays the timeout at most once per URL.
  """
  result = []

  def probe():
    try:
      with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
        result.append(r.status < 400)
    except (OSError, ValueError, http.client.HTTPException):
      pass

  thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores timeouts
  thread.start()
  thread.join(timeout)
  return bool(result and result[0])


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ IDX


def find_idx_file(folder: pathlib.Path, spec: IdxFile) -> pathlib.Path | None:
  """``folder/stem.gz`` or ``folder/stem``, whichever exists (gz first); None if neither."""
  for name in (spec.stem + ".gz", spec.stem):
    if (folder / name).is_file():
      return folder / name
  return None


def missing_idx_files(folder: pathlib.Path, dataset: IdxDataset) -> list[str]:
  """Stems of ``dataset``'s files absent from ``folder`` (all of them if the folder is absent)."""
  return [f.stem for f in dataset.files if find_idx_file(folder, f) is None]


def _read_verified(path: pathlib.Path, spec: IdxFile) -> tuple[np.ndarray, bool]:
  """IDX array of ``path``, and whether its sha256 (of the file or its content) is official."""
  try:
    raw = path.read_bytes()
    official = sha256(raw) == spec.gz_sha256
    if raw[:2] == b"\x1f\x8b":
      raw = gzip.decompress(raw)
  except (OSError, EOFError, gzip.BadGzipFile, ValueError) as e:
    raise DataFileError(f"{path}: cannot be read or decompressed ({e}); replace it with the "
                        "official file") from None
  array = read_idx_bytes(raw, str(path))
  return array, official or sha256(raw) == spec.sha256


def read_idx_pair(folder: pathlib.Path, images_spec: IdxFile, labels_spec: IdxFile,
                  num_classes: int, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Reads and checks one (images, labels) pair of IDX files from ``folder``.

  Returns images [N, H, W] uint8 and labels [N] int32; raises DataFileError naming the file.
  """
  arrays = []
  for spec in (images_spec, labels_spec):
    path = find_idx_file(folder, spec)
    if path is None:
      raise DataFileError(f"{folder / spec.stem}[.gz]: file not found; put the official "
                          f"{spec.stem}.gz in {folder}")
    array, official = _read_verified(path, spec)
    if array.shape[1:] != spec.shape[1:] or array.dtype != np.uint8:
      expected = ", ".join(map(str, spec.shape[1:]))
      raise DataFileError(f"{path}: holds {array.dtype} data of shape {array.shape}, expected "
                          f"uint8 (N, {expected}); use the official {spec.stem}")
    arrays.append((path, array, official))
  (img_path, images, img_ok), (lbl_path, labels, lbl_ok) = arrays
  if len(labels) != len(images):
    raise DataFileError(f"{lbl_path}: has {len(labels)} labels but {img_path.name} has "
                        f"{len(images)} images; use matching official files")
  if labels.size and labels.max() >= num_classes:
    raise DataFileError(f"{lbl_path}: label {labels.max()} is out of range [0, {num_classes}); "
                        "use the official file")
  for path, array, ok, spec in ((img_path, images, img_ok, images_spec),
                                (lbl_path, labels, lbl_ok, labels_spec)):
    if len(array) != spec.shape[0]:
      raise DataFileError(f"{path}: has {len(array)} examples, the official file has "
                          f"{spec.shape[0]}; replace it with the official file")
    if verify and not ok:
      raise DataFileError(f"{path}: sha256 does not match the official {spec.stem}; the file is "
                          "corrupt or not the official one, replace it")
  return images, labels.astype(np.int32)


# ------------------------------------------------------------------------------------- Omniglot


@dataclasses.dataclass(frozen=True)
class OmniglotImage:
  """One drawing: ``png`` bytes as in the zip, its alphabet, character and global label."""
  key: str
  alphabet: str
  alphabet_char_id: int  # character number in its alphabet, from 0
  label: int  # global character id in [0, 1623), from the file name (NNNN_DD.png -> NNNN - 1)
  png: bytes


_MEMBER = re.compile(r"([^/]+)/character(\d+)/(\d{4})_(\d{2})\.png")


def _png_size(png: bytes) -> tuple[int, int] | None:
  """(width, height) from a PNG's IHDR chunk, or None if ``png`` is not a PNG."""
  if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
    return None
  return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def read_omniglot_zip(path: pathlib.Path, verify: bool = True) -> list[OmniglotImage]:
  """Reads and checks one official Omniglot zip; raises DataFileError naming the file."""
  top = path.name.removesuffix(".zip")
  try:
    raw = path.read_bytes()
    archive = zipfile.ZipFile(io.BytesIO(raw))
    members = {n: archive.read(n) for n in archive.namelist() if n.endswith(".png")}
  except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
    raise DataFileError(f"{path}: not a readable zip ({e}); replace it with the official "
                        "file") from None
  if not members:
    raise DataFileError(f"{path}: holds no PNG drawings; replace it with the official file")
  images = []
  for name, png in sorted(members.items()):
    match = _MEMBER.fullmatch(name.removeprefix(top + "/"))
    if not name.startswith(top + "/") or match is None or match.group(1) not in OMNIGLOT_ALPHABETS:
      raise DataFileError(f"{path}: member {name} is not {top}/<alphabet>/characterNN/NNNN_NN.png; "
                          "replace the zip with the official file")
    size = _png_size(png)
    if size != (OMNIGLOT_IMAGE_SIZE, OMNIGLOT_IMAGE_SIZE):
      side = OMNIGLOT_IMAGE_SIZE
      raise DataFileError(f"{path}: member {name} is {'not a PNG' if size is None else size}, "
                          f"expected a {side}x{side} PNG; replace the zip with the official file")
    alphabet, char, label = match.group(1), int(match.group(2)) - 1, int(match.group(3)) - 1
    key = f"{alphabet}_{char}_{name.rsplit('/', 1)[1]}"
    images.append(OmniglotImage(key, alphabet, char, label, png))
  if verify and sha256(raw) != OMNIGLOT_ZIPS[_split_of(path.name)].sha256:
    raise DataFileError(f"{path}: sha256 does not match the official {path.name}; the file is "
                        "corrupt or not the official one, replace it")
  return images


def _split_of(filename: str) -> str:
  return next(split for split, z in OMNIGLOT_ZIPS.items() if z.filename == filename)
