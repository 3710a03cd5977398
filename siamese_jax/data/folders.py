"""Folders of images in torchvision's ImageFolder layout, ``PATH/<class>/<image>``, decoded once.

Layouts (``LAYOUTS``), told from the folder's top level:

- split folders: ``PATH/train/`` + ``PATH/test/``, spelt ``training/`` + ``testing/`` too, with
  an optional ``PATH/val/`` (or ``validation/``), each holding ``<class>/<image>``. Each is a
  split, under its short name (``SPLIT_FOLDERS``, any case); any other subfolder beside them is a
  split under its own name. ``val/`` is the run's validation part, used instead of one carved out
  of train (``FOLDER.validation_split``, read by ``siamese_jax.data.protocol``).
- class folders: ``PATH/<class>/<image>``. PATH is the one split "all", and "train" / "test" are
  its two parts under ``siamese_jax.splits.split(labels, test_fraction, split_by, seed)``: the
  same every run.
- anything else whose classes sit in folders of folders (``a/`` + ``b/`` each holding class
  folders, or ``traning/`` + ``tesing/`` misspelt) is refused in one line naming what was found:
  read as one split it would pool the user's splits, and train on the classes meant for test.
  ``nested_classes`` (``data.nested_classes``) accepts such folders on purpose: unzipped Omniglot,
  ``PATH/<alphabet>/<character>/*.png``, gives classes "Greek/character01" (as the omniglot route
  names them).

Classes: a class is any folder under the split's root that directly holds images; its name is
that folder's path from the root, with "/" (bytes of a name that are not UTF-8 become backslash
escapes, e.g. caf\\xe9). Labels number the sorted class names 0..C-1 within the split. An image
directly in the root (no class) is an error; a folder that holds no image (nor any folder) is no
class, and is named in a warning.

Files: any format Pillow reads, told by extension (IMAGE_EXTENSIONS, any case). Other files
(Thumbs.db, notes.txt), hidden ones (.DS_Store, ._x.jpg) and hidden folders are skipped and
counted in one logged line. Symlinks are followed only to a place inside PATH not already
visited: none leads out, none loops. An image that does not decode, has more than MAX_PIXELS
pixels (a decompression bomb) or is smaller than MIN_SIDE x MIN_SIDE is a DataFileError naming the
file; with ``skip_bad_images`` it is left out instead, and listed in a warning on every load.

Pixels: grey modes (1, L, LA, 16-bit I) give one channel, every other mode RGB (alpha dropped, as
torchvision's loader does; 16-bit grey is scaled to 8 bits; EXIF orientation is not applied).
``channels`` None gives 1 if every image is grey, else 3. Images of different sizes need
``image_size``: each is area-resized to S x S (aspect not kept), as the other routes resize.

Read once: the decoded split is cached as ``images.npy`` (memory-mappable), ``labels.npy`` and
``meta.json`` in ``<data_dir>/siamese_jax_folders/<folder name>-<key>/``, where key is a sha256 of
every image file's relative path, size and mtime and of image_size, channels and
skip_bad_images. A changed, added or removed image gives a new key, so a stale cache is never
read; old ones are left for the user to delete. (Not a tfds dataset: the arrays are already what
load returns, and nothing is re-encoded.)
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil

import numpy as np
import PIL.Image

from siamese_jax import splits
from siamese_jax.data import pixels
from siamese_jax.data.labelled import LabelledImages
from siamese_jax.data.source import DataSource, named, tfds_folder
from siamese_jax.idx import DataFileError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".webp", ".gif", ".tif",
                              ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"})
MAX_PIXELS = 40_000_000  # 40 megapixels: a 7,300 x 5,500 photo; beyond it, refused as a bomb
MIN_SIDE = 2
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"})
CACHE_FOLDER = "siamese_jax_folders"
_CACHE_FORMAT = 1  # part of the key: bump it when what the cache holds changes meaning
_SKIP_FLAG = "pass skip_bad_images=True (--config.data.skip_bad_images) to leave such files out"
# A split folder's accepted names (compared in lower case): the first is the split's name.
SPLIT_FOLDERS = {"train": ("train", "training"), "test": ("test", "testing"),
                 "val": ("val", "validation")}
VALIDATION_SPLIT = "val"  # the split folder that is the run's validation part
LAYOUTS = ("<dir>/<class>/<image> (split by data.split_by and data.test_fraction)",
           "<dir>/train/ + <dir>/test/ (or training/ + testing/), optionally + val/, each holding "
           "<class>/<image>")
_EMPTY = "folders without images (no class)"


@dataclasses.dataclass(frozen=True)
class Scan:
  """What a walk of one split's folder found: ``files`` (relative path, size, mtime_ns), sorted;
  ``skipped``: reason -> relative paths of what was not read."""
  root: pathlib.Path
  files: list[tuple[str, int, int]]
  skipped: dict[str, list[str]]

  def class_of(self, rel: str) -> str:
    return printable(os.path.dirname(rel).replace(os.sep, "/"))


def printable(name: str) -> str:
  """``name`` (a path as os.scandir gives it) with bytes that are not UTF-8 as backslash escapes
  (caf\\xe9), so that it prints, encodes and goes into JSON; valid names are unchanged."""
  return os.fsencode(name).decode("utf-8", "backslashreplace")


class _BadImage(Exception):
  """One image file that cannot be used; the message says why (without the path)."""


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split())[:200] or type(error).__name__


def _inside(real: str, boundary_real: str) -> bool:
  return real == boundary_real or real.startswith(boundary_real.rstrip(os.sep) + os.sep)


def scan(root: pathlib.Path, boundary: pathlib.Path | None = None) -> Scan:
  """Walks ``root`` (symlinks followed only inside ``boundary``, default root, and never twice).

  Real folders are walked before symlinked ones, so a link to a folder of the tree is the one
  left out, whatever the names.
  """
  boundary_real = os.path.realpath(boundary or root)
  visited = {os.path.realpath(root)}
  found, skipped = [], collections.defaultdict(list)
  stack, links = [os.fspath(root)], []
  while stack or links:
    if stack:
      folder = stack.pop()
    else:
      folder = links.pop(0)
      real = os.path.realpath(folder)
      if real in visited:
        skipped["folders already visited (symlink loops)"].append(os.path.relpath(folder, root))
        continue
      visited.add(real)
    try:
      entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
      raise DataFileError(f"{folder}: cannot be listed ({_one_line(e)}); fix its permissions"
                          ) from None
    holds_something = False  # an image or a folder
    for entry in entries:
      rel = os.path.relpath(entry.path, root)
      if entry.name.startswith("."):
        skipped["hidden"].append(rel)
      elif entry.is_symlink() and not _inside(os.path.realpath(entry.path), boundary_real):
        skipped["symlinks leading outside"].append(rel)
      elif entry.is_dir() and entry.is_symlink():
        links.append(entry.path)
        holds_something = True
      elif entry.is_dir():
        visited.add(os.path.realpath(entry.path))
        stack.append(entry.path)
        holds_something = True
      elif not entry.is_file():
        skipped["neither file nor folder (broken symlinks)"].append(rel)
      elif os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
        skipped["not images by extension"].append(rel)
      else:
        stat = entry.stat()
        found.append((rel, stat.st_size, stat.st_mtime_ns))
        holds_something = True
    if not holds_something and os.path.realpath(folder) != os.path.realpath(root):
      skipped[_EMPTY].append(os.path.relpath(folder, root) + "/")
  return Scan(root, sorted(found), dict(skipped))


def _log_skipped(found: Scan) -> None:
  if not found.skipped:
    return
  parts = []
  for reason, paths in sorted(found.skipped.items()):
    more = ", ..." if len(paths) > 3 else ""
    parts.append(f"{len(paths)} {reason} ({', '.join(map(printable, sorted(paths)[:3]))}{more})")
  harmless = set(found.skipped) <= {"hidden", "not images by extension"}
  level = logging.INFO if harmless else logging.WARNING  # a symlink left out may be data missed
  logging.log(level, "image folder %s: skipped %s", found.root, "; ".join(parts))


def check_classes(root: pathlib.Path, class_names: list[str]) -> None:
  """DataFileError unless the images' ``class_names`` [N] make >= 2 classes of >= 2 images each."""
  counts = collections.Counter(class_names)
  if not counts:
    raise DataFileError(f"{root}: no images found; put them in class folders, "
                        f"{root}/<class>/<image> (PNG, JPEG, BMP, WebP...)")
  if len(counts) < 2:
    raise DataFileError(f"{root}: one class ({next(iter(counts))}); a siamese network needs two "
                        "or more, add class folders")
  single = sorted(c for c, n in counts.items() if n == 1)
  if single:
    raise DataFileError(f"{root}: {len(single)} of {len(counts)} classes have a single image "
                        f"(e.g. {single[0]}), so no positive pair; add images or remove them")


def _check_layout(found: Scan, nested_classes: bool = False,
                  skip_bad_images: bool = False) -> None:
  empty = sorted(found.skipped.get(_EMPTY, ()))
  if empty and found.files and not skip_bad_images:  # (none at all: check_classes says so)
    raise DataFileError(f"{found.root / printable(empty[0])}: a class folder without images "
                        f"({len(empty)} such); add its images or remove the folder, or set "
                        "data.skip_bad_images=True to leave it out")
  loose = [rel for rel, _, _ in found.files if not found.class_of(rel)]
  if loose:
    raise DataFileError(f"{found.root / printable(loose[0])}: image outside a class folder "
                        f"({len(loose)} such); move it into {found.root}/<class>/")
  classes = sorted({found.class_of(rel) for rel, _, _ in found.files})
  nested = [name for name in classes if "/" in name]
  if nested and not nested_classes:
    tops = sorted({name.split("/")[0] + "/" for name in nested})
    shown = ", ".join(tops[:4]) + (f" and {len(tops) - 4} more" if len(tops) > 4 else "")
    raise DataFileError(
        f"{found.root}: {shown} hold class folders (e.g. {nested[0]}/), a layout that would pool "
        f"them into one split; use {' or '.join(LAYOUTS)}: rename the split folders or point "
        "data.dir at a folder of classes, or set data.nested_classes=True to make each nested "
        "folder a class named by its path (as unzipped Omniglot)")
  check_classes(found.root, [found.class_of(rel) for rel, _, _ in found.files])


def cache_key(found: Scan, image_size, channels, skip_bad_images: bool) -> str:
  """sha256 (20 hex digits) of the image files' paths, sizes and mtimes and of the settings."""
  digest = hashlib.sha256(json.dumps([_CACHE_FORMAT, image_size, channels, skip_bad_images],
                                     ).encode())
  for rel, size, mtime_ns in found.files:  # (paths as bytes: a name need not be UTF-8)
    digest.update(os.fsencode(rel) + f"\0{size}\0{mtime_ns}\n".encode())
  return digest.hexdigest()[:20]


def _check_size(width: int, height: int) -> None:
  if width * height > MAX_PIXELS:
    raise _BadImage(f"{width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
                    f"{MAX_PIXELS // 10**6}-megapixel limit (a decompression bomb?); shrink it")
  if min(width, height) < MIN_SIDE:
    raise _BadImage(f"{width}x{height} is smaller than {MIN_SIDE}x{MIN_SIDE}; remove it")


def _opened(path: pathlib.Path):
  try:
    return PIL.Image.open(path)
  except PIL.Image.DecompressionBombError:
    raise _BadImage(f"over the {MAX_PIXELS // 10**6}-megapixel limit (a decompression bomb?); "
                    "shrink it") from None
  except (OSError, ValueError, SyntaxError, EOFError) as e:
    raise _BadImage(f"not a readable image ({_one_line(e)}); replace or remove it") from None


def header(path: pathlib.Path) -> tuple[int, int, bool]:
  """(width, height, grey) of one image from its header; raises _BadImage."""
  with _opened(path) as image:
    _check_size(*image.size)
    return image.size[0], image.size[1], image.mode in GREY_MODES


def _array(image: PIL.Image.Image) -> np.ndarray:
  """[H, W, 1] (grey modes) or [H, W, 3] uint8 pixels of a PIL image."""
  if image.mode in ("I", "F") or image.mode.startswith("I;16"):
    values = np.asarray(image)
    if image.mode == "F" or values.min() < 0 or values.max() > 65535:
      raise _BadImage(f"{image.mode}-mode pixels beyond 16 bits are not supported; save it as "
                      "8-bit")
    return (values.astype(np.uint16) >> 8).astype(np.uint8)[..., None]
  if image.mode in GREY_MODES:
    return np.asarray(image.convert("L"))[..., None]
  return np.asarray(image.convert("RGB"))


def decode(path: pathlib.Path, image_size, channels: int) -> np.ndarray:
  """[H, W, channels] uint8 pixels of one image file (``image_size``: S for S x S, (H, W), or None
  for its own size); raises _BadImage."""
  with _opened(path) as image:
    _check_size(*image.size)
    try:
      array = _array(image)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
      raise _BadImage(f"does not decode ({_one_line(e)}); replace or remove it") from None
  if image_size:
    array = pixels.resize_area(array, image_size)
  return pixels.to_channels(array, channels)


def _each(function, paths):
  """function(path) for every path, in order, on threads: None-or-result, None-or-reason."""

  def attempt(path):
    try:
      return function(path), None
    except _BadImage as e:
      return None, str(e)

  with concurrent.futures.ThreadPoolExecutor() as pool:
    return list(pool.map(attempt, paths))


def _keep_good(found: Scan, rels: list[str], results, skip_bad_images: bool, bad: list):
  """The (rel, result) whose result is good; a bad one raises, or with skip goes to ``bad``."""
  good = []
  for rel, (result, reason) in zip(rels, results):
    if reason is None:
      good.append((rel, result))
    elif skip_bad_images:
      bad.append([printable(rel), reason])
    else:
      raise DataFileError(f"{found.root / printable(rel)}: {reason}; or {_SKIP_FLAG}")
  return good


def _decode_all(found: Scan, image_size, channels, skip_bad_images: bool):
  """(images [N, H, W, C] uint8, rel paths [N], bad [[rel, reason]]) of a scanned folder."""
  bad = []
  rels = [rel for rel, _, _ in found.files]
  headers = _keep_good(found, rels, _each(header, [found.root / r for r in rels]),
                       skip_bad_images, bad)
  check_classes(found.root, [found.class_of(rel) for rel, _ in headers])
  sizes = sorted({(w, h) for _, (w, h, _) in headers})
  if image_size is None and len(sizes) > 1:
    examples = {(w, h): rel for rel, (w, h, _) in headers}
    shown = ", ".join(f"{w}x{h} ({printable(examples[(w, h)])})" for w, h in sizes[:2])
    raise DataFileError(f"{found.root}: images of {len(sizes)} sizes, e.g. {shown}; set image_size "
                        "(--config.data.image_size: S, or (H, W) to keep an aspect) to resize them "
                        "all to one size")
  channels = channels or (1 if all(grey for _, (_, _, grey) in headers) else 3)
  rels = [rel for rel, _ in headers]
  decoded = _keep_good(found, rels, _each(lambda p: decode(p, image_size, channels),
                                          [found.root / r for r in rels]), skip_bad_images, bad)
  check_classes(found.root, [found.class_of(rel) for rel, _ in decoded])
  return np.stack([array for _, array in decoded]), [rel for rel, _ in decoded], bad


def _write_cache(path: pathlib.Path, images, labels, meta) -> None:
  """Writes the cache folder atomically (a rename); a failure only costs a decode next time."""
  partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
  try:
    partial.mkdir(parents=True, exist_ok=True)
    np.save(partial / "images.npy", images)
    np.save(partial / "labels.npy", labels)
    (partial / "meta.json").write_text(json.dumps(meta))
    os.rename(partial, path)
  except OSError as e:
    shutil.rmtree(partial, ignore_errors=True)
    if not path.is_dir():  # another process may have written the same key first: fine
      logging.warning("image folder %s: could not cache the decoded images in %s (%s); they will "
                      "be decoded again next time", meta["root"], path, _one_line(e))


def read_folder(root: pathlib.Path, data_dir: pathlib.Path, *, image_size=None, channels=None,
                skip_bad_images: bool = False, boundary: pathlib.Path | None = None,
                nested_classes: bool = False) -> LabelledImages:
  """Every image under ``root`` (one split) as LabelledImages, from the cache when it is there."""
  found = scan(root, boundary)
  _log_skipped(found)
  _check_layout(found, nested_classes, skip_bad_images)
  name = root.name if boundary is None or root == boundary else f"{boundary.name}-{root.name}"
  key = cache_key(found, image_size, channels, skip_bad_images)
  cache = data_dir / CACHE_FOLDER / f"{name}-{key}"
  if (cache / "meta.json").is_file():
    meta = json.loads((cache / "meta.json").read_text())
    images, labels = np.load(cache / "images.npy"), np.load(cache / "labels.npy")
    source = f"image folder {printable(str(root))}, decoded earlier into {cache}"
  else:
    images, rels, bad = _decode_all(found, image_size, channels, skip_bad_images)
    class_names = sorted({found.class_of(rel) for rel in rels})
    labels = np.searchsorted(class_names, [found.class_of(rel) for rel in rels]).astype(np.int32)
    meta = {"root": str(root), "class_names": class_names, "bad_images": bad}
    _write_cache(cache, images, labels, meta)
    source = f"image folder {printable(str(root))}, decoded once into {cache}"
  if meta["bad_images"]:
    logging.warning("image folder %s: left out %d bad images (skip_bad_images): %s", root,
                    len(meta["bad_images"]), "; ".join(f"{r} ({why})" for r, why in
                                                       meta["bad_images"][:10]))
  return LabelledImages(images, labels, len(meta["class_names"]), source,
                        class_names=meta["class_names"])


def split_folders(path: pathlib.Path) -> dict[str, pathlib.Path] | None:
  """{split name: its folder} of an image folder that holds its splits as subfolders (it has a
  train/ or training/ folder): each subfolder under its short name (``SPLIT_FOLDERS``) or its own;
  None for a folder of classes. Two spellings of one split (train/ and training/) are refused."""
  try:
    subfolders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
  except OSError as e:
    raise DataFileError(f"{path}: cannot be listed ({_one_line(e)}); fix its permissions"
                        ) from None
  short = {spelling: name for name, spellings in SPLIT_FOLDERS.items() for spelling in spellings}
  if not any(short.get(p.name.lower()) == "train" for p in subfolders):
    return None
  found = {}
  for folder in subfolders:
    name = short.get(folder.name.lower(), printable(folder.name))
    if name in found:
      raise DataFileError(f"{path}: both {found[name].name}/ and {printable(folder.name)}/ are "
                          f"its {name} split; merge them or rename one")
    found[name] = folder
  return found


def load(source_dir, split: str, *, data_dir: pathlib.Path, image_size=None, channels=None,
         skip_bad_images: bool = False, split_by: str = "images", test_fraction: float = 0.2,
         seed: int = 0, nested_classes: bool = False) -> LabelledImages:
  """``split`` of the image folder ``source_dir`` (see the module docstring for the layouts)."""
  path = pathlib.Path(source_dir).expanduser()
  if not path.is_dir():
    raise DataFileError(f"{path}: folder not found; point source_dir (--config.data.dir) at a "
                        "folder of class folders, <dir>/<class>/<image>")
  folders = split_folders(path)
  names = sorted(folders) if folders is not None else ["all", "train", "test"]
  if split not in names:
    raise DataFileError(f"{path}: no split {split!r}; its splits are {', '.join(names)}"
                        + (" (its subfolders)" if folders is not None else ""))
  kwargs = dict(image_size=image_size, channels=channels, skip_bad_images=skip_bad_images,
                boundary=path, nested_classes=nested_classes)
  if folders is not None:
    return read_folder(folders[split], data_dir, **kwargs)
  whole = read_folder(path, data_dir, **kwargs)
  if split == "all":
    return whole
  train, test = splits.split(whole.labels, test_fraction, split_by, seed)
  note = (f"; its {split} part by split(test_fraction={test_fraction}, by={split_by!r}, "
          f"seed={seed})")
  return splits.take(whole, train if split == "train" else test, note)


NAME = "folder"
SPLIT_BY = ("images", "classes")  # siamese_jax.splits.BY without groups: how a folder without
# train/ is split


def validation_split(data) -> str | None:
  """The folder's val/ split where it has one (and neither data.train_split nor data.test_split
  is it): the run's validation part, instead of one held out of the training split."""
  if data.dir is None or VALIDATION_SPLIT in (data.train_split, data.test_split):
    return None
  path = pathlib.Path(data.dir).expanduser()
  folders = split_folders(path) if path.is_dir() else None
  return VALIDATION_SPLIT if folders is not None and VALIDATION_SPLIT in folders else None


def check(data) -> str | None:
  """What a folder needs before it is read: data.dir, and a split_by it can follow."""
  if data.dir is None:
    return ("data.name='folder' needs data.dir, the folder of <class>/<image> files (e.g. "
            "--config.data.dir=~/photos)")
  if data.split_by not in SPLIT_BY:
    return (f"data.split_by={data.split_by!r} cannot split a folder of classes; use one of "
            f"{', '.join(SPLIT_BY)}")
  return None


def _load(data, split: str, seed: int = 0, download: bool | None = None) -> LabelledImages:
  del download  # a folder is already here
  dataset = load(data.dir, split, data_dir=tfds_folder(data), image_size=data.image_size,
                 channels=data.channels, skip_bad_images=data.skip_bad_images,
                 split_by=data.split_by, test_fraction=data.test_fraction, seed=seed,
                 nested_classes=data.nested_classes)
  logging.info("siamese_jax.data.load(%r, %r): %s", NAME, split, dataset.source)
  return dataset


FOLDER = DataSource(NAME, named(NAME), ("dir", "tfds_data_dir", "image_size", "channels",
                                        "skip_bad_images", "split_by", "test_fraction",
                                        "nested_classes"),
                    _load, check=check, validation_split=validation_split)
