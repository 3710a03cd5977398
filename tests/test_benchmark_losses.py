"""scripts/benchmark_losses.py and loss_table.py: the protocol's pieces (validation classes,
search draws, the table, the verdict, the results.md section) on hand-made inputs, and the
--smoke run end to end (slow)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments import default, retrieval
from scripts import benchmark_losses as bench
from scripts import loss_table, report_markdown
from siamese_jax import config_checks, losses
from tests.helpers import REPO_ROOT, repo_env


def test_validation_classes_are_the_last_training_classes_or_whole_groups():
  assert bench.class_split(6) == ([0, 1, 2, 3], [4, 5])  # a quarter of 6, at least 2
  assert bench.class_split(98) == (list(range(74)), list(range(74, 98)))
  # Omniglot small1: alphabets of 14, 26, 24, 40, 26 characters; a quarter is 32.5: the last
  # alphabet alone (26) is closer than the last two (66).
  sizes = [14, 26, 24, 40, 26]
  groups = np.repeat(np.arange(5), sizes)
  kept, held = bench.class_split(len(groups), groups)
  assert held == list(range(104, 130)) and kept == list(range(104))
  kept, held = bench.class_split(4, np.array([0, 0, 1, 1]))  # one group always stays
  assert held == [2, 3]


def test_a_named_dataset_is_split_in_halves_and_searched_on_its_last_training_classes():
  """The protocol of --data.name=X (CUB-200 / Cars196's convention) on sklearn's 8 x 8 digits:
  trained on 0-4, tested on 5-9; the search trains on 0-2 and tests on 3-4 (their test-split
  images: the same classes are there). Steps: 64 images each over the chosen classes' images."""
  base = retrieval.get_config()
  plan = bench.protocol(base, "uci_digits", {**bench.GENERIC, "data.name": "uci_digits"})
  test, search = plan["test"], plan["search"]
  assert test["data.train_classes"] == (0, 1, 2, 3, 4)
  assert test["data.test_classes"] == (5, 6, 7, 8, 9)
  assert search["data.train_classes"] == (0, 1, 2) and search["data.test_classes"] == (3, 4)
  assert search["data.test_split"] == "test"
  assert 0 < search["train.steps_per_epoch"] < test["train.steps_per_epoch"]
  for part in (test, search):  # the classes trained on and tested on never meet
    assert not set(part["data.train_classes"]) & set(part["data.test_classes"])


def test_omniglot_is_searched_on_small1s_last_alphabet(shared_data, monkeypatch):
  monkeypatch.setenv("SIAMESE_JAX_OMNIGLOT_DIR", str(shared_data / "omniglot"))
  base = retrieval.get_config()
  plan = bench.protocol(base, "omniglot", bench.DATASETS["omniglot"])
  assert plan["test"]["data.train_classes"] is None and plan["test"]["data.test_split"] == "small2"
  search = plan["search"]
  assert search["data.test_split"] == "small1"  # small2's classes are others: small1's own images
  config = default.override(base.copy_and_resolve_references(), search)
  from siamese_jax.data import protocol
  datasets = protocol.load_datasets(config)
  assert {name.split("/")[0] for name in datasets.test.class_names} == {"Latin"}
  assert not {name.split("/")[0] for name in datasets.train.class_names} & {"Latin"}
  assert search["train.steps_per_epoch"] == plan["test"]["train.steps_per_epoch"] == 190


def test_search_draws_every_float_setting_and_the_learning_rate_within_a_factor_two():
  base = retrieval.get_config()
  candidates = bench.search_candidates(base, "cosine_softmax", 4)
  assert candidates[0] == {} and len(candidates) == 4
  for changes in candidates[1:]:
    assert set(changes) == {"loss.margin", "loss.scale", "optimizer.learning_rate"}
    for path, value in changes.items():
      ratio = value / bench._value(base, path)
      assert 0.5 <= ratio <= 2.0 and ratio != 1.0
    config = default.override(base.copy_and_resolve_references(),
                              {**bench.loss_changes(base, "cosine_softmax"), **changes})
    config_checks.validate(config)
  assert bench.search_candidates(base, "cosine_softmax", 4) == candidates  # from the name
  assert bench.search_candidates(base, "triplet", 2)[1].keys() == {"loss.margin",
                                                                  "optimizer.learning_rate"}


def test_every_loss_gets_a_head_it_trains_and_64_images_a_step():
  base = retrieval.get_config()
  for name in bench.benchmarkable():
    changes = bench.loss_changes(base, name)
    record = losses.OBJECTIVES[name]
    assert changes.get("model.head", base.model.head) in record.heads
    images = changes["train.batch_size"] * (2 if record.batch_kind == "pairs" else 1)
    if record.batch_kind == "pk":
      images = base.train.classes_per_batch * base.train.samples_per_class
    assert images == bench.IMAGES_PER_STEP, name
  assert bench.benchmarkable() == list(dict.fromkeys(bench.benchmarkable()))
  with pytest.raises(SystemExit, match="--losses: nope not in"):
    bench.benchmarkable(["contrastive", "nope"])


def _records(values: dict) -> list:
  """Test-run records of {loss: [MAP@R by seed]}."""
  return [{"phase": "test", "dataset": "d", "loss": loss, "seed": seed,
           "metrics": {"mean_average_precision_at_r": v, "precision_at_1": v}}
          for loss, by_seed in values.items() for seed, v in enumerate(by_seed)]


def test_table_gives_mean_and_std_over_seeds_and_keeps_failures():
  records = _records({"a": [0.5, 0.7, 0.6]}) + [
      {"phase": "test", "dataset": "d", "loss": "b", "seed": 0, "error": "ValueError: x"},
      {"phase": "search", "dataset": "d", "loss": "a", "seed": 0, "metrics": {}}]
  found = loss_table.table(records)
  stats = found["d"]["a"]["mean_average_precision_at_r"]
  assert stats["mean"] == pytest.approx(0.6) and stats["std"] == pytest.approx(0.1)
  assert found["d"]["b"] == {"errors": ["ValueError: x"]}


def test_the_verdict_is_a_paired_comparison_over_seeds():
  # b trails a by 0.01 +- 0.001 on every seed: consistently behind. c trails by 0.02 on average
  # but by -0.05 .. +0.08 seed to seed: within noise.
  found = loss_table.table(_records({"a": [0.60, 0.70, 0.65], "b": [0.59, 0.689, 0.641],
                                "c": [0.65, 0.62, 0.62]}))
  result = loss_table.verdict(found)
  assert result["datasets"]["d"] == {"best": "a", "within_noise": ["c"], "behind": ["b"],
                                     "undecided": []}
  assert result["start_from"] == "a"
  assert loss_table.within_noise({"0": 0.5}, {"0": 0.4}) is None  # one seed: no verdict
  one_seed = loss_table.verdict(loss_table.table(_records({"a": [0.6], "b": [0.5]})))
  assert one_seed["datasets"]["d"]["undecided"] == ["b"]


def test_the_check_compares_each_loss_with_contrastive():
  found = loss_table.table(_records({"contrastive": [0.5, 0.5], "x": [0.45, 0.45],
                                    "y": [0.3, 0.3]}))
  rows = {row["loss"]: row for row in loss_table.epochs_check(found, "d", 3)}
  assert rows["x"]["ratio"] == pytest.approx(0.9) and rows["x"]["pass"]
  assert rows["y"]["ratio"] == pytest.approx(0.6) and not rows["y"]["pass"]
  assert loss_table.epochs_check(loss_table.table(_records({"x": [0.4]})), "d", 3)[0]["why"] == (
      "no contrastive run")


def test_the_section_replaces_its_last_version_and_the_report_keeps_it(tmp_path):
  path = tmp_path / "results.md"
  path.write_text("# Results\n\nthe report\n")
  report_markdown.replace_section(path, bench.SECTION, ["## first"])
  report_markdown.replace_section(path, bench.SECTION, ["## second", "row"])
  text = path.read_text()
  assert text.startswith("# Results\n\nthe report\n") and "## first" not in text
  assert text.count("## second") == 1
  kept = report_markdown.other_sections(text)
  assert kept.startswith("<!-- section loss_benchmark") and "row" in kept
  report_markdown.write_markdown(path, "full", [0], [], 0.0, {}, {})  # make_report's rewrite
  assert report_markdown.other_sections(path.read_text()) == kept


def test_flags_other_than_declared_config_keys_are_refused(capsys):
  args, changes = bench.parse(["--data.name=cars196", "--train.epochs=40", "--seeds", "2"])
  assert changes == {"data.name": "cars196", "train.epochs": 40} and args.seeds == 2
  with pytest.raises(SystemExit):
    bench.parse(["--data.nmae=cars196"])
  assert "not a --section.key=value" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_run_prints_a_line_per_run_the_table_and_the_check(tmp_path):
  """--smoke: 2 losses x (2 search candidates + 1 seed) on the embedded MNIST sample (about a
  minute on 2 idle cores), results in --workdir, never in docs/."""
  done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "benchmark_losses.py"),
                         "--smoke", "--workdir", str(tmp_path)], env=repo_env(
                             JAX_PLATFORMS="cpu", TFDS_DATA_DIR=str(tmp_path / "tfds")),
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
  tail = f"\n--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
  assert done.returncode == 0, tail
  lines = re.findall(r"^\[(\d)/6\] mnist (\w+) (search|test)(?: seed 0)?: MAP@R ([\d.]+), P@1",
                     done.stdout, re.M)
  assert [int(line[0]) for line in lines] == [1, 2, 3, 4, 5, 6], tail
  assert re.search(r"\n  contrastive +ratio +1\.000  pass", done.stdout), tail
  result = json.loads((tmp_path / "results.json").read_text())[bench.SECTION]
  names = bench.benchmarkable()[:2]
  assert list(result["table"]["mnist"]) == names
  for name in names:
    stats = result["table"]["mnist"][name]
    assert set(stats) == set(loss_table.METRICS)
    assert 0.0 < stats["mean_average_precision_at_r"]["mean"] <= 1.0
  assert "## Losses on classes never trained on" in (tmp_path / "results.md").read_text()


def test_the_retrieval_config_is_class_disjoint_and_valid():
  config = retrieval.get_config()
  config_checks.validate(config)
  assert not set(config.data.train_classes) & set(config.data.test_classes)
  config_checks.validate(retrieval.get_config("tiny"))
