"""The results report (scripts/make_report.py): verdict arithmetic and a quick end-to-end run."""

import importlib.util
import json

import numpy as np
import pytest

from experiments import findings
from tests.helpers import REPO_ROOT
_spec = importlib.util.spec_from_file_location("make_report", REPO_ROOT / "scripts" / "make_report.py")
make_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_report)


def _finding(key):
  return next(f for f in findings.FINDINGS if f.key == key)


def test_heads_verdict_needs_distance_heads_to_work_and_dense_heads_to_fail():
  def stats(distance, abs_diff, concat, subtract):
    return {"distance": {"accuracy_fixed": [distance] * 3},
            "abs_diff": {"accuracy_tuned": [abs_diff] * 3},
            "concat": {"accuracy_tuned": [concat] * 3},
            "subtract": {"accuracy_tuned": [subtract] * 3}}
  assert make_report.verdict(_finding("heads"), stats(0.97, 0.95, 0.5, 0.52))[0] is True
  assert make_report.verdict(_finding("heads"), stats(0.97, 0.95, 0.9, 0.52))[0] is False
  reproduced, sentence = make_report.verdict(_finding("heads"), stats(0.6, 0.95, 0.5, 0.5))
  assert reproduced is False and "60.0 %" in sentence


def test_abs_and_svm_verdicts_compare_the_arms():
  abs_stats = lambda a, b: {"with_abs": {"accuracy_tuned": [a]}, "without_abs": {"accuracy_tuned": [b]}}
  assert make_report.verdict(_finding("abs"), abs_stats(0.95, 0.5))[0] is True
  assert make_report.verdict(_finding("abs"), abs_stats(0.95, 0.93))[0] is False
  svm = lambda a, b: {"bce_abs": {"svm_learned": [a], "svm_raw_pixels": [b]}}
  assert make_report.verdict(_finding("svm"), svm(0.8, 0.74))[0] is True
  assert make_report.verdict(_finding("svm"), svm(0.7, 0.74))[0] is False


def test_omniglot_verdict_is_issue_16s_target_for_the_best_arm():
  def stats(twenty, five):
    return {"contrastive": {"oneshot_20way": [0.4], "oneshot_5way": [0.7], "train_minutes": [2]},
            "cosine_classifier": {"oneshot_20way": [twenty] * 3, "oneshot_5way": [five] * 3,
                                  "train_minutes": [20] * 3},
            "raw pixels": {"oneshot_20way": [0.15], "oneshot_5way": [0.4]}}
  reproduced, sentence = make_report.verdict(_finding("omniglot"), stats(0.85, 0.95))
  assert reproduced is True and "cosine_classifier" in sentence and "85.0 %" in sentence
  assert make_report.verdict(_finding("omniglot"), stats(0.85, 0.9))[0] is False
  assert make_report.verdict(_finding("omniglot"), stats(0.75, 0.95))[0] is False


def test_cluster_elongation_tells_round_from_spindly():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1], 500)
  round_points = rng.normal(size=(1000, 2))
  spindly = round_points * np.array([5.0, 0.5])
  assert make_report.cluster_elongation(round_points, labels) == pytest.approx(1.0, abs=0.15)
  assert make_report.cluster_elongation(spindly, labels) == pytest.approx(10.0, rel=0.15)


def test_unknown_finding_is_a_one_line_error(capsys):
  assert make_report.main(["--only", "nope"]) == 2
  assert "unknown finding" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_report_of_every_finding_writes_tables_verdicts_and_figures(tmp_path, tfds_dir):
  """The whole report in quick mode (every arm of every finding, 2 seeds: ~3 min on 2 cores)."""
  out, runs = tmp_path / "docs", tmp_path / "runs"
  common = ["--quick", "--seeds", "2", "--runs", str(runs), "--out", str(out),
            "--tfds_data_dir", tfds_dir]
  assert make_report.main(common) == 0
  text = (out / "results_quick.md").read_text()
  for finding in findings.FINDINGS:
    assert f"## {finding.title}" in text
    assert f"| {finding.title} | " in text  # its row in the verdict table
    for arm in finding.arms:
      assert f"| {arm.name} |" in text
  assert "| with_abs |" in text and "| without_abs |" in text
  assert "SVM learned" in text and "SVM pixels" in text
  assert "20-way" in text and "| raw pixels |" in text
  assert "Quick mode" in text
  assert (out / "figures" / "optimizer_latent.png").stat().st_size > 1000
  # A rerun reuses the finished runs (no training) and gives the same numbers.
  first = (out / "results_quick.json").read_text()
  assert make_report.main(common + ["--only", "abs,svm,optimizer"]) == 0
  second = json.loads((out / "results_quick.json").read_text())
  strip = lambda results: {k: {a: {m: v for m, v in d.items() if m != "train_seconds"}
                               for a, d in arms.items()} for k, arms in results.items()}
  assert strip(second) == {k: v for k, v in strip(json.loads(first)).items() if k in second}
