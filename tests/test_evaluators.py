"""siamese_jax.evaluators: the registry's contract, every evaluator on a tiny synthetic run (an
untrained MLP: what is computed, not how well), the context's pairs and embeddings, and the run's
keys derived in one place."""

import re
import types

import jax
import numpy as np
import pytest

from siamese_jax import evaluate, evaluators, run_keys, scoring, sharding
from siamese_jax.data import LabelledImages
from tests.helpers import REPO_ROOT
from tests.test_inference import initial_state, small_config

CLASSES = 12  # the test part: two groups of six classes, five images each


def _part(classes: int, per_class: int, seed: int, groups: bool = False) -> LabelledImages:
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(classes), per_class).astype(np.int32)
  # Each class a brightness band, so the untrained model still tells some classes apart.
  images = np.clip(labels[:, None, None, None] * 20 + rng.integers(0, 30, (len(labels), 28, 28, 1)),
                   0, 255).astype(np.uint8)
  return LabelledImages(images, labels, classes, f"synthetic {seed}",
                        groups=(labels // (classes // 2)).astype(np.int32) if groups else None,
                        group_names=["a", "b"] if groups else None,
                        class_names=[f"class{seed}_{c}" for c in range(classes)])


def _datasets(by: str = "classes"):
  return types.SimpleNamespace(train=_part(6, 10, 1), validation=_part(6, 6, 2),
                               test=_part(CLASSES, 5, 3, groups=True), split={"by": by})


def _config(head: str = "distance", **data):
  config = small_config(head)
  config.eval.pairs = 100
  config.data.update(data)
  return config


def _report_context(config=None, datasets=None):
  config = config or _config(train_classes=(0, 1, 2, 3))
  state = initial_state(config)
  return evaluators.for_report(config, state.params, state.apply_fn, datasets or _datasets(),
                               num_pairs=100, episodes=20)


# ------------------------------------------------------------------------------ registry

def test_every_evaluator_is_one_module_named_for_it_with_a_record():
  assert {"pairs", "calibration", "retrieval", "one_shot", "svm"} <= set(evaluators.EVALUATORS)
  for name, evaluator in evaluators.EVALUATORS.items():
    assert isinstance(evaluator, evaluators.Evaluator) and evaluator.name == name
    assert evaluator.run.__module__ == f"siamese_jax.evaluators.{name}"
    assert evaluator.summary in (None, "test", "validation")
    assert callable(evaluator.applies)


def test_an_unknown_evaluator_is_a_one_line_error_naming_the_fix():
  with pytest.raises(KeyError, match="not one of pairs.*evaluators/__init__.py"):
    evaluators.run("no_such", _report_context())


EXPECTED = {
    "pairs": {"accuracy_fixed", "accuracy_tuned", "threshold_tuned", "roc_auc", "eer"},
    "validation_pairs": {"accuracy", "roc_auc"},
    "retrieval": {"retrieval"},
    "clustering": {"clustering"},
    "one_shot": {"one_shot"},
    "validation_one_shot": {"one_shot"},
    "calibration": {"threshold", "target", "higher_means_same", "notice", "validation", "test"},
    "svm": {"svm_learned", "svm_raw_pixels"},
    "elongation": {"elongation"},
    "cross_retrieval": {"cross_precision_at_1", "cross_map_at_r"},
    "new_classes": {"seen_accuracy", "seen_roc_auc", "seen_2way", "new_accuracy", "new_roc_auc",
                    "new_2way", f"all_{CLASSES}way"},
    "distinct_pairs": {"pairs", "roc_auc", "eer", "tar_at_far"},
    "kfold_accuracy": {"kfold_accuracy"},
    "identification": {"one_shot_identification"},
}


def _rates(found: dict):
  """Every figure of ``found`` that is a rate (not a threshold or a spread)."""
  for key, value in found.items():
    if isinstance(value, dict):
      yield from _rates(value)
    elif isinstance(value, float) and key not in ("threshold", "threshold_tuned", "elongation"):
      yield key, value


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_evaluator_gives_its_figures_on_a_tiny_run(name):
  found = evaluators.run(name, _report_context())
  assert set(found) == EXPECTED[name]
  for key, value in _rates(found):
    assert 0.0 <= value <= 1.0, (key, value)
  if name in ("one_shot", "validation_one_shot"):  # 20- and 10-way: too few classes, left out
    assert set(found["one_shot"]) == {"5_way"}
  if name == "retrieval":
    assert set(found["retrieval"]) == {"precision_at_1", "r_precision",
                                       "mean_average_precision_at_r", "knn_accuracy",
                                       "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8"}
  if name == "clustering":
    assert set(found["clustering"]) == {"nmi", "ami"}
  if name == "elongation":
    assert found["elongation"] >= 1.0


def test_a_folder_context_scores_every_distinct_pair_of_its_images():
  """predict evaluate's context: 12 classes of 5 images hold 120 same and 1650 different
  distinct pairs; each evaluator of FOLDER_EVALUATORS reads them, and 1650 impostors measure a
  FAR of 1e-3 while a cap of 500 does not."""
  config = _config()
  state = initial_state(config)
  test = _part(CLASSES, 5, 3)
  context = evaluators.for_folder(config, state.params, state.apply_fn, test, folds=5)
  scores, same, drawn = context.distinct_pairs("test")
  assert (same.sum(), (~same).sum()) == (120, 1650) and len(scores) == 1770
  assert len({(a, b) for a, b in zip(drawn["idx_a"], drawn["idx_b"])}) == 1770
  assert np.all(drawn["idx_a"] < drawn["idx_b"])
  found = {}
  for name in evaluators.FOLDER_EVALUATORS:
    found.update(evaluators.run(name, context))
  assert set(found["tar_at_far"]) == {"0.1", "0.01", "0.001"}
  assert all(value is not None for value in found["tar_at_far"].values())
  assert found["kfold_accuracy"]["pairs"] == 240 and len(found["kfold_accuracy"]["accuracies"]) == 5
  assert found["one_shot_identification"]["queries"] == CLASSES * 4
  capped = evaluators.for_folder(config, state.params, state.apply_fn, test, max_pairs=500)
  figures = evaluators.run("distinct_pairs", capped)
  assert figures["pairs"] == {"same": 120, "different": 500, "same_total": 120,
                              "different_total": 1650}
  assert figures["tar_at_far"]["0.001"] is None and figures["tar_at_far"]["0.01"] is not None


def test_bce_head_reads_the_initial_head_and_the_test_logits():
  context = _report_context(_config("abs_diff"))
  assert evaluators.EVALUATORS["bce_head"].applies(context)
  found = evaluators.run("bce_head", context)
  assert set(found) == {"head_init_positive", "logit_std", "logit_saturated"}
  assert found["head_init_positive"] in (0.0, 1.0) and found["logit_std"] >= 0
  assert not evaluators.EVALUATORS["bce_head"].applies(_report_context())


def test_calibration_aims_at_the_contexts_false_accept_rate():
  context = _report_context()
  best = evaluators.run("calibration", context)
  strict = evaluators.run("calibration", context.replace(far=0.0))
  assert best["target"] == "accuracy" and strict["target"] == "far<=0"
  assert strict["validation"]["far"] == 0.0


# ------------------------------------------------------------------ a run's summary

@pytest.mark.parametrize("unseen,by", [(True, "classes"), (False, "images")])
def test_a_runs_summary_holds_the_evaluators_that_apply_to_it(unseen, by):
  config = _config()
  state = initial_state(config)
  context = evaluators.for_run(config, state.params, state.apply_fn, _datasets(by),
                               unseen_test_classes=unseen)
  found = evaluators.summary_figures(context)
  assert EXPECTED["pairs"] <= set(found["test"])
  assert EXPECTED["validation_pairs"] <= set(found["validation"])
  assert ({"retrieval", "one_shot"} <= set(found["test"])) == unseen  # new classes only
  assert ("one_shot" in found["validation"]) == (by == "classes")  # held-out classes only


# ------------------------------------------------------------------------- the context

def test_a_context_scores_each_parts_pairs_and_embeddings_once():
  context = _report_context()
  assert context.pairs("test") is context.pairs("test")
  assert context.embeddings("test") is context.embeddings("test")
  assert context.replace(views=False).cache is context.cache  # keyed by views
  assert context.replace(params=context.params).cache == {}  # another model: computed again


def test_pairs_scored_from_embeddings_are_the_pair_scorers_pairs_and_scores():
  """The report scores a small split's pairs from each image's embedding: the same pairs (same
  key) and the same scores as evaluate.make_pair_scorer, which embeds every pair's images."""
  config = small_config()
  state = initial_state(config)
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(6), 10)
  split = types.SimpleNamespace(images=rng.integers(0, 255, (60, 28, 28, 1), np.uint8),
                                labels=labels, num_classes=6)
  pair_scoring = scoring.pair_scoring_from_config(config)
  key = jax.random.key(3)
  data = sharding.device_data(split.images, labels, 6, sharding.make_mesh(jax.devices()[:1]))
  for num_pairs in (100, 1000):  # one batch of 100; two of 500
    context = evaluators.for_report(config, state.params, state.apply_fn, None, num_pairs, 20)
    scores, same = context.score_pairs(split, key, "balanced")
    expected_scores, expected_same = jax.device_get(evaluate.make_pair_scorer(
        state.apply_fn, pair_scoring, num_pairs, "balanced")(state.params, data, key))
    np.testing.assert_array_equal(same, expected_same)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    assert len(same) == num_pairs and 0 < same.mean() < 1


def test_cluster_elongation_tells_round_from_spindly():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1], 500)
  round_points = rng.normal(size=(1000, 2))
  spindly = round_points * np.array([5.0, 0.5])
  elongation = evaluators.elongation.cluster_elongation
  assert elongation(round_points, labels) == pytest.approx(1.0, abs=0.15)
  assert elongation(spindly, labels) == pytest.approx(10.0, rel=0.15)


# ------------------------------------------------------------------------------- keys

def test_the_runs_keys_are_split_from_its_seed_and_the_run_evaluates_with_the_third():
  data = jax.random.key_data
  want = jax.random.split(jax.random.key(3), 3)
  got = run_keys.run_keys(3)
  for mine, theirs in zip(got, want):
    np.testing.assert_array_equal(data(mine), data(theirs))
  config = _config()
  config.seed = 3
  state = initial_state(config)
  context = evaluators.for_run(config, state.params, state.apply_fn, _datasets())
  for key in (context.key, context.pair_keys["validation"], context.pair_keys["test"]):
    np.testing.assert_array_equal(data(key), data(got.evaluation))
  report = evaluators.for_report(config, state.params, state.apply_fn, _datasets(), 100, 20)
  np.testing.assert_array_equal(data(report.key), data(run_keys.report_key(3)))


def test_no_other_module_derives_a_key_from_the_seed():
  derives = re.compile(r"random\.(key|PRNGKey)\([^)]*\.seed\b")
  found = [str(path.relative_to(REPO_ROOT)) for folder in ("siamese_jax", "scripts")
           for path in (REPO_ROOT / folder).rglob("*.py")
           if path.name != "run_keys.py" and derives.search(path.read_text())]
  assert not found, f"{found} derive keys from the seed: use siamese_jax.run_keys"
