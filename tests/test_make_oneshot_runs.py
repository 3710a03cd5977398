"""scripts/make_oneshot_runs.py: Lake-layout runs from an Omniglot zip, read by siamese_jax.oneshot."""

import importlib.util
import re

import numpy as np
import pytest

from siamese_jax import oneshot
from tests.helpers import REPO_ROOT, SHARED_DATA

SMALL1 = SHARED_DATA / "omniglot" / "images_background_small1.zip"
SMALL2 = SHARED_DATA / "omniglot" / "images_background_small2.zip"
pytestmark = pytest.mark.skipif(not SMALL2.exists(), reason="Omniglot zips not in ../shared/data")

spec = importlib.util.spec_from_file_location("make_oneshot_runs",
                                              REPO_ROOT / "scripts" / "make_oneshot_runs.py")
make_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_runs)


def test_runs_are_unseen_alphabets_with_two_drawers(tmp_path):
  out = tmp_path / "runs"
  assert make_runs.main(["--zip", str(SMALL2), "--exclude", str(SMALL1), "--out", str(out),
                         "--runs", "4", "--ways", "20"]) == 0
  runs = oneshot.load_runs(out)
  assert [run.name for run in runs] == ["run01", "run02", "run03", "run04"]
  chars = make_runs.characters(SMALL2)
  small1 = set(make_runs.characters(SMALL1))
  plans = make_runs.plan_runs({a: c for a, c in chars.items() if a not in small1}, 4, 20, 0)
  for run, plan in zip(runs, plans):
    assert run.training.shape == (20, 105, 105, 1) and run.test.shape == (20, 105, 105, 1)
    assert sorted(run.truth) == list(range(20))  # every training image is one test item's class
    assert plan["alphabet"] in ("Japanese_(katakana)", "Sanskrit")  # Tagalog has 17 characters
    drawers = {side: {re.search(r"_(\d+)\.png$", m[side]).group(1) for m in plan["members"]}
               for side in (0, 1)}
    assert len(drawers[0]) == 1 and len(drawers[1]) == 1 and drawers[0] != drawers[1]
    assert len({m[0].split("/")[2] for m in plan["members"]}) == 20  # 20 distinct characters
  # raw pixels do far worse than chance-free perfection but better than chance (1/20 correct)
  errors = oneshot.run_errors(runs, oneshot.pixel_similarity)
  assert 0.3 < np.mean(errors) < 0.95


def test_refuses_a_full_folder_and_too_many_ways(tmp_path, capsys):
  (tmp_path / "x").write_text("")
  assert make_runs.main(["--zip", str(SMALL2), "--out", str(tmp_path)]) == 2
  assert "not empty" in capsys.readouterr().err
  assert make_runs.main(["--zip", str(SMALL2), "--out", str(tmp_path / "new"),
                         "--ways", "60"]) == 2
  assert "no alphabet has 60 characters" in capsys.readouterr().err
