"""Runs tests/test_reliability.py and prints what it tried: bad inputs, faults, runs lost.

  .venv/bin/python scripts/reliability_report.py

Each ``test_bad_input_*`` case is one bad input (a hypothesis fuzz test counts its examples,
HYPOTHESIS_EXAMPLES, default 12); each ``test_fault_*`` case is one injected fault, and a failed
fault test is a run whose finished work was lost or not recovered.
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
  examples = int(os.environ.get("HYPOTHESIS_EXAMPLES", "12"))
  with tempfile.TemporaryDirectory() as tmp:
    report = pathlib.Path(tmp) / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:logging",
                    "tests/test_reliability.py", f"--junitxml={report}"], cwd=REPO_ROOT)
    cases = ElementTree.parse(report).getroot().iter("testcase")
    bad_inputs = faults = lost = bad_input_failures = 0
    for case in cases:
      name = case.get("name")
      failed = case.find("failure") is not None or case.find("error") is not None
      if name.startswith("test_bad_input_"):
        bad_inputs += examples if "fuzzed" in name else 1
        bad_input_failures += failed
      elif name.startswith("test_fault_"):
        faults += 1
        lost += failed
  print(f"bad inputs tried: {bad_inputs} ({bad_input_failures} not answered cleanly)")
  print(f"faults injected: {faults}")
  print(f"runs lost: {lost}")
  return 0 if lost == 0 and bad_input_failures == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
