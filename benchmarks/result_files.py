"""Where a benchmark's figures go: the ``--smoke`` and ``--out`` flags the benchmarks share.

``--smoke`` runs a benchmark at tiny sizes in seconds (tests/test_benchmarks.py runs every one, so
a benchmark that breaks fails CI) and writes no result file unless ``--out`` names one.
"""

import argparse
import pathlib

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def add_smoke_and_out(parser: argparse.ArgumentParser, results_name: str, smoke: str) -> None:
  """Adds ``--smoke`` (``smoke``: what the smoke run does) and ``--out`` (default
  benchmarks/results/``results_name``)."""
  parser.add_argument("--smoke", action="store_true", help=f"{smoke}: that it runs")
  parser.add_argument("--out", help=f"results JSON (default: benchmarks/results/{results_name}; "
                      "none with --smoke)")


def results_path(args: argparse.Namespace, results_name: str) -> str | None:
  """The JSON file to write: ``--out``, else none for a smoke run, else the default."""
  return args.out or (None if args.smoke else str(RESULTS / results_name))
