"""A trained run as a model to use: embed images, score and verify pairs, search a gallery.

  model = inference.load("runs/contrastive")             # the best checkpoint and its threshold
  model.verify(image_a, image_b)                         # True: the same class
  index = inference.Index.build(model, images, labels)   # enrolment; index.add(...) for more
  labels, scores, ids = index.search(queries, k=5)
  index.identify(query)                                  # a label, or None: nobody enrolled

Images are arrays: one image [H, W] or [H, W, C], a batch [N, H, W] or [N, H, W, C] (a 3-D
array is one image when its last axis is 1 to 4 channels), or a list of images of any sizes or
of image file paths; uint8 in [0, 255] or float in [0, 1]. They are prepared as training
prepared its data (siamese_jax.data.pixels): area-resized to the model's size and converted to
its channels (alpha dropped, BT.601 grey) in uint8 (floats are rounded to uint8 first, and only
when they need converting), then scaled to [0, 1]. Batches are padded to a power of two up to
BATCH, so the model compiles once per bucket size, never per call.

Scores follow siamese_jax.scoring: a distance (lower = same) for distance heads and embedding
models, the head's logit (higher = same) for logit heads. ``model.threshold`` is the one chosen
at the end of training on validation pairs for this checkpoint (calibration.json), or the
untuned one (eval.threshold, logit 0) where the run has none, as ``model.threshold_note`` says.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import zipfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from siamese_jax import checkpoints, evaluate, scoring, workdir as workdir_lib
from siamese_jax.data import folders, pixels

BATCH = 256  # the largest compiled batch; more images go through in chunks of it
INDEX_FORMAT = "siamese_jax.index/1"
_BLOCK_FLOATS = 1 << 27  # [query rows, gallery] scores per search block: 512 MB of float32


class InferenceError(ValueError):
  """Input that a trained model cannot take; the message names it and the fix, in one line."""


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split())[:200] or type(error).__name__


# ------------------------------------------------------------------------------- images

def read_image(path) -> np.ndarray:
  """uint8 [h, w, 1] (grey files) or [h, w, 3] pixels of an image file, at its own size."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise InferenceError(f"{path}: no such image file; check the path")
  try:
    return folders.decode(path, None, None)
  except folders._BadImage as error:  # noqa: SLF001 (the data loader's own reasons)
    raise InferenceError(f"{path}: {error}") from None


def _as_hwc(image: np.ndarray) -> np.ndarray:
  return image[..., None] if image.ndim == 2 else image


def _image_forms(images) -> tuple[list | np.ndarray, bool]:
  """(a batch [N, H, W, C] or a list of [h, w, c] images, whether one image was given)."""
  if isinstance(images, (str, os.PathLike)):
    return [read_image(images)], True
  if isinstance(images, (list, tuple)):
    return [read_image(x) if isinstance(x, (str, os.PathLike)) else _as_hwc(np.asarray(x))
            for x in images], False
  array = np.asarray(images)
  if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] <= 4):
    return _as_hwc(array)[None], True
  if array.ndim == 3:
    return array[..., None], False
  if array.ndim == 4:
    return array, False
  raise InferenceError(f"images of shape {array.shape}: pass one image [H, W] or [H, W, C], a "
                       "batch [N, H, W, C], or a list of images")


def _to_model_pixels(batch: np.ndarray, image_shape) -> np.ndarray:
  """uint8 or float [n, h, w, c] -> float32 [n, H, W, C] in [0, 1] as training prepared it."""
  height, width, channels = image_shape
  if batch.dtype != np.uint8 and not np.issubdtype(batch.dtype, np.floating):
    raise InferenceError(f"images of dtype {batch.dtype}: pass uint8 in [0, 255] or floats "
                         "in [0, 1]")
  if batch.ndim != 4 or batch.shape[-1] not in (1, 2, 3, 4):
    raise InferenceError(f"images of shape {batch.shape[1:]} have {batch.shape[-1]} channels; "
                         f"the model takes {channels} and converts 1 to 4 (grey, grey+alpha, "
                         "RGB, RGBA): pass images with those")
  floats = batch.dtype != np.uint8
  if floats and batch.size and (np.nanmin(batch) < 0 or np.nanmax(batch) > 1):
    raise InferenceError(f"float images must be in [0, 1], these span [{np.nanmin(batch):g}, "
                         f"{np.nanmax(batch):g}]; divide by 255 or pass uint8")
  if batch.shape[1:] == tuple(image_shape):
    return batch.astype(np.float32) if floats else batch.astype(np.float32) / np.float32(255)
  uint8 = np.clip(np.round(batch * 255.0), 0, 255).astype(np.uint8) if floats else batch
  uint8 = pixels.resize_area(uint8, (height, width))  # (a no-op at the model's size)
  try:
    uint8 = pixels.to_channels(uint8, channels)
  except ValueError as error:
    raise InferenceError(f"images with {batch.shape[-1]} channels cannot become the model's "
                         f"{channels} ({_one_line(error)}); convert them yourself") from None
  return uint8.astype(np.float32) / np.float32(255)


def prepare(images, image_shape) -> tuple[np.ndarray, bool]:
  """(float32 [N, H, W, C] in [0, 1], whether one image was given) of ``images`` in any form the
  module docstring lists, for a model trained on ``image_shape`` (H, W, C)."""
  batch, single = _image_forms(images)
  if isinstance(batch, np.ndarray):
    return _to_model_pixels(batch, image_shape), single
  if not batch:
    raise InferenceError("no images given; pass at least one")
  out = np.empty((len(batch), *image_shape), np.float32)
  groups: dict[tuple, list[int]] = {}
  for i, image in enumerate(batch):
    groups.setdefault((image.shape, image.dtype.str), []).append(i)
  for members in groups.values():
    out[members] = _to_model_pixels(np.stack([batch[i] for i in members]), image_shape)
  return out, single


def _bucketed(fn: Callable, *arrays: np.ndarray) -> np.ndarray:
  """fn over the leading axis of ``arrays`` in chunks of BATCH, each zero-padded to a power of
  two: at most log2(BATCH) + 1 shapes reach ``fn``, whatever the number of rows."""
  n = len(arrays[0])
  if n == 0:
    raise InferenceError("no images given; pass at least one")
  parts = []
  for start in range(0, n, BATCH):
    chunk = [a[start:start + BATCH] for a in arrays]
    rows = len(chunk[0])
    size = 1 << (rows - 1).bit_length()
    chunk = [np.concatenate([c, np.zeros((size - rows, *c.shape[1:]), c.dtype)]) for c in chunk]
    parts.append(np.asarray(fn(*chunk))[:rows])
  return np.concatenate(parts)


# -------------------------------------------------------------------------------- model

def fingerprint(config: ml_collections.ConfigDict, params) -> str:
  """sha256 (32 hex digits) of the config JSON and of every parameter's name, shape and bytes."""
  digest = hashlib.sha256(json.dumps(json.loads(config.to_json_best_effort()),
                                     sort_keys=True).encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)} {leaf.dtype} {leaf.shape}\n".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()[:32]


class Model:
  """A trained model with its threshold: ``embed``, ``score``, ``verify`` (see the module
  docstring). ``calibration`` is calibration.json's entry for this checkpoint (None: untuned)."""

  def __init__(self, config, params, apply_fn: Callable, image_shape, calibration=None,
               threshold_note: str = "", workdir=None, epoch=None, step=None):
    self.config, self.params, self.apply_fn = config, params, apply_fn
    self.image_shape = tuple(int(n) for n in image_shape)
    self.scoring = scoring.pair_scoring_from_config(config)
    self.calibration = calibration
    self.threshold = float(calibration["threshold"]) if calibration else self.scoring.threshold
    self.threshold_note = threshold_note or (
        f"calibrated for {calibration['target']} on validation pairs" if calibration else
        "untuned (no calibration given)")
    self.workdir, self.epoch, self.step = workdir, epoch, step
    self._embed = {tower: jax.jit(functools.partial(_embed_tower, apply_fn, tower=tower))
                   for tower in (0, 1)}
    self._score = jax.jit(functools.partial(scoring.score_embeddings, apply_fn,
                                            scoring=self.scoring))
    self._top_logits = jax.jit(functools.partial(_top_logits, self._score), static_argnums=(3, 4))

  @property
  def higher_means_same(self) -> bool:
    return self.scoring.higher_means_same

  @functools.cached_property
  def fingerprint(self) -> str:
    return fingerprint(self.config, self.params)

  @functools.cached_property
  def embedding_dim(self) -> int:
    """D of this model's embeddings (from its traced program: nothing runs)."""
    x = jax.ShapeDtypeStruct((1, *self.image_shape), jnp.float32)
    return int(jax.eval_shape(self._embed[1], self.params, x).shape[-1])

  def embed(self, images, tower: int = 0) -> np.ndarray:
    """float32 [N, D] embeddings of ``images`` (one image gives [1, D]); ``tower`` 1 is the second
    input's tower of a model with separate weights (a gallery's), the same as 0 otherwise."""
    x, _ = prepare(images, self.image_shape)
    return _bucketed(lambda chunk: self._embed[tower](self.params, chunk), x)

  def score_embeddings(self, emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Scores [N] of embedding pairs [N, D] (tower 0's, tower 1's), as siamese_jax.scoring."""
    return _bucketed(lambda a, b: self._score(self.params, a, b), np.asarray(emb_a, np.float32),
                     np.asarray(emb_b, np.float32))

  def score(self, a, b):
    """The score of the pair (a, b): a float for two images, [N] for two batches of N (or one
    image against a batch). A distance or a logit: see ``higher_means_same``."""
    emb_a, emb_b = self.embed(a, tower=0), self.embed(b, tower=1)
    if len(emb_a) != len(emb_b) and 1 not in (len(emb_a), len(emb_b)):
      raise InferenceError(f"score: {len(emb_a)} images against {len(emb_b)}; pass as many of "
                           "each (or one image against a batch)")
    count = max(len(emb_a), len(emb_b))
    scores = self.score_embeddings(np.broadcast_to(emb_a, (count, emb_a.shape[1])),
                                   np.broadcast_to(emb_b, (count, emb_b.shape[1])))
    return float(scores[0]) if _is_single(a) and _is_single(b) else scores

  def same(self, scores):
    """Whether each score calls its pair "same" at ``threshold`` (scoring.predict_same)."""
    called = scoring.predict_same(np.asarray(scores), self.higher_means_same, self.threshold)
    return bool(called) if np.ndim(called) == 0 else called

  def verify(self, a, b):
    """True where a and b are called the same class at ``threshold`` (bool, or bool [N])."""
    return self.same(self.score(a, b))

  def describe(self) -> str:
    """One line: the run, the checkpoint and the threshold with its measured error rates."""
    where = f"{self.workdir} epoch {self.epoch} (step {self.step})" if self.workdir else "model"
    rates = ""
    if self.calibration and "test" in self.calibration:
      test = self.calibration["test"]
      rates = f"; on test pairs FAR {test['far']:.4f}, FRR {test['frr']:.4f}"
    return f"{where}: threshold {self.threshold:.6g}, {self.threshold_note}{rates}"


def _embed_tower(apply_fn, params, x, tower: int):
  return scoring.embed(apply_fn, params, x, tower=tower)


def _is_single(images) -> bool:
  if isinstance(images, (str, os.PathLike)):
    return True
  if isinstance(images, (list, tuple)):
    return False
  array = np.asarray(images)
  return array.ndim == 2 or (array.ndim == 3 and array.shape[-1] <= 4)


def _checkpoint_arg(checkpoint) -> int | str:
  if checkpoint in ("best", "latest"):
    return checkpoint
  if isinstance(checkpoint, (int, np.integer)) or (isinstance(checkpoint, str)
                                                    and checkpoint.isdigit()):
    return int(checkpoint)
  raise InferenceError(f"checkpoint={checkpoint!r}: pass 'best', 'latest' or an epoch number")


def read_calibration(workdir, step: int) -> tuple[dict | None, str]:
  """(calibration.json's entry for ``step`` or None, the threshold's origin in words)."""
  path = pathlib.Path(workdir) / workdir_lib.CALIBRATION_FILE
  if not path.is_file():
    return None, (f"untuned: {path} not found (a run that did not finish, or from before "
                  "calibration), so eval.threshold / logit 0")
  try:
    found = json.loads(path.read_text())["checkpoints"]
  except (OSError, ValueError, KeyError, TypeError) as error:
    return None, f"untuned: {path} unreadable ({_one_line(error)})"
  if str(step) not in found:
    steps = ", ".join(sorted(found, key=int))
    return None, (f"untuned: {path} calibrates steps {steps} (the latest and the best), not "
                  f"step {step}")
  entry = found[str(step)]
  return entry, f"calibrated for {entry['target']} on validation pairs"


def load(workdir, checkpoint: int | str = "best") -> Model:
  """The run in ``workdir`` at ``checkpoint`` ("best": the highest validation ROC AUC, "latest",
  or an epoch number) with that checkpoint's calibrated threshold. Raises
  checkpoints.CheckpointError (one line) for a workdir without a usable checkpoint."""
  config, state = checkpoints.load_trained(workdir, _checkpoint_arg(checkpoint))
  step = int(jax.device_get(state.step))
  info = checkpoints.describe_checkpoint(workdir, step)
  calibration, note = read_calibration(pathlib.Path(workdir).expanduser(), step)
  if calibration is None:
    logging.warning("%s: %s", workdir, note)
  elif calibration.get("higher_means_same") not in (None, scoring.pair_scoring_from_config(
      config).higher_means_same):
    raise InferenceError(f"{pathlib.Path(workdir) / workdir_lib.CALIBRATION_FILE}: its score direction "
                         "disagrees with the model's head; retrain or delete the file")
  return Model(config, state.params, state.apply_fn, info["image_shape"], calibration, note,
               workdir=str(pathlib.Path(workdir).expanduser().resolve()), epoch=info["epoch"],
               step=step)


def recalibrate(model: Model, far: float | None) -> Model:
  """``model`` with its threshold chosen again, for false-accept rate ``far`` on validation pairs
  (None: best accuracy), with FAR/FRR on test pairs. The pairs are the run's own: its data
  reloaded as its config says, the validation part held out of the training split by the same
  seed, pairs drawn with the evaluation key training used; nothing from the test split."""
  from siamese_jax import evaluators  # the training data pipeline, only here
  if far is not None and not 0 <= far < 1:
    raise InferenceError(f"far={far}: pass a false-accept rate in [0, 1), e.g. 0.001")
  from siamese_jax.data import protocol
  config = model.config
  datasets = protocol.load_datasets(config)
  context = evaluators.for_run(config, model.params, model.apply_fn, datasets).replace(far=far)
  chosen = evaluators.run("calibration", context)
  return Model(config, model.params, model.apply_fn, model.image_shape, chosen,
               f"recalibrated for {chosen['target']} on the run's validation pairs",
               model.workdir, model.epoch, model.step)


# -------------------------------------------------------------------------------- index

def _as_labels(labels, count: int) -> np.ndarray:
  """[count] int64 or str labels; one-line error otherwise."""
  array = np.asarray(labels)
  if array.ndim != 1 or len(array) != count:
    raise InferenceError(f"labels of shape {array.shape} for {count} images; pass one label per "
                         "image")
  if array.dtype.kind in "iu":
    return array.astype(np.int64)
  if array.dtype.kind in "US":
    return array.astype(str)
  raise InferenceError(f"labels of dtype {array.dtype}: pass integers or strings")


def _padded_rows(rows: int, block: int) -> int:
  """Query rows padded to a power of two below one block, to whole blocks above it."""
  return 1 << (rows - 1).bit_length() if rows <= block else -(-rows // block) * block


def _block(gallery_size: int, dim: int, logits: bool) -> int:
  """Query rows scored at a time: [block, gallery] floats (x D for a head) within _BLOCK_FLOATS."""
  budget = _BLOCK_FLOATS // (16 if logits else 1) // (gallery_size * (dim if logits else 1))
  return 1 << max(0, min(10, budget.bit_length() - 1))


def _top_logits(score_fn, params, query, gallery, k: int, block: int):
  """(logits [N, k], ids [N, k]) of each query's k best-scoring gallery rows, highest first:
  query [N, D] (N a multiple of ``block``), gallery [M, D]; [block * M] pairs at a time."""
  rows, size = query.shape[0], gallery.shape[0]

  def one_block(block_rows):
    pairs_a = jnp.repeat(block_rows, size, axis=0)
    pairs_b = jnp.tile(gallery, (block, 1))
    return jax.lax.top_k(score_fn(params, pairs_a, pairs_b).reshape(block, size), k)
  scores, ids = jax.lax.map(one_block, query.reshape(rows // block, block, -1))
  return scores.reshape(rows, k), ids.reshape(rows, k)


@dataclasses.dataclass(eq=False)
class Index:
  """An enrolled gallery of one model: ``embeddings`` [M, D] float32 (the second tower's),
  ``labels`` [M] (int64 or str) and ``paths`` [M] (the images' files, "" for arrays).

  ``search`` returns (labels [N, k], scores [N, k], ids [N, k]) best first: ``scores`` are the
  model's pair scores (scoring.score_embeddings), so a distance (ascending) for distance heads
  and the head's logit (descending, higher = closer) for logit heads, and ``ids`` the gallery
  rows. ``identify`` calls the best match's label when its score passes the model's threshold.
  """
  model: Model
  embeddings: np.ndarray
  labels: np.ndarray
  paths: np.ndarray
  _device: Any = dataclasses.field(default=None, repr=False)
  _faiss: Any = dataclasses.field(default=None, repr=False)

  @classmethod
  def build(cls, model: Model, images, labels, paths=None) -> "Index":
    """The gallery of ``images`` (any form the module docstring lists) with their ``labels``."""
    index = cls(model, np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, str))
    return index.add(images, labels, paths)

  def __len__(self) -> int:
    return len(self.labels)

  def add(self, images, labels, paths=None) -> "Index":
    """Enrols ``images`` with their ``labels`` (and file ``paths``); returns the index."""
    batch, single = _image_forms(images)
    count = len(batch)
    if count == 0:
      raise InferenceError("empty gallery: no images to enrol; pass at least one image")
    labels = _as_labels([labels] if single and np.ndim(labels) == 0 else labels, count)
    if len(self) and (labels.dtype.kind == "U") != (self.labels.dtype.kind == "U"):
      raise InferenceError(f"labels of dtype {labels.dtype} added to a gallery labelled by "
                           f"{self.labels.dtype}; use one kind of label")
    paths = np.asarray([""] * count if paths is None else [str(p) for p in paths], str)
    embeddings = self.model.embed(batch, tower=1)
    self.embeddings = embeddings if not len(self) else np.concatenate([self.embeddings,
                                                                       embeddings])
    self.labels = np.concatenate([self.labels, labels]) if len(self) else labels
    self.paths = np.concatenate([self.paths, paths]) if len(self.paths) else paths
    self._device = self._faiss = None
    return self

  def search(self, queries, k: int = 5, backend: str = "exact"):
    """(labels [N, k], scores [N, k], ids [N, k]) of the k closest gallery entries to each
    query, best first (see the class docstring). ``backend`` "exact" (on device, in blocks of
    query rows) or "faiss" (approximate HNSW; distance models; needs the faiss package)."""
    if not len(self):
      raise InferenceError("empty gallery: enrol images first (Index.build or index.add)")
    if not 1 <= k <= len(self):
      raise InferenceError(f"k={k} is larger than the gallery ({len(self)} entries); pass k "
                           f"from 1 to {len(self)}")
    query = self.model.embed(queries, tower=0)
    if backend == "exact":
      scores, ids = self._search_exact(query, k)
    elif backend == "faiss":
      scores, ids = self._search_faiss(query, k)
    else:
      raise InferenceError(f"backend={backend!r}: pass 'exact' or 'faiss'")
    return self.labels[ids], scores, ids

  def identify(self, queries, backend: str = "exact"):
    """The label of each query's best match, or None where that match is not called "same" at
    the model's threshold (open set: someone not enrolled). One image gives one answer."""
    labels, scores, _ = self.search(queries, 1, backend)
    found = [label.item() if self.model.same(score) else None
             for label, score in zip(labels[:, 0], scores[:, 0])]
    return found[0] if _is_single(queries) else found

  def _search_exact(self, query: np.ndarray, k: int):
    if self._device is None:
      self._device = jnp.asarray(self.embeddings)
    size, dim = self.embeddings.shape
    logits = self.model.higher_means_same
    block = _block(size, dim, logits)
    rows = len(query)
    padded = np.zeros((_padded_rows(rows, block), dim), np.float32)
    padded[:rows] = query
    if logits:
      scores, ids = self.model._top_logits(self.model.params, padded, self._device, k,
                                           min(block, len(padded)))
    else:
      scores, ids = evaluate.nearest_neighbours(padded, self._device, k,
                                                self.model.scoring.distance,
                                                block_size=min(block, len(padded)))
    return np.asarray(scores)[:rows], np.asarray(ids)[:rows]

  def _search_faiss(self, query: np.ndarray, k: int):
    distance = self.model.scoring.distance
    if self.model.higher_means_same or distance not in ("euclidean", "squared_euclidean",
                                                        "cosine"):
      raise InferenceError(f"backend='faiss' searches euclidean or cosine distances, not this "
                           f"model's {'head logit' if self.model.higher_means_same else distance}"
                           "; use backend='exact'")
    if self._faiss is None:
      self._faiss = _faiss_index(self.embeddings, distance)
    cosine = distance == "cosine"
    self._faiss.hnsw.efSearch = max(128, k)
    found, ids = self._faiss.search(_unit(query) if cosine else np.ascontiguousarray(query), k)
    if np.any(ids < 0):
      raise InferenceError(f"faiss found fewer than k={k} neighbours; use backend='exact'")
    scores = (1.0 - found if cosine else np.sqrt(np.maximum(found, 0.0))
              if distance == "euclidean" else found)
    return scores.astype(np.float32), ids.astype(np.int32)

  def save(self, path) -> None:
    """Writes the index as .npz (no pickle; INDEX_FORMAT, described in docs of ``load``)."""
    path = pathlib.Path(path).expanduser()
    fields = {"format": INDEX_FORMAT, "embeddings": self.embeddings, "labels": self.labels,
              "paths": self.paths, "fingerprint": self.model.fingerprint,
              "workdir": self.model.workdir or "", "epoch": self.model.epoch or -1,
              "step": self.model.step or -1, "head": self.model.scoring.head,
              "distance": self.model.scoring.distance,
              "higher_means_same": self.model.higher_means_same,
              "threshold": self.model.threshold}
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
      with open(partial, "wb") as f:
        np.savez(f, **{name: np.asarray(value) for name, value in fields.items()})
      os.replace(partial, path)
    except OSError as error:
      partial.unlink(missing_ok=True)
      raise InferenceError(f"{path}: cannot write it ({error.strerror or _one_line(error)}); "
                           "choose a writable path") from None

  @classmethod
  def load(cls, path, model: Model | None = None) -> "Index":
    """The index saved at ``path``, for ``model`` (None: the run and epoch it records).

    The file is an .npz read with allow_pickle=False: format (INDEX_FORMAT), embeddings [M, D]
    float32, labels [M] (int64 or unicode), paths [M] unicode, fingerprint (of the model's
    config and params, see ``fingerprint``), workdir, epoch, step, head, distance,
    higher_means_same and threshold (for information). An index of another model is refused.
    """
    path = pathlib.Path(path).expanduser()
    build_one = "build one with python -m siamese_jax.predict index --workdir W --out FILE FOLDER"
    if not path.is_file():
      raise InferenceError(f"{path}: no such index file; {build_one}")
    try:
      with np.load(path, allow_pickle=False) as saved:
        fields = {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
      raise InferenceError(f"{path}: not an index file ({_one_line(error)}); {build_one}"
                           ) from None
    if str(fields.get("format", "")) != INDEX_FORMAT:
      raise InferenceError(f"{path}: not a {INDEX_FORMAT} file; {build_one}")
    workdir, epoch = str(fields["workdir"]), int(fields["epoch"])
    if model is None:
      if not workdir:
        raise InferenceError(f"{path} records no training run; pass the model it was built with")
      model = load(workdir, epoch)
    if model.fingerprint != str(fields["fingerprint"]):
      raise InferenceError(
          f"{path} was built by another model (fingerprint {str(fields['fingerprint'])[:12]}, "
          f"this model's {model.fingerprint[:12]}); rebuild it with this model or use the run it "
          f"was built with ({workdir or 'unknown'}, epoch {epoch})")
    _check_index_fields(path, fields, model, build_one)
    return cls(model, fields["embeddings"].astype(np.float32), fields["labels"], fields["paths"])


def _check_index_fields(path, fields: dict, model: "Model", build_one: str) -> None:
  """An index's arrays, checked at load: embeddings [M, D] of finite numbers with this model's D,
  one label and one path per row."""
  embeddings = fields.get("embeddings")
  if embeddings is None or embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype,
                                                                        np.number):
    raise InferenceError(f"{path}: its embeddings are not a [M, D] array of numbers; {build_one}")
  if embeddings.shape[1] != model.embedding_dim:
    raise InferenceError(f"{path}: its embeddings have {embeddings.shape[1]} dimensions, this "
                         f"model's {model.embedding_dim}; rebuild the index with this model")
  bad = np.flatnonzero(~np.all(np.isfinite(embeddings), axis=1))
  if len(bad):
    raise InferenceError(f"{path}: {len(bad)} of its {len(embeddings)} embeddings hold NaN or inf "
                         f"(row {bad[0]} first); rebuild the index ({build_one})")
  for name in ("labels", "paths"):
    if name not in fields or fields[name].shape != (len(embeddings),):
      raise InferenceError(f"{path}: {name} do not match its {len(embeddings)} embeddings (one "
                           f"each); {build_one}")


def _unit(x: np.ndarray) -> np.ndarray:
  norms = np.sqrt(np.maximum(np.sum(np.square(x), axis=1, keepdims=True), 1e-12))
  return np.ascontiguousarray(x / norms, np.float32)


def _faiss_index(embeddings: np.ndarray, distance: str):
  """A faiss HNSW index (32 links) of the gallery: L2, or inner product of unit rows."""
  try:
    import faiss  # an optional extra: only this backend needs it
  except ImportError:
    raise InferenceError("backend='faiss' needs the faiss package (pip install faiss-cpu, or "
                         "faiss-gpu); or use backend='exact'") from None
  cosine = distance == "cosine"
  index = faiss.IndexHNSWFlat(embeddings.shape[1], 32,
                              faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2)
  index.add(_unit(embeddings) if cosine else np.ascontiguousarray(embeddings, np.float32))
  return index
