"""Runs tests/test_reliability.py and prints what it tried: bad inputs, faults, runs lost.

  .venv/bin/python scripts/reliability_report.py [extra pytest arguments, e.g. -m "not slow"]

Tests are counted by their markers: each ``bad_input`` case is one bad input (a hypothesis fuzz
test counts its examples, HYPOTHESIS_EXAMPLES, default 12); each ``fault`` case is one injected
fault, and a failed fault test is a run whose finished work was lost or not recovered. Without
extra arguments the slow tests run too (they train and start main.py: minutes).
"""

import importlib.util
import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_FILE = REPO_ROOT / "tests" / "test_reliability.py"
INSTALL_HINT = "install the dev requirements (bash scripts/install.sh --dev)"
KINDS = ("fault", "bad_input")


class MarkerTally:
  """A pytest plugin: the kind (marker) of each collected test, its weight, and the failures."""

  def __init__(self, examples: int):
    self.examples = examples
    self.kinds: dict[str, tuple[str, int]] = {}  # node id -> (kind, bad inputs it stands for)
    self.failed: set[str] = set()

  def pytest_collection_finish(self, session):
    for item in session.items:  # after -m / -k deselection
      for kind in KINDS:
        if item.get_closest_marker(kind):
          fuzzed = getattr(item.obj, "is_hypothesis_test", False)
          self.kinds[item.nodeid] = (kind, self.examples if fuzzed else 1)

  def pytest_runtest_logreport(self, report):
    if report.failed:
      self.failed.add(report.nodeid)

  def count(self, kind: str) -> tuple[int, int]:
    """(cases of ``kind``, weighted by examples; how many of those failed)."""
    tried = failed = 0
    for node, (node_kind, weight) in self.kinds.items():
      if node_kind == kind:
        tried += weight
        failed += node in self.failed
    return tried, failed


def main(pytest_args: list[str]) -> int:
  for name in ("pytest", "hypothesis"):
    if importlib.util.find_spec(name) is None:
      print(f"{name} is missing: {INSTALL_HINT}", file=sys.stderr)
      return 2
  import pytest
  tally = MarkerTally(int(os.environ.get("HYPOTHESIS_EXAMPLES", "12")))
  os.chdir(REPO_ROOT)
  code = pytest.main(["-q", "-p", "no:logging", *pytest_args, str(TEST_FILE)], plugins=[tally])
  if not tally.kinds or code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
    print(f"could not run {TEST_FILE.relative_to(REPO_ROOT)} (pytest exit code {int(code)}; "
          "see above)", file=sys.stderr)
    return 2
  bad_inputs, bad_input_failures = tally.count("bad_input")
  faults, lost = tally.count("fault")
  print(f"bad inputs tried: {bad_inputs} ({bad_input_failures} not answered cleanly)")
  print(f"faults injected: {faults}")
  print(f"runs lost: {lost}")
  return 0 if lost == 0 and bad_input_failures == 0 else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
