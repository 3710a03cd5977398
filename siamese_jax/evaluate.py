"""What an embedding is worth: pair verification, retrieval, SVM on pair features, one-shot.

Scores follow one convention: ``higher_means_same`` says whether a larger score means "same
class" (pair logits) or "different" (distances). Everything that touches N x M distances runs on
device in blocks of query rows (``nearest_neighbours``), so 10,000 x 10,000 distances never sit in
host memory; only the [N, k] neighbour lists come back.

Retrieval metrics are those of pytorch-metric-learning's ``AccuracyCalculator`` with the query set
equal to the reference set (each query's own row excluded): ``precision_at_1``, ``r_precision``
and ``mean_average_precision_at_r`` (Musgrave et al. 2020), where R is the number of other
examples of the query's class; queries whose class has no other example are skipped. Beside them
``recall_at_<k>`` for k in RECALL_AT (the fraction of those queries with a same-class example among
their k nearest others: the "Recall@k" of the deep metric learning literature, Song et al. 2016)
and, in ``clustering_metrics``, NMI and AMI of a k-means clustering of the embeddings into as many
clusters as classes (scikit-learn's scores, as PML's ``AccuracyCalculator``).
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax import batches, distances, samplers, scoring

# --------------------------------------------------------------------- pair verification


def _similarity(scores, higher_means_same: bool) -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  return scores if higher_means_same else -scores


def accuracy_at_threshold(scores, same, threshold: float, higher_means_same: bool) -> float:
  """Fraction of pairs called right: "same" where score > threshold (or < for distances).

  scores [M] float, same [M] bool.
  """
  scores, same = np.asarray(scores), np.asarray(same, bool)
  return float(np.mean(scoring.predict_same(scores, higher_means_same, threshold) == same))


def best_threshold(scores, same, higher_means_same: bool) -> float:
  """The threshold with the highest accuracy on these (validation) pairs: scores [M], same [M].

  Candidates are the midpoints between consecutive distinct scores (and both ends), so the
  chosen threshold never sits exactly on a validation score; the lowest of tied candidates wins.
  Every candidate's accuracy comes from cumulative counts: O(M log M), for 10^5 pairs too.
  """
  scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
  values, where = np.unique(scores, return_inverse=True)
  candidates = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2,
                               [values[-1] + 1.0]])
  same_below = np.concatenate([[0], np.cumsum(np.bincount(where, same, len(values)))])
  different_below = np.concatenate([[0], np.cumsum(np.bincount(where, ~same, len(values)))])
  # candidate c lies above the c lowest distinct values: those are "same" for a distance
  if higher_means_same:
    right = (same.sum() - same_below) + different_below
  else:
    right = same_below + (different_below[-1] - different_below)
  return float(candidates[int(np.argmax(right))])


def error_rates(scores, same, threshold: float, higher_means_same: bool) -> dict:
  """{"far", "frr"}: the fraction of different pairs called "same" (false accepts) and of same
  pairs called "different" (false rejects) at ``threshold``. scores [M], same [M] bool."""
  same = np.asarray(same, bool)
  called_same = scoring.predict_same(np.asarray(scores), higher_means_same, threshold)
  return {"far": float(np.mean(called_same[~same])) if np.any(~same) else 0.0,
          "frr": float(np.mean(~called_same[same])) if np.any(same) else 0.0}


def threshold_at_far(scores, same, far: float, higher_means_same: bool) -> float:
  """The threshold that accepts the most same pairs while its false-accept rate on these
  (validation) pairs stays at or below ``far``: scores [M], same [M] bool."""
  same = np.asarray(same, bool)
  similarity = _similarity(scores, higher_means_same)
  different = np.sort(similarity[~same])[::-1]  # most similar different pairs first
  allowed = int(np.floor(far * len(different) + 1e-9))  # false accepts we may make
  # Accept similarity strictly above the (allowed + 1)-th most similar different pair.
  if allowed >= len(different):
    cut = float(np.min(similarity)) - 1.0
  else:
    above = different[allowed]
    higher_values = similarity[similarity > above]
    cut = (above + float(np.min(higher_values))) / 2 if len(higher_values) else above + 1.0
  return float(cut if higher_means_same else -cut)


MIN_CHOOSING_PAIRS = 100  # distinct validation pairs of each kind below which nothing is chosen on them
CALIBRATION_IMPOSTORS_PER_FAR = 3  # a FAR target is calibrated on >= this / FAR different pairs


def calibrate(val_scores, val_same, higher_means_same: bool, far: float | None = None,
              too_small: str | None = None) -> dict:
  """The verification threshold chosen on validation pairs: best accuracy (``far`` None) or the
  most permissive one whose false-accept rate is at most ``far``; with its validation rates.

  Two cases fall back to the threshold that rejects every validation impostor (``far`` = 0 on
  these pairs), and say so in ``notice`` (one line; None otherwise):
  - ``far`` needs more different pairs than there are: fewer than
    CALIBRATION_IMPOSTORS_PER_FAR / far (1e-3 needs 3,000), where the rate cannot be measured;
  - best accuracy on fewer than MIN_CHOOSING_PAIRS pairs of either kind, or where ``too_small``
    says why else the validation part cannot choose (e.g. too few classes): the stricter of the
    best-accuracy threshold and that one (a few validation classes put few impostors near the
    boundary, so best accuracy there accepts most impostors of other data).
  """
  same = np.asarray(val_same, bool)
  num_same, num_different = int(same.sum()), int((~same).sum())
  strictest = lambda: threshold_at_far(val_scores, same, 0.0, higher_means_same)
  notice = None
  if far is None:
    threshold = best_threshold(val_scores, same, higher_means_same)
    if too_small is None and min(num_same, num_different) < MIN_CHOOSING_PAIRS:
      too_small = (f"{num_same} same, {num_different} different distinct pairs; "
                   f"{MIN_CHOOSING_PAIRS} of each needed")
    if too_small is not None:
      threshold = (max if higher_means_same else min)(threshold, strictest())
      notice = (f"the validation part is too small to choose a threshold on ({too_small}): "
                "using the one that rejects every validation impostor")
  elif far > 0 and num_different < CALIBRATION_IMPOSTORS_PER_FAR / far - 1e-9:
    threshold = strictest()
    notice = (f"a FAR of {far:g} needs >= {CALIBRATION_IMPOSTORS_PER_FAR / far:.0f} different "
              f"validation pairs to calibrate on, there are {num_different}: using the threshold "
              "that rejects every validation impostor (use more validation classes, "
              "data.validation_fraction)")
  else:
    threshold = threshold_at_far(val_scores, same, far, higher_means_same)
  return {"threshold": threshold, "target": "accuracy" if far is None else f"far<={far:g}",
          "higher_means_same": bool(higher_means_same), "notice": notice,
          "validation": {**error_rates(val_scores, same, threshold, higher_means_same),
                         "accuracy": accuracy_at_threshold(val_scores, same, threshold,
                                                           higher_means_same),
                         "same_pairs": num_same, "different_pairs": num_different}}


def equal_error_rate(scores, same, higher_means_same: bool) -> float:
  """The error rate where false accepts equal false rejects (ROC interpolated): scores [M]."""
  from sklearn import metrics as sk_metrics  # scikit-learn takes ~1 s to import: predict verify skips it
  fpr, tpr, _ = sk_metrics.roc_curve(np.asarray(same, bool), _similarity(scores, higher_means_same))
  fnr = 1.0 - tpr
  i = int(np.argmax(fpr >= fnr))  # first ROC point past the crossing
  if i == 0:
    return float(fpr[0])
  # Linear interpolation between ROC points i - 1 and i, where fpr - fnr changes sign.
  d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
  w = d0 / (d0 - d1) if d1 != d0 else 0.0
  return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def pair_verification(test_scores, test_same, val_scores, val_same, higher_means_same: bool,
                      fixed_threshold: float) -> dict:
  """Verification metrics of test pairs; the tuned threshold comes from the validation pairs only.

  test_scores/test_same [M], val_scores/val_same [V]. Returns accuracy_fixed (at
  ``fixed_threshold``: 0.5 on a distance as the Keras example, 0 on a logit), accuracy_tuned,
  threshold_tuned, roc_auc and eer.
  """
  from sklearn import metrics as sk_metrics
  tuned = best_threshold(val_scores, val_same, higher_means_same)
  test_same = np.asarray(test_same, bool)
  return {
      "accuracy_fixed": accuracy_at_threshold(test_scores, test_same, fixed_threshold,
                                              higher_means_same),
      "accuracy_tuned": accuracy_at_threshold(test_scores, test_same, tuned, higher_means_same),
      "threshold_tuned": tuned,
      "roc_auc": float(sk_metrics.roc_auc_score(test_same,
                                                _similarity(test_scores, higher_means_same))),
      "eer": equal_error_rate(test_scores, test_same, higher_means_same),
  }


def pair_batches(num_pairs: int, pair_source: str = "balanced",
                 batch_size: int = 500) -> tuple[batches.BatchSpec, int]:
  """(the batch spec, how many batches) in which ``make_pair_scorer`` and ``draw_pairs`` draw
  ``num_pairs`` pairs: batches of ``batch_size`` (at most ``num_pairs``), at least one."""
  batch_size = min(batch_size, num_pairs)
  spec = batches.BatchSpec(kind="pairs", batch_size=batch_size, pair_source=pair_source)
  return spec, max(num_pairs // batch_size, 1)


@functools.partial(jax.jit, static_argnames=("num_examples", "num_pairs", "pair_source",
                                             "batch_size"))
def draw_pairs(key, index, num_examples: int, num_pairs: int, pair_source: str = "balanced",
               batch_size: int = 500) -> dict:
  """{idx_a, idx_b [M] int32, same [M] bool}: the pairs of ``make_pair_scorer`` with the same
  key and sizes, as indices into the N = ``num_examples`` images ``index`` describes (to score
  them from embeddings computed once per image)."""
  spec, num_batches = pair_batches(num_pairs, pair_source, batch_size)
  drawn = jax.lax.map(lambda i: batches.draw_indices(jax.random.fold_in(key, i), index,
                                                     num_examples, spec), jnp.arange(num_batches))
  return {"idx_a": drawn["idx_a"].reshape(-1), "idx_b": drawn["idx_b"].reshape(-1),
          "same": drawn["same"].reshape(-1) > 0}


def make_pair_scorer(apply_fn: Callable, pair_scoring: scoring.PairScoring, num_pairs: int,
                     pair_source: str = "balanced", batch_size: int = 500, views: bool = True):
  """``score(params, data, key) -> (scores [M], same [M] bool)``, one jitted call that draws M
  balanced pairs of ``data`` (siamese_jax.batches, ``batch_size`` at a time) and scores them as
  siamese_jax.scoring does (``views=False``: without test-time views, for per-epoch monitoring);
  M is ``num_pairs`` rounded down to whole batches (at least one). The same key gives the same
  pairs, so an evaluation set stays fixed across epochs."""
  spec, num_batches = pair_batches(num_pairs, pair_source, batch_size)

  @jax.jit
  def score(params, data, key):
    def one_batch(i):
      batch = batches.sample_batch(jax.random.fold_in(key, i), data, spec)
      scores, _ = scoring.score_pairs(apply_fn, params, batch["x_a"], batch["x_b"], pair_scoring,
                                      views=views)
      return scores, batch["same"] > 0
    scores, same = jax.lax.map(one_batch, jnp.arange(num_batches))
    return scores.reshape(-1), same.reshape(-1)
  return score


# ------------------------------------------------- every distinct pair (a held-out folder)

MIN_IMPOSTORS_PER_FAR = 1.0  # a FAR is measurable with >= this / FAR different pairs: 1e-3 needs 1000
_ENUMERATE_PAIRS = 5_000_000  # up to this many i < j pairs are listed, beyond it sampled


def distinct_pairs(labels, max_per_kind: int, seed: int = 0) -> dict:
  """Every distinct pair {i, j} (i < j) of images with labels [N]: {"idx_a", "idx_b" [M] int64,
  "same" [M] bool, "positives_total", "negatives_total"}. Each kind (same class, different
  classes) is all its pairs, or a sample of ``max_per_kind`` of them without repetition drawn
  with ``seed`` where there are more; positives first."""
  labels = np.asarray(labels)
  n = len(labels)
  rng = np.random.default_rng(seed)
  counts = np.bincount(np.unique(labels, return_inverse=True)[1])
  positives_total = int(np.sum(counts * (counts - 1) // 2))
  negatives_total = n * (n - 1) // 2 - positives_total
  if n * (n - 1) // 2 <= _ENUMERATE_PAIRS:
    a, b = np.triu_indices(n, 1)
    same = labels[a] == labels[b]
    chosen = [_sample(np.flatnonzero(kind), max_per_kind, rng) for kind in (same, ~same)]
    a, b = a[np.concatenate(chosen)], b[np.concatenate(chosen)]
  else:
    a_pos, b_pos = _same_class_pairs(labels, max_per_kind, rng)
    a_neg, b_neg = _different_class_pairs(labels, max_per_kind, rng)
    a, b = np.concatenate([a_pos, a_neg]), np.concatenate([b_pos, b_neg])
  return {"idx_a": a.astype(np.int64), "idx_b": b.astype(np.int64), "same": labels[a] == labels[b],
          "positives_total": positives_total, "negatives_total": negatives_total}


def _sample(rows: np.ndarray, count: int, rng) -> np.ndarray:
  return rows if len(rows) <= count else np.sort(rng.choice(rows, count, replace=False))


def _same_class_pairs(labels, count: int, rng):
  a, b = [], []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    i, j = np.triu_indices(len(members), 1)
    a.append(members[i])
    b.append(members[j])
  a, b = np.concatenate(a), np.concatenate(b)
  rows = _sample(np.arange(len(a)), count, rng)
  return a[rows], b[rows]


def _different_class_pairs(labels, count: int, rng):
  """``count`` distinct different-class pairs i < j, drawn uniformly (there are far more)."""
  n, found = len(labels), set()
  while len(found) < count:
    i, j = rng.integers(0, n, 2 * count), rng.integers(0, n, 2 * count)
    i, j = np.minimum(i, j), np.maximum(i, j)
    keep = labels[i] != labels[j]
    found.update((i[keep] * n + j[keep]).tolist())
  flat = np.sort(rng.choice(np.fromiter(found, np.int64), count, replace=False))
  return flat // n, flat % n


def roc_auc(scores, same, higher_means_same: bool) -> float:
  """Area under the ROC curve of pairs scores [M], same [M] bool (needs both kinds)."""
  from sklearn import metrics as sk_metrics
  return float(sk_metrics.roc_auc_score(np.asarray(same, bool),
                                        _similarity(scores, higher_means_same)))


def tar_at_far(scores, same, far: float, higher_means_same: bool) -> float | None:
  """The true-accept rate (same pairs called same) at the threshold ``threshold_at_far`` picks on
  these pairs for false-accept rate ``far``; None where it cannot be measured: fewer than
  MIN_IMPOSTORS_PER_FAR / far different pairs (a FAR of 1e-3 needs 1000). scores [M], same [M]."""
  same = np.asarray(same, bool)
  if np.sum(~same) < MIN_IMPOSTORS_PER_FAR / far - 1e-9 or not np.any(same):
    return None
  threshold = threshold_at_far(scores, same, far, higher_means_same)
  return 1.0 - error_rates(scores, same, threshold, higher_means_same)["frr"]


def kfold_accuracy(scores, same, higher_means_same: bool, folds: int = 10, seed: int = 0) -> dict:
  """LFW's protocol: pairs split into ``folds`` folds (seeded, each kind spread evenly), each
  fold's accuracy at the best-accuracy threshold of the other folds. scores [M], same [M] bool.
  Returns {"mean", "std" (population, as LFW reports), "accuracies" [folds], "thresholds"}."""
  scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
  if folds < 2 or len(scores) < folds:
    raise ValueError(f"kfold_accuracy: {len(scores)} pairs cannot make {folds} folds (>= 2); "
                     "pass fewer folds or more pairs")
  rng = np.random.default_rng(seed)
  fold = np.empty(len(scores), np.int64)
  for kind in (same, ~same):
    rows = rng.permutation(np.flatnonzero(kind))
    fold[rows] = np.arange(len(rows)) % folds
  accuracies, thresholds = [], []
  for k in range(folds):
    held = fold == k
    threshold = best_threshold(scores[~held], same[~held], higher_means_same)
    thresholds.append(threshold)
    accuracies.append(accuracy_at_threshold(scores[held], same[held], threshold,
                                            higher_means_same))
  return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
          "accuracies": accuracies, "thresholds": thresholds}


def one_shot_identification(similarity: Callable, gallery_emb, query_emb, labels, draws: int = 10,
                            seed: int = 0) -> dict:
  """Closed-set one-shot identification: one image of each class enrolled (drawn with ``seed``),
  every other image a query given the class of its most similar enrolled image, over ``draws``
  draws. gallery_emb [N, D] (the enrolled tower's), query_emb [N, D], labels [N];
  ``similarity(a [B, D], b [B, D]) -> [B]``, higher = more alike. Classes with one image are
  enrolled but never queried. Returns {"accuracy", "std" over draws, "queries", "classes"}."""
  labels = np.asarray(labels)
  classes = np.unique(labels)
  rng = np.random.default_rng(seed)
  found = []
  for _ in range(draws):
    enrolled = np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes])
    queries = np.setdiff1d(np.arange(len(labels)), enrolled)
    if not len(queries):
      raise ValueError("one_shot_identification: every class has one image; pass at least one "
                       "class with two")
    a = np.repeat(query_emb[queries], len(classes), axis=0)
    b = np.tile(gallery_emb[enrolled], (len(queries), 1))
    scores = np.asarray(similarity(a, b)).reshape(len(queries), len(classes))
    found.append(float(np.mean(classes[np.argmax(scores, axis=1)] == labels[queries])))
  return {"accuracy": float(np.mean(found)), "std": float(np.std(found)),
          "queries": int(len(labels) - len(classes)), "classes": int(len(classes)),
          "draws": draws}


# ----------------------------------------------------------------------------- retrieval


def _block_rows(num_reference: int, dim: int, distance: str, block_size: int | None) -> int:
  if block_size is not None:
    return block_size
  if distance == "l1":  # pairwise_l1 builds [rows, M, D]: keep it near 256 MB of float32
    return max(1, min(1024, (1 << 26) // max(num_reference * dim, 1)))
  return 1024


@functools.partial(jax.jit, static_argnames=("k", "distance", "exclude_self", "block"))
def _nearest_blocks(query, reference, k: int, distance: str, exclude_self: bool, block: int):
  num_query = query.shape[0]
  padded = -(-num_query // block) * block
  blocks = jnp.pad(query, ((0, padded - num_query), (0, 0))).reshape(padded // block, block, -1)
  # Euclidean neighbours are ranked on squared distances (no square root over the whole matrix).
  rank_name = "squared_euclidean" if distance == "euclidean" else distance
  pairwise = distances.get_pairwise_distance(rank_name)

  def one_block(args):
    rows, offset = args
    dist = pairwise(rows, reference).astype(jnp.float32)
    if exclude_self:
      own = offset + jnp.arange(block)
      dist = jnp.where(own[:, None] == jnp.arange(reference.shape[0])[None, :], jnp.inf, dist)
    negative, idx = jax.lax.top_k(-dist, k)
    return -negative, idx

  offsets = jnp.arange(padded // block) * block
  dist, idx = jax.lax.map(one_block, (blocks, offsets))
  dist, idx = dist.reshape(padded, k)[:num_query], idx.reshape(padded, k)[:num_query]
  if distance == "euclidean":
    dist = distances.safe_sqrt(dist)
  return dist, idx


def nearest_neighbours(query, reference, k: int, distance: str = "euclidean",
                       exclude_self: bool = False, block_size: int | None = None):
  """The k nearest references of every query, on device: query [N, D], reference [M, D].

  Returns (distances [N, k] float32, indices [N, k] int32), nearest first. ``exclude_self``
  (query is reference) skips each query's own row. Works in blocks of ``block_size`` query rows
  (default 1024; smaller for "l1"), so device memory holds [block, M] at a time.
  """
  query, reference = jnp.asarray(query), jnp.asarray(reference)
  if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
    raise ValueError(f"nearest_neighbours: query [N, D] and reference [M, D] must agree in D; "
                     f"got {query.shape} and {reference.shape}")
  available = reference.shape[0] - (1 if exclude_self else 0)
  if not 1 <= k <= available:
    raise ValueError(f"nearest_neighbours: k={k} must be in [1, {available}]")
  distances.get_pairwise_distance(distance)  # a clear error for an unknown name
  block = _block_rows(reference.shape[0], reference.shape[1], distance, block_size)
  return _nearest_blocks(query, reference, k, distance, exclude_self, block)


RECALL_AT = (1, 2, 4, 8)  # the k of the retrieval metrics' recall_at_<k>


def _retrieval_sums(neighbour_labels, labels, class_counts, knn_k: int):
  """Per-metric sums over queries: neighbour_labels [N, K], labels [N], class_counts [C].
  recall_at_<k> looks at the first min(k, K) neighbours."""
  relevant = neighbour_labels == labels[:, None]  # [N, K]
  r = class_counts[labels] - 1  # other examples of the query's class
  ranks = jnp.arange(1, neighbour_labels.shape[1] + 1)
  within_r = ranks[None, :] <= r[:, None]
  hits_within_r = jnp.where(within_r, relevant, False)
  precision_at_rank = jnp.cumsum(hits_within_r, axis=1) / ranks[None, :]
  counted = r > 0
  safe_r = jnp.maximum(r, 1)
  r_precision = jnp.sum(hits_within_r, axis=1) / safe_r
  average_precision = jnp.sum(jnp.where(hits_within_r, precision_at_rank, 0.0), axis=1) / safe_r
  votes = jax.nn.one_hot(neighbour_labels[:, :knn_k], class_counts.shape[0]).sum(axis=1)
  # Ties go to the class of the nearest neighbour among the tied ones: a tiny bonus by rank.
  bonus = jax.nn.one_hot(neighbour_labels[:, :knn_k], class_counts.shape[0]) * (
      1e-3 / jnp.arange(1, knn_k + 1))[None, :, None]
  knn_correct = jnp.argmax(votes + bonus.sum(axis=1), axis=1) == labels
  return {
      "precision_at_1": jnp.sum(jnp.where(counted, relevant[:, 0], False)),
      "r_precision": jnp.sum(jnp.where(counted, r_precision, 0.0)),
      "mean_average_precision_at_r": jnp.sum(jnp.where(counted, average_precision, 0.0)),
      "knn_accuracy": jnp.sum(knn_correct),
      "counted": jnp.sum(counted),
      **{f"recall_at_{k}": jnp.sum(jnp.where(counted, jnp.any(relevant[:, :k], axis=1), False))
         for k in RECALL_AT},
  }


def retrieval_metrics(embeddings, labels, knn_k: int = 5, distance: str = "euclidean",
                      block_size: int | None = None) -> dict:
  """Leave-one-out retrieval on one labelled set: embeddings [N, D], labels [N] int.

  Returns knn_accuracy (majority of the ``knn_k`` nearest others), precision_at_1, r_precision,
  mean_average_precision_at_r and recall_at_<k> (k in RECALL_AT: a same-class example among the
  k nearest others), each a float in [0, 1]; all but knn_accuracy over queries whose class has
  another example (knn_accuracy over all queries).
  """
  labels_np = np.asarray(labels)
  if labels_np.ndim != 1 or len(labels_np) != len(embeddings):
    raise ValueError(f"retrieval_metrics: labels must be [N] for {len(embeddings)} embeddings; "
                     f"got {labels_np.shape}")
  if not np.issubdtype(labels_np.dtype, np.integer) or (labels_np.size and labels_np.min() < 0):
    smallest = labels_np.min() if labels_np.size else None
    raise ValueError(f"retrieval_metrics: labels must be integer class ids >= 0 (got dtype "
                     f"{labels_np.dtype}, smallest {smallest}); renumber them, e.g. "
                     "np.unique(labels, return_inverse=True)[1]")
  class_counts = np.bincount(labels_np)
  k = int(min(max(class_counts.max() - 1, knn_k, max(RECALL_AT)), len(labels_np) - 1))
  _, idx = nearest_neighbours(embeddings, embeddings, k, distance, exclude_self=True,
                              block_size=block_size)
  labels_dev = jnp.asarray(labels_np, jnp.int32)
  sums = jax.jit(_retrieval_sums, static_argnames="knn_k")(
      labels_dev[idx], labels_dev, jnp.asarray(class_counts, jnp.int32), knn_k=min(knn_k, k))
  sums = {name: float(value) for name, value in sums.items()}
  counted = max(sums.pop("counted"), 1.0)
  result = {name: value / counted for name, value in sums.items() if name != "knn_accuracy"}
  result["knn_accuracy"] = sums["knn_accuracy"] / len(labels_np)
  return result


def cross_retrieval_metrics(query, query_labels, reference, reference_labels, knn_k: int = 5,
                            distance: str = "euclidean") -> dict:
  """Retrieval of one set's queries among another set's examples (an 8 x 8 digit finding the
  MNIST images of its digit): query [N, D], query_labels [N], reference [M, D],
  reference_labels [M], int class ids >= 0 shared by both.

  Returns ``retrieval_metrics``'s figures, with R the number of references of the query's
  class (the query is not among them); queries whose class has no reference are skipped
  (knn_accuracy: over all queries).
  """
  query_labels, reference_labels = np.asarray(query_labels), np.asarray(reference_labels)
  classes = int(max(query_labels.max(), reference_labels.max())) + 1
  counts = np.bincount(reference_labels, minlength=classes)
  k = int(min(max(counts.max(), knn_k, max(RECALL_AT)), len(reference_labels)))
  _, idx = nearest_neighbours(query, reference, k, distance)
  # _retrieval_sums takes R as class_counts - 1 (there the query is one of the references).
  sums = jax.jit(_retrieval_sums, static_argnames="knn_k")(
      jnp.asarray(reference_labels, jnp.int32)[idx], jnp.asarray(query_labels, jnp.int32),
      jnp.asarray(counts + 1, jnp.int32), knn_k=min(knn_k, k))
  sums = {name: float(value) for name, value in sums.items()}
  counted = max(sums.pop("counted"), 1.0)
  result = {name: value / counted for name, value in sums.items() if name != "knn_accuracy"}
  result["knn_accuracy"] = sums["knn_accuracy"] / len(query_labels)
  return result


def clustering_metrics(embeddings, labels, distance: str = "euclidean", seed: int = 0) -> dict:
  """How well k-means recovers the classes: embeddings [N, D], labels [N] int.

  k-means (scikit-learn's, k-means++ seeded with ``seed``) groups the embeddings into as many
  clusters as there are classes, on unit rows where ``distance`` is "cosine" (spherical k-means'
  assignment); returns {"nmi", "ami"}: scikit-learn's ``normalized_mutual_info_score`` (arithmetic
  mean normalisation) and ``adjusted_mutual_info_score`` of the clusters against the labels,
  as pytorch-metric-learning's AccuracyCalculator reports them (there with faiss' k-means).
  """
  from sklearn import cluster, metrics as sk_metrics
  embeddings, labels = np.asarray(embeddings, np.float64), np.asarray(labels)
  if labels.ndim != 1 or len(labels) != len(embeddings):
    raise ValueError(f"clustering_metrics: labels must be [N] for {len(embeddings)} embeddings; "
                     f"got {labels.shape}")
  if distance == "cosine":
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings = embeddings / np.maximum(norms, 1e-12)
  num_classes = len(np.unique(labels))
  clusters = cluster.KMeans(num_classes, n_init=1, random_state=seed).fit_predict(embeddings)
  return {"nmi": float(sk_metrics.normalized_mutual_info_score(labels, clusters)),
          "ami": float(sk_metrics.adjusted_mutual_info_score(labels, clusters))}


# ---------------------------------------------------------------- SVM on pair features


def svm_pair_accuracy(train_features, train_same, test_features, test_same, seed: int = 0) -> float:
  """Seed 000's test: an RBF SVM (scikit-learn, standardised inputs) learns "same class?" from
  pair features, e.g. ``|f(a) - f(b)|`` or raw-pixel ``|a - b|``.

  train_features [M, F], train_same [M] bool, test_features [T, F], test_same [T] bool.
  Returns test accuracy.
  """
  from sklearn import pipeline, preprocessing, svm
  model = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                 svm.SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed))
  model.fit(np.asarray(train_features, np.float32), np.asarray(train_same, bool))
  return float(model.score(np.asarray(test_features, np.float32), np.asarray(test_same, bool)))


# ------------------------------------------------------------------------------ one-shot


EPISODES_PER_SCORING_CALL = 100  # bounds the [episodes N N K, D] pair arrays of one call


@functools.partial(jax.jit, static_argnames=("n_way", "k_shot", "within_group"))
def _episode_embeddings(keys, embeddings, index, classes, group_of_class, *, n_way: int,
                        k_shot: int, within_group: bool):
  """The episodes drawn with keys [E]: support [E, N K, D] (class n at rows n K .. n K + K - 1)
  and query [E, N, D] rows of embeddings [M, D]. Compiled once per shape and episode kind, so
  every evaluation of a run (and of the runs after it) reuses it. Traced, group_of_class [C]
  gives C group slots instead of max + 1: the same episodes, as threefry's uniform draws
  (jax_threefry_partitionable) do not depend on the length asked for."""
  def draw(key):
    support, query, _ = samplers.sample_episode(
        key, index, n_way, k_shot, 1, group_of_class=group_of_class,
        within_group=within_group, classes=classes)
    return support.reshape(-1), query[:, 0]
  support, query = jax.vmap(draw)(keys)
  return embeddings[support], embeddings[query]


def one_shot_accuracy(key, embeddings, labels, n_way: int, k_shot: int = 1, episodes: int = 400,
                      similarity: Callable | None = None, classes=None, group_of_class=None,
                      within_group: bool = False) -> float:
  """Mean N-way K-shot accuracy over ``episodes`` episodes of one query per class.

  embeddings [N, D] (all images, computed once), labels [N] int in [0, C). A query is given the
  class of its most similar support example; ``similarity(a [B, D], b [B, D]) -> [B]`` (higher =
  more alike; default minus the Euclidean distance, e.g. a Koch head's logit instead).
  classes: the class ids episodes may use (e.g. classes of groups never trained on);
  within_group: all N classes of an episode from one group, e.g. one of Omniglot's alphabets
    (needs group_of_class [C]).
  """
  if similarity is None:
    similarity = lambda a, b: -distances.batch_euclidean(a, b)
  labels = np.asarray(labels)
  index = samplers.build_class_index(labels, int(labels.max()) + 1)
  if group_of_class is not None:
    group_of_class = np.asarray(group_of_class, np.int32)
  if classes is not None:
    classes = np.asarray(classes, np.int32)
  keys = jax.random.split(key, episodes)
  # sample_episode's host-side checks (concrete class lists: a clear ValueError) run here once.
  jax.eval_shape(lambda k: samplers.sample_episode(
      k, index, n_way, k_shot, 1, group_of_class=group_of_class,
      within_group=within_group, classes=classes), keys[0])
  support, query = _episode_embeddings(
      keys, jnp.asarray(embeddings), index, classes, group_of_class, n_way=n_way,
      k_shot=k_shot, within_group=within_group)
  per_episode = []
  for first in range(0, episodes, EPISODES_PER_SCORING_CALL):  # query n against every support
    s = support[first:first + EPISODES_PER_SCORING_CALL]  # [e, N K, D]
    q = query[first:first + EPISODES_PER_SCORING_CALL]  # [e, N, D]
    pairs_a = jnp.repeat(q, n_way * k_shot, axis=1).reshape(-1, q.shape[-1])
    pairs_b = jnp.tile(s, (1, n_way, 1)).reshape(-1, s.shape[-1])
    scores = similarity(pairs_a, pairs_b).reshape(-1, n_way, n_way, k_shot).max(axis=3)
    per_episode.append(jnp.mean(jnp.argmax(scores, axis=2) == jnp.arange(n_way), axis=1))
  return float(jnp.mean(jnp.concatenate(per_episode)))
