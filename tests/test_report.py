"""The results report (scripts/make_report.py, scripts/report_markdown.py): reusing runs, the
sections kept and the verdict sentences with unrun arms, and a quick end-to-end run."""

import importlib.util
import json

import pytest

from experiments import default, findings
from scripts import report_markdown
from siamese_jax import config_checks
from tests.helpers import REPO_ROOT
_spec = importlib.util.spec_from_file_location("make_report", REPO_ROOT / "scripts" / "make_report.py")
make_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_report)


def _finding(key):
  return next(f for f in findings.FINDINGS if f.key == key)


def test_a_finding_trained_arm_by_arm_names_its_short_and_unrun_arms():
  finding = _finding("omniglot")
  stats = {"contrastive": {"oneshot_20way": [0.4], "oneshot_5way": [0.7], "train_minutes": [2]},
           "cosine_classifier": {"oneshot_20way": [0.79] * 3, "oneshot_5way": [0.93] * 3,
                                 "train_minutes": [17] * 3},
           "raw pixels": {"oneshot_20way": [0.15], "oneshot_5way": [0.4]}}
  workdirs = {"contrastive": ["a"], "cosine_classifier": ["b", "c", "d"]}
  reproduced, sentence = report_markdown.verdict_with_unrun_arms(finding, stats, workdirs,
                                                                  [0, 1, 2])
  assert reproduced is False
  assert "Seeds run so far: contrastive 1 of 3" in sentence and "cosine_classifier 3" not in sentence
  unrun = sentence.split("Not yet run: ")[1]
  assert "no_elastic" in unrun and "koch_l1_bce" in unrun and "cosine_classifier" not in unrun
  heads = {"distance": {"accuracy_fixed": [0.97]}, "abs_diff": {"accuracy_tuned": [0.95]}}
  reproduced, sentence = report_markdown.verdict_with_unrun_arms(
      _finding("heads"), heads, {"distance": ["a"], "abs_diff": ["b"]}, [0])
  assert reproduced is None and sentence.startswith("no verdict")  # it compares concat, subtract
  assert "Not yet run: concat, subtract" in sentence
  all_run = {arm.name: ["w"] * 3 for arm in finding.arms}
  assert report_markdown.verdict_with_unrun_arms(finding, stats, all_run, [0, 1, 2])[1] == (
      findings.verdict(finding, stats)[1])


def test_unknown_finding_is_a_one_line_error(capsys):
  assert make_report.main(["--only", "nope"]) == 2
  assert "unknown finding" in capsys.readouterr().err


# The quick report's test trains one arm of each finding (two of abs, to compare them): every
# section, verdict, extra evaluation (SVM, latent figures, retrieval, two sources, new classes,
# one-shot) and model kind (MLP, EmbeddingNet, convnet4, separate towers; distance, logit and
# classifier heads; contrastive, BCE, triplet, cross-entropy losses) runs; every other arm must
# be named as not yet run or show the run of an identical quick config. Every arm's config is
# validated below, without training. keras/contrastive, not omniglot's contrastive arm too (a
# second convnet4 run, 30 s: cosine_classifier runs convnet4 and the one-shot episodes).
QUICK_TEST_ARMS = ("keras/contrastive", "abs_diff", "with_abs", "without_abs",
                   "input_dropout_0.2", "lr_0.01", "batch_128", "adam", "margin_1", "bce_abs",
                   "triplet_mnist", "convnet_and_mlp", "mnist", "cosine_classifier")


def _trained_in_test(finding, arm) -> bool:
  return make_report.selected_arm(finding, arm, QUICK_TEST_ARMS)


def test_every_arm_of_every_finding_is_a_valid_config_in_both_modes():
  for finding in findings.FINDINGS:
    for arm in finding.arms:
      for mode in ("quick", "full"):
        config = make_report.arm_config(finding, arm, 0, mode)
        config_checks.validate(config)  # raises the one-line error a run would stop on
        assert (config.train.epochs == 1) == (mode == "quick"), (finding.key, arm.name, mode)
  assert all(any(_trained_in_test(finding, arm) for arm in finding.arms)
             for finding in findings.FINDINGS)
  omniglot = _finding("omniglot")  # its contrastive arm is not keras/contrastive
  assert not _trained_in_test(omniglot, next(a for a in omniglot.arms if a.name == "contrastive"))


@pytest.mark.slow
def test_quick_report_of_every_finding_writes_tables_verdicts_and_figures(tmp_path, tfds_dir):
  """The whole report in quick mode, one arm of each finding trained (QUICK_TEST_ARMS)."""
  out, runs = tmp_path / "docs", tmp_path / "runs"
  common = ["--quick", "--seeds", "1", "--runs", str(runs), "--out", str(out),
            "--tfds_data_dir", tfds_dir, "--train_only", ",".join(QUICK_TEST_ARMS)]
  assert make_report.main(common) == 0
  text = (out / "results_quick.md").read_text()
  for finding in findings.FINDINGS:
    assert f"## {finding.title}" in text
    assert f"| {finding.title} | " in text  # its row in the verdict table
    section = text.split(f"## {finding.title}")[1].split("\n## ")[0]
    not_run = (section.split("Not yet run: ")[1].split(" (make_report")[0].split(", ")
               if "Not yet run: " in section else [])
    for arm in finding.arms:  # a row, or named as not run (an arm whose quick config is another
      shown = f"| {arm.name} |" in section  # trained arm's, e.g. heads/distance, has its run)
      assert shown != (arm.name in not_run), (finding.key, arm.name)
      assert shown or not _trained_in_test(finding, arm), (finding.key, arm.name)
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


def _write_run(folder, config, epochs=None, image_size=28):
  folder.mkdir(parents=True)
  (folder / "config.json").write_text(config.to_json_best_effort())
  (folder / "summary.json").write_text(json.dumps(
      {"epochs": epochs or config.train.epochs,
       "splits": {"train": {"shape": [10, image_size, image_size, 1]}}}))


def test_compatible_run_ignores_keys_added_at_their_default_only(tmp_path):
  from experiments import contrastive
  old = contrastive.get_config()
  _write_run(tmp_path / "old", old)
  saved = json.loads((tmp_path / "old" / "config.json").read_text())
  del saved["data"]["source_b"]  # a key added since the run
  (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
  assert make_report.compatible_run(contrastive.get_config(), tmp_path) == tmp_path / "old"
  other = contrastive.get_config()
  other.data.source_b = "uci_digits"  # the new key away from its default: another run
  assert make_report.compatible_run(other, tmp_path) is None
  other = contrastive.get_config()
  other.optimizer.learning_rate = 0.5
  assert make_report.compatible_run(other, tmp_path) is None
  longer = contrastive.get_config()
  longer.train.epochs += 1  # not finished for this many epochs
  assert make_report.compatible_run(longer, tmp_path) is None


def test_compatible_run_takes_a_run_that_drew_more_plots_not_fewer(tmp_path):
  """`python main.py`'s run (latent plots and their GIF on) is the report's run without them:
  plots change nothing in training. A run without the latent plots a finding shows is not."""
  from experiments import contrastive
  _write_run(tmp_path / "plotted", contrastive.get_config())  # plots on: the default
  report = default.override(contrastive.get_config(),
                            {"plots.animation": False, "plots.latent": False})
  assert make_report.compatible_run(report, tmp_path) == tmp_path / "plotted"
  _write_run(tmp_path / "bare" / "run", report)
  assert make_report.compatible_run(contrastive.get_config(), tmp_path / "bare") is None


def test_compatible_run_takes_values_the_run_filled_in_from_its_data(tmp_path):
  from experiments import contrastive
  ran = contrastive.get_config()
  ran.data.image_size = 28  # as a run that set it from its images wrote it
  ran.model.features = (7, 7)  # the keras_mlp encoder does not read it
  _write_run(tmp_path / "run", ran)
  assert make_report.compatible_run(contrastive.get_config(), tmp_path) == tmp_path / "run"
  resized = contrastive.get_config()
  ran.data.image_size = 32
  _write_run(tmp_path / "resized", ran, image_size=32)
  assert make_report.compatible_run(resized, tmp_path / "resized") is None


def test_only_keeps_the_other_findings_sections_of_the_last_report(tmp_path):
  path = tmp_path / "results.md"
  abs_stats = {"with_abs": {"accuracy_tuned": [0.95]}, "without_abs": {"accuracy_tuned": [0.5]}}
  svm_stats = {"bce_abs": {"svm_learned": [0.8]}}  # its arm changed: svm_raw_pixels missing
  path.with_suffix(".json").write_text(json.dumps({
      "abs": abs_stats, "svm": svm_stats, "heads": {"distance": {}},
      "_meta": {"runs": {"abs": {"runs/a": 60.0}}, "figures": {}}}))
  sections, figures, runs = [(_finding("keras"), {}, (None, ""))], {}, {}
  kept = report_markdown.keep_earlier_sections(path, sections, figures, runs)
  assert kept == ["heads", "abs", "svm"]
  assert [f.key for f, _, _ in sections] == ["keras", "heads", "abs", "svm"]  # FINDINGS order
  assert sections[2][2][0] is True and runs["abs"] == {"runs/a": 60.0}
  assert "not yet run" in sections[1][2][1] and "no verdict" in sections[1][2][1]


def test_omniglot_pair_arms_keep_the_config_they_were_run_with():
  """The pair arms start from OMNIGLOT_PAIRS, the default as it was before issue 16: a key the
  default gains later (the widths, the elastic warp) must not leak into them, or their finished
  runs no longer match and the report drops them."""
  finding = _finding("omniglot")
  for arm in finding.arms:
    if dict(arm.overrides).get("loss.name") in ("contrastive", "bce", "triplet") or \
        dict(arm.overrides).get("model.head") == "abs_diff" or arm.name.startswith("contrastive"):
      config = findings.arm_config(arm, 0)
      assert config.model.filters == 32 and config.model.filter_growth == 1, arm.name
      assert config.train.augment_elastic == 0.0, arm.name


def test_omniglot_arms_train_their_own_length_in_the_full_report():
  """The default arm trains as long as experiments/omniglot.py says, the pair arms and the
  previous default as long as they ran, the ablations as long as their reference (epochs_12);
  findings not in make_report.FULL keep its default length."""
  from experiments import omniglot
  finding = _finding("omniglot")
  configs = {arm.name: make_report.arm_config(finding, arm, 0, "full") for arm in finding.arms}
  assert configs["cosine_classifier"].train.epochs == omniglot.get_config().train.epochs
  assert configs["contrastive"].train.epochs == configs["previous_default"].train.epochs == 25
  names = [arm.name for arm in finding.arms]
  ablations = names[names.index("epochs_12"):]
  assert len(ablations) > 5 and {configs[name].train.epochs for name in ablations} == {12}
  reference = configs["epochs_12"]
  assert configs["no_elastic"].train.augment_elastic == 0 < reference.train.augment_elastic
  heads = _finding("heads")
  assert make_report.arm_config(heads, heads.arms[0], 0, "full").train.epochs == (
      make_report.FULL_DEFAULT["train.epochs"])
  assert make_report.FULL_DEFAULT == {"train.epochs": 10} and make_report.FULL["omniglot"] == {}
