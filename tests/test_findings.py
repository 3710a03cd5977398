"""experiments/findings.py: every arm is a config, and each finding's verdict judges its claim
from the arms' numbers (stats: {arm: {metric: [one value a seed]}})."""

import json

import pytest

from experiments import findings
from scripts import report_markdown
from tests.helpers import REPO_ROOT


def _finding(key):
  return next(f for f in findings.FINDINGS if f.key == key)


def test_every_verdict_reads_the_committed_reports_numbers():
  """docs/results.json holds every arm's numbers of the last full report: each finding's verdict
  gives a sentence from them, and says which arm it lacks (KeyError) when one is left out."""
  results = json.loads((REPO_ROOT / "docs" / "results.json").read_text())
  others = {"_meta", *report_markdown.OTHER_SECTIONS}  # e.g. the loss benchmark's section
  assert [f.key for f in findings.FINDINGS] == [k for k in results if k not in others]
  for finding in findings.FINDINGS:
    reproduced, sentence = findings.verdict(finding, results[finding.key])
    assert reproduced in (True, False, None) and sentence and "nan" not in sentence, finding.key
  with pytest.raises(KeyError, match="without_abs"):
    findings.verdict(_finding("abs"), {"with_abs": results["abs"]["with_abs"]})


def test_heads_verdict_needs_distance_heads_to_work_and_dense_heads_to_fail():
  def stats(distance, abs_diff, concat, subtract):
    return {"distance": {"accuracy_fixed": [distance] * 3},
            "abs_diff": {"accuracy_tuned": [abs_diff] * 3},
            "concat": {"accuracy_tuned": [concat] * 3},
            "subtract": {"accuracy_tuned": [subtract] * 3}}
  assert findings.verdict(_finding("heads"), stats(0.97, 0.95, 0.5, 0.52))[0] is True
  assert findings.verdict(_finding("heads"), stats(0.97, 0.95, 0.9, 0.52))[0] is False
  reproduced, sentence = findings.verdict(_finding("heads"), stats(0.6, 0.95, 0.5, 0.5))
  assert reproduced is False and "60.0 %" in sentence


def test_abs_and_svm_verdicts_compare_the_arms():
  abs_stats = lambda a, b: {"with_abs": {"accuracy_tuned": [a]},
                            "without_abs": {"accuracy_tuned": [b]}}
  assert findings.verdict(_finding("abs"), abs_stats(0.95, 0.5))[0] is True
  assert findings.verdict(_finding("abs"), abs_stats(0.95, 0.93))[0] is False
  svm = lambda a, b: {"bce_abs": {"svm_learned": [a], "svm_raw_pixels": [b]}}
  assert findings.verdict(_finding("svm"), svm(0.8, 0.74))[0] is True
  assert findings.verdict(_finding("svm"), svm(0.7, 0.74))[0] is False


def test_omniglot_verdict_is_issue_16s_target_for_the_default_config():
  def stats(twenty, five):  # an ablation arm above the default does not count: chosen on test
    return {"contrastive": {"oneshot_20way": [0.4], "oneshot_5way": [0.7], "train_minutes": [2]},
            "no_affine": {"oneshot_20way": [0.9], "oneshot_5way": [0.99], "train_minutes": [9]},
            "cosine_classifier": {"oneshot_20way": [twenty] * 3, "oneshot_5way": [five] * 3,
                                  "train_minutes": [20] * 3},
            "raw pixels": {"oneshot_20way": [0.15], "oneshot_5way": [0.4]}}
  reproduced, sentence = findings.verdict(_finding("omniglot"), stats(0.85, 0.95))
  assert reproduced is True and "cosine_classifier" in sentence and "85.0 %" in sentence
  assert findings.verdict(_finding("omniglot"), stats(0.85, 0.9))[0] is False
  assert findings.verdict(_finding("omniglot"), stats(0.75, 0.95))[0] is False


def test_omniglot_verdict_gives_each_ablation_arm_against_the_default_at_its_length():
  def arm(twenty, minutes):
    return {"oneshot_20way": twenty, "oneshot_5way": [0.9] * len(twenty),
            "train_minutes": [minutes] * len(twenty)}
  stats = {"cosine_classifier": arm([0.8] * 3, 28), "epochs_12": arm([0.72, 0.73, 0.74], 6),
           "no_elastic": arm([0.70] * 3, 7), "no_new_classes": arm([0.58, 0.57, 0.59], 1),
           "contrastive": arm([0.4], 2), "raw pixels": arm([0.15], 0)}
  sentence = findings.verdict(_finding("omniglot"), stats)[1]
  ablation = sentence.split("against epochs_12's 73.0 % (std 0.8; 6 min): ")[1]
  assert ablation == ("no_elastic -3.0 points (std 0.0; 7 min), "
                      "no_new_classes -15.0 points (std 0.8; 1 min)")  # best first; unrun left out
  del stats["epochs_12"]
  assert "At the same length" not in findings.verdict(_finding("omniglot"), stats)[1]


def test_towers_verdict_needs_a_separate_tower_arm_at_auc_0_9():
  def stats(shared, separate, mixed):
    arm = lambda auc: {"roc_auc": [auc] * 3, "accuracy_tuned": [auc - 0.05] * 3,
                       "cross_precision_at_1": [auc] * 3, "cross_map_at_r": [auc - 0.1] * 3}
    return {"shared": arm(shared), "separate": arm(separate), "convnet_and_mlp": arm(mixed)}
  reproduced, sentence = findings.verdict(_finding("towers"), stats(0.95, 0.93, 0.97))
  assert reproduced is True and "convnet_and_mlp" in sentence and "97.0 %" in sentence
  assert "above one shared tower" in sentence  # 2 points apart, no spread over seeds
  reproduced, sentence = findings.verdict(_finding("towers"), stats(0.95, 0.85, 0.88))
  assert reproduced is False and "below one shared" in sentence
  spread = stats(0.95, 0.93, 0.96)
  spread["convnet_and_mlp"]["roc_auc"] = [0.94, 0.96, 0.98]  # std 1.6 points > the 1-point gap
  assert "no different from one shared" in findings.verdict(_finding("towers"), spread)[1]


def test_new_classes_verdict_is_the_worst_mnist_arm_on_digits_8_and_9():
  def arm(new_auc):
    return {"new_roc_auc": [new_auc] * 3, "new_accuracy": [0.8] * 3, "new_2way": [0.9] * 3,
            "seen_roc_auc": [0.99] * 3, "seen_accuracy": [0.95] * 3, "seen_2way": [0.99] * 3,
            "all_10way": [0.8] * 3}
  stats = lambda mnist, fashion: {"mnist": arm(mnist), "fashion_mnist": arm(fashion)}
  assert findings.verdict(_finding("new_classes"), stats(0.95, 0.6))[0] is True
  reproduced, sentence = findings.verdict(_finding("new_classes"), stats(0.85, 0.99))
  assert reproduced is False and "85.0 %" in sentence


def test_table_verdict_ties_the_bce_outcome_to_the_heads_initial_sign():
  finding = _finding("table")
  stats = {arm.name: {"mean_average_precision_at_r": [0.5] * 3} for arm in finding.arms}
  for arm in ("bce_mnist", "mlp_bce_mnist"):
    stats[arm].update(roc_auc=[0.45, 0.95, 0.5], head_init_positive=[1.0, 0.0, 1.0],
                      train_loss=[0.693, 0.3, 0.694], logit_std=[0.01, 3.0, 0.02],
                      logit_saturated=[0.0, 0.1, 0.0])
  sentence = findings.verdict(finding, stats)[1]
  assert "4 of 6 runs stay at chance" in sentence and "4 of them" in sentence
  assert "2 of the 2 runs that start otherwise learn" in sentence
  assert "bce_mnist (learning rate 0.001) 47.5 %" in sentence and "std 0.01" in sentence
  stats["bce_mnist"]["roc_auc"] = [0.9, 0.95, 0.5]  # a run that learnt although it started > 0
  sentence = findings.verdict(finding, stats)[1]
  assert "3 of 6 runs stay at chance" in sentence
  assert "bce_mnist (learning rate 0.001) 70.0 %" in sentence
