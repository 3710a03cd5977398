"""Evaluation metrics against brute-force NumPy references."""

import jax
import numpy as np
import pytest

from siamese_jax import evaluate


def _numpy_distances(x, y, distance):
  diff = x[:, None, :] - y[None, :, :]
  if distance == "euclidean":
    return np.sqrt(np.sum(diff ** 2, -1))
  if distance == "squared_euclidean":
    return np.sum(diff ** 2, -1)
  if distance == "l1":
    return np.sum(np.abs(diff), -1)
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  yn = y / np.linalg.norm(y, axis=1, keepdims=True)
  return 1 - xn @ yn.T


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "l1", "cosine"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_nearest_neighbours_match_numpy(distance, exclude_self):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(37, 5)).astype(np.float32)
  y = x if exclude_self else rng.normal(size=(23, 5)).astype(np.float32)
  dist, idx = evaluate.nearest_neighbours(x, y, 4, distance, exclude_self, block_size=8)
  ref = _numpy_distances(x.astype(np.float64), y.astype(np.float64), distance)
  if exclude_self:
    np.fill_diagonal(ref, np.inf)
  ref_idx = np.argsort(ref, axis=1, kind="stable")[:, :4]
  np.testing.assert_array_equal(np.asarray(idx), ref_idx)
  np.testing.assert_allclose(np.asarray(dist), np.take_along_axis(ref, ref_idx, 1), rtol=1e-4,
                             atol=1e-4)


def test_nearest_neighbours_rejects_bad_shapes_and_k():
  x = np.zeros((4, 3), np.float32)
  with pytest.raises(ValueError, match="agree in D"):
    evaluate.nearest_neighbours(x, np.zeros((4, 2), np.float32), 1)
  with pytest.raises(ValueError, match="k=4 must be in"):
    evaluate.nearest_neighbours(x, x, 4, exclude_self=True)
  with pytest.raises(ValueError, match="unknown distance"):
    evaluate.nearest_neighbours(x, x, 1, distance="hamming")


def _numpy_retrieval(embeddings, labels, knn_k):
  dist = _numpy_distances(embeddings.astype(np.float64), embeddings.astype(np.float64),
                          "euclidean")
  np.fill_diagonal(dist, np.inf)
  order = np.argsort(dist, axis=1, kind="stable")
  p1, rp, mapr, knn = [], [], [], []
  recall = {k: [] for k in evaluate.RECALL_AT}
  for i, row in enumerate(order):
    neighbour_labels = labels[row[:-1]]
    votes = np.bincount(neighbour_labels[:knn_k], minlength=labels.max() + 1)
    winners = np.flatnonzero(votes == votes.max())
    first = next(l for l in neighbour_labels[:knn_k] if l in winners)
    knn.append(first == labels[i])
    r = int(np.sum(labels == labels[i])) - 1
    if r == 0:
      continue
    for k in recall:
      recall[k].append(np.any(neighbour_labels[:k] == labels[i]))
    rel = neighbour_labels[:r] == labels[i]
    p1.append(rel[0])
    rp.append(rel.mean())
    precision = np.cumsum(rel) / np.arange(1, r + 1)
    mapr.append(np.sum(precision * rel) / r)
  return {"precision_at_1": np.mean(p1), "r_precision": np.mean(rp),
          "mean_average_precision_at_r": np.mean(mapr), "knn_accuracy": np.mean(knn),
          **{f"recall_at_{k}": np.mean(found) for k, found in recall.items()}}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_metrics_match_numpy(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 5, 60)
  labels[0] = 5  # a class of one: skipped by the R-based metrics
  embeddings = (rng.normal(size=(60, 3)) + 1.5 * np.eye(6)[labels][:, :3]).astype(np.float32)
  got = evaluate.retrieval_metrics(embeddings, labels, knn_k=3, block_size=16)
  want = _numpy_retrieval(embeddings, labels, 3)
  assert set(got) == set(want)
  for name, value in want.items():
    assert got[name] == pytest.approx(value, abs=1e-6), name


def test_recall_at_k_counts_a_same_class_example_among_the_k_nearest():
  """By hand, on a line: 0 (class 0), 1 (1), 2.5 (1), 4.2 (0). Nearest others, in order: of 0:
  1, 2.5, 4.2 (first of its class 3rd); of 1: 0, 2.5 (2nd); of 2.5: 1 (1st); of 4.2: 2.5, 1, 0
  (3rd). So Recall@1 = 1/4, @2 = 2/4, @4 = @8 = 4/4 (three others: k = 8 sees all of them)."""
  embeddings = np.array([[0.0], [1.0], [2.5], [4.2]], np.float32)
  got = evaluate.retrieval_metrics(embeddings, np.array([0, 1, 1, 0]))
  assert [got[f"recall_at_{k}"] for k in (1, 2, 4, 8)] == [0.25, 0.5, 1.0, 1.0]
  assert got["precision_at_1"] == got["recall_at_1"]
  cross = evaluate.cross_retrieval_metrics(embeddings[:1], [0], embeddings[1:], [1, 1, 0])
  assert [cross[f"recall_at_{k}"] for k in (1, 2, 4, 8)] == [0.0, 0.0, 1.0, 1.0]


def test_clustering_metrics_by_hand():
  """Points 0, 0, 0, 10 with classes 0, 0, 1, 1: k-means with two clusters must part {0, 0, 0}
  from {10}. The contingency table [[2, 1], [0, 1]] (clusters by classes) of 4 points gives
  MI = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2, H(classes) = ln 2,
  H(clusters) = -(3/4 ln 3/4 + 1/4 ln 1/4); NMI = MI / mean of the entropies."""
  embeddings = np.array([[0.0], [0.0], [0.0], [10.0]])
  labels = np.array([0, 0, 1, 1])
  got = evaluate.clustering_metrics(embeddings, labels)
  mutual = 0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)
  entropies = (np.log(2), -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
  assert got["nmi"] == pytest.approx(mutual / np.mean(entropies), abs=1e-12)
  from sklearn import metrics as sk_metrics
  assert got["ami"] == pytest.approx(sk_metrics.adjusted_mutual_info_score(labels, [0, 0, 0, 1]),
                                     abs=1e-12)
  assert got["ami"] < got["nmi"] < 1.0  # AMI takes off what chance agreement would give


def test_clustering_metrics_are_one_for_perfect_clusters_and_cosine_reads_directions():
  labels = np.repeat(np.arange(4), 5)
  assert evaluate.clustering_metrics(np.eye(4)[labels] * 10, labels) == {"nmi": 1.0, "ami": 1.0}
  # Two directions at very different lengths: one class each by cosine, not by Euclidean.
  scale = np.array([1.0, 50.0, 1.0, 50.0, 2.0, 60.0])[:, None]
  directions = np.array([[1.0, 0.1], [1.0, 0.1], [0.1, 1.0], [0.1, 1.0], [1.0, 0.0], [0.0, 1.0]])
  labels = np.array([0, 0, 1, 1, 0, 1])
  found = evaluate.clustering_metrics(directions * scale, labels, distance="cosine")
  assert found == pytest.approx({"nmi": 1.0, "ami": 1.0})


@pytest.mark.parametrize("seed", [0, 1])
def test_clustering_metrics_equal_scikit_learns_on_k_means_of_the_embeddings(seed):
  from sklearn import cluster, metrics as sk_metrics
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 6, 300)
  embeddings = rng.normal(size=(300, 8)) + 0.8 * np.eye(8)[labels]
  got = evaluate.clustering_metrics(embeddings, labels, seed=3)
  clusters = cluster.KMeans(6, n_init=1, random_state=3).fit_predict(embeddings)
  assert got["nmi"] == sk_metrics.normalized_mutual_info_score(labels, clusters)
  assert got["ami"] == sk_metrics.adjusted_mutual_info_score(labels, clusters)
  assert 0.0 < got["ami"] < got["nmi"] < 1.0
  with pytest.raises(ValueError, match="^clustering_metrics: labels must be"):
    evaluate.clustering_metrics(embeddings, labels[:10])


def test_retrieval_metrics_are_one_for_perfect_clusters():
  labels = np.repeat(np.arange(4), 5)
  embeddings = np.eye(4, dtype=np.float32)[labels] * 10
  got = evaluate.retrieval_metrics(embeddings, labels)
  assert all(value == pytest.approx(1.0) for value in got.values())


@pytest.mark.parametrize("labels,found", [([0, -1, 1, 1], "int64, smallest -1"),
                                          ([0.0, 1.0, 1.0, 0.0], "float64")])
def test_retrieval_metrics_reject_labels_that_are_not_class_ids(labels, found):
  embeddings = np.eye(4, dtype=np.float32)
  with pytest.raises(ValueError, match="^retrieval_metrics: labels must be integer") as error:
    evaluate.retrieval_metrics(embeddings, np.asarray(labels))
  message = str(error.value)
  assert found in message and "renumber" in message and "\n" not in message


def test_best_threshold_is_chosen_on_validation_pairs_only():
  val_scores = np.array([0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
  val_same = np.array([1, 1, 1, 0, 0, 0], bool)
  threshold = evaluate.best_threshold(val_scores, val_same, higher_means_same=False)
  assert 0.3 < threshold < 0.9
  # On the test pairs the tuned threshold (from validation) is worse than the fixed 0.7 would be.
  test_scores = np.array([0.65, 0.65, 0.1, 0.8])
  test_same = np.array([1, 1, 1, 0], bool)
  result = evaluate.pair_verification(test_scores, test_same, val_scores, val_same,
                                      higher_means_same=False, fixed_threshold=0.7)
  assert result["threshold_tuned"] == pytest.approx(0.6)
  assert result["accuracy_tuned"] == pytest.approx(0.5)
  assert result["accuracy_fixed"] == pytest.approx(1.0)
  assert result["roc_auc"] == pytest.approx(1.0)
  assert result["eer"] == pytest.approx(0.0)


def test_equal_error_rate_of_known_cases():
  same = np.array([1, 1, 0, 0], bool)
  assert evaluate.equal_error_rate(np.array([3.0, 2.0, 1.0, 0.0]), same, True) == 0.0
  assert evaluate.equal_error_rate(np.array([0.0, 1.0, 2.0, 3.0]), same, True) == 1.0
  rng = np.random.default_rng(0)
  scores = rng.normal(size=20000)
  same = rng.random(20000) < 0.5
  assert evaluate.equal_error_rate(scores, same, True) == pytest.approx(0.5, abs=0.02)
  # Higher-means-same and distances are mirror images.
  assert evaluate.equal_error_rate(-scores, same, False) == pytest.approx(
      evaluate.equal_error_rate(scores, same, True))


def test_svm_pair_accuracy_learns_separable_features_and_not_noise():
  rng = np.random.default_rng(0)
  same = rng.random(400) < 0.5
  informative = np.abs(rng.normal(size=(400, 4))) + np.where(same, 0.0, 2.0)[:, None]
  assert evaluate.svm_pair_accuracy(informative[:300], same[:300], informative[300:],
                                    same[300:]) > 0.95
  noise = rng.normal(size=(400, 4))
  assert evaluate.svm_pair_accuracy(noise[:300], same[:300], noise[300:], same[300:]) < 0.7


def test_one_shot_accuracy_perfect_for_class_codes_and_chance_for_noise():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(12), 4)
  codes = np.eye(12, dtype=np.float32)[labels] + 0.01 * rng.normal(size=(48, 12))
  key = jax.random.key(0)
  assert evaluate.one_shot_accuracy(key, codes, labels, n_way=5, episodes=50) == 1.0
  noise = rng.normal(size=(48, 12)).astype(np.float32)
  accuracy = evaluate.one_shot_accuracy(key, noise, labels, n_way=5, episodes=400)
  assert 0.1 < accuracy < 0.3  # chance is 0.2
  # A similarity that prefers far-away examples gets everything wrong.
  far = lambda a, b: ((a - b) ** 2).sum(-1)
  assert evaluate.one_shot_accuracy(key, codes, labels, n_way=5, episodes=20,
                                    similarity=far) == 0.0


def test_one_shot_accuracy_uses_only_the_classes_asked_for():
  labels = np.repeat(np.arange(6), 3)
  # Classes 0..2 are confusable (same code), 3..5 distinct: restricted to 3..5 it is perfect.
  codes = np.eye(6, dtype=np.float32)[np.where(labels < 3, 0, labels)]
  key = jax.random.key(1)
  assert evaluate.one_shot_accuracy(key, codes, labels, 3, episodes=30,
                                    classes=np.array([3, 4, 5])) == 1.0
  assert evaluate.one_shot_accuracy(key, codes, labels, 3, episodes=30,
                                    classes=np.array([0, 1, 2])) < 0.7
  group = np.array([0, 0, 0, 1, 1, 1])
  assert evaluate.one_shot_accuracy(key, codes, labels, 3, episodes=30,
                                    group_of_class=group, within_group=True) < 1.0


def test_one_shot_accuracy_compiles_its_episodes_once_per_shape():
  """A run evaluates several models on the same test set: the episode sampler compiles once (a
  fresh program per call cost ~3 s a call, a third of the quick report's time)."""
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(12), 4)
  group = np.arange(12) // 6
  before = evaluate._episode_embeddings._cache_size()
  results = [evaluate.one_shot_accuracy(
      jax.random.key(0), rng.normal(size=(48, 8)).astype(np.float32), labels, 5, episodes=30,
      similarity=lambda a, b, s=scale: -s * ((a - b) ** 2).sum(-1), group_of_class=group,
      within_group=True) for scale in (1.0, 2.0, 3.0)]
  assert evaluate._episode_embeddings._cache_size() == before + 1
  assert len(set(results)) > 1  # the three embeddings were really scored


# --------------------------------------------------------------------- every distinct pair

def _brute_best_threshold(scores, same, higher_means_same):
  values = np.unique(np.asarray(scores, np.float64))
  candidates = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2,
                               [values[-1] + 1.0]])
  accuracies = [evaluate.accuracy_at_threshold(scores, same, t, higher_means_same)
                for t in candidates]
  return float(candidates[int(np.argmax(accuracies))])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("higher_means_same", [True, False])
def test_best_threshold_from_counts_is_the_brute_force_one(seed, higher_means_same):
  """Cumulative counts (O(M log M), for the 10^5 pairs of predict evaluate) pick the threshold
  that trying every candidate picked, ties included."""
  rng = np.random.default_rng(seed)
  size = int(rng.integers(1, 60))
  scores = rng.integers(0, 5, size).astype(float) if seed % 2 else rng.normal(size=size)
  same = rng.random(size) < rng.random()
  assert evaluate.best_threshold(scores, same, higher_means_same) == _brute_best_threshold(
      scores, same, higher_means_same)


def test_distinct_pairs_are_every_pair_once_or_a_seeded_sample():
  labels = np.repeat(np.arange(4), 5)  # 4 * 10 same pairs, 190 - 40 = 150 different
  every = evaluate.distinct_pairs(labels, 10_000)
  pairs = set(zip(every["idx_a"].tolist(), every["idx_b"].tolist()))
  assert len(pairs) == 190 == len(every["same"]) and all(a < b for a, b in pairs)
  assert (every["same"].sum(), every["positives_total"], every["negatives_total"]) == (40, 40, 150)
  capped = evaluate.distinct_pairs(labels, 30, seed=1)
  assert capped["same"].sum() == 30 and (~capped["same"]).sum() == 30
  again = evaluate.distinct_pairs(labels, 30, seed=1)
  np.testing.assert_array_equal(capped["idx_a"], again["idx_a"])
  assert np.array_equal(capped["same"], labels[capped["idx_a"]] == labels[capped["idx_b"]])


def test_distinct_pairs_of_a_large_set_are_sampled_without_listing_them(monkeypatch):
  monkeypatch.setattr(evaluate, "_ENUMERATE_PAIRS", 100)
  labels = np.repeat(np.arange(10), 30)
  drawn = evaluate.distinct_pairs(labels, 500, seed=0)
  pairs = set(zip(drawn["idx_a"].tolist(), drawn["idx_b"].tolist()))
  assert len(pairs) == 1000 and all(a < b for a, b in pairs)
  assert drawn["same"].sum() == 500 and drawn["negatives_total"] == 300 * 299 // 2 - 10 * 435


def test_tar_at_far_needs_enough_impostor_pairs():
  """A FAR of 1e-3 is not measurable on 999 different pairs, and is on 1000."""
  rng = np.random.default_rng(0)
  for negatives, measurable in ((999, False), (1000, True)):
    scores = np.concatenate([rng.normal(0, 1, 100), rng.normal(3, 1, negatives)])
    same = np.arange(len(scores)) < 100
    found = evaluate.tar_at_far(scores, same, 1e-3, higher_means_same=False)
    assert (found is not None) == measurable
  perfect = evaluate.tar_at_far(np.r_[np.zeros(10), np.ones(20)], np.arange(30) < 10, 0.1, False)
  assert perfect == 1.0


def test_kfold_accuracy_chooses_each_threshold_on_the_other_folds():
  rng = np.random.default_rng(0)
  same = np.arange(200) < 100
  separable = evaluate.kfold_accuracy(np.where(same, 0.2, 0.8) + rng.normal(0, .01, 200), same,
                                      higher_means_same=False)
  assert separable["mean"] == 1.0 and separable["std"] == 0.0 and len(separable["thresholds"]) == 10
  noise = evaluate.kfold_accuracy(rng.normal(size=2000), np.arange(2000) < 1000, True)
  assert 0.4 < noise["mean"] < 0.6  # a threshold fitted to noise does not carry to held-out pairs
  with pytest.raises(ValueError, match="cannot make 10 folds"):
    evaluate.kfold_accuracy(np.zeros(5), np.ones(5, bool), True)


def test_one_shot_identification_is_perfect_for_class_codes():
  labels = np.repeat(np.arange(5), 4)
  codes = np.eye(5)[labels] + np.random.default_rng(0).normal(0, 0.01, (20, 5))
  similarity = lambda a, b: -np.linalg.norm(a - b, axis=1)
  found = evaluate.one_shot_identification(similarity, codes, codes, labels, draws=3)
  assert found == {"accuracy": 1.0, "std": 0.0, "queries": 15, "classes": 5, "draws": 3}
