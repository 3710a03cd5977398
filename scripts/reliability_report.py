"""Tries bad inputs and faults and prints how each ended: the project's reliability report.

  .venv/bin/python scripts/reliability_report.py [--sample N] [--no-tests] [--no-cases]
                                                 [extra pytest arguments, e.g. -m "not slow"]

Three parts:

1. **Generated config cases**, from the declarations (siamese_jax/config_keys.py and the records'
   constraints): every choice key with an unknown and an empty name; every numeric key (and every
   number inside a tuple key) at 0, -1, NaN, inf, huge, and a word ("abc"); every declared
   constraint broken by its own ``breaks`` overrides (``config_checks.every_constraint``). Each
   runs in-process, in a worker process (so a crash or a hang ends one case, not the report), on
   ``experiments/contrastive.py:tiny``: the config checks, then, where they accept it, what a run
   does before compiling, on a stand-in for the tiny MNIST run's data (zeros of its shapes and
   class counts): the data-time checks, the model's and the optimiser's shapes
   (``jax.eval_shape``), the schedule, the run's keys. Only a sample (``--sample``, default 12,
   spread over the cases) also runs through ``python main.py`` in a subprocess, training where
   the checks accept it.
2. **Tests** marked ``bad_input`` or ``fault`` in the test files below (pytest): bad files,
   flags and folders, damaged runs, signals. A hypothesis fuzz test counts its examples
   (HYPOTHESIS_EXAMPLES, default 12); a failed fault test is a run whose finished work was lost.

Each generated case ends as one of: ``error`` (a one-line error naming the key), ``warning``
(accepted with a one-line warning), ``accepted`` (a value that works, e.g. 0 warm-up steps),
``long`` (an error of more than one line), ``traceback``, ``hang`` (no answer in CASE_TIMEOUT s),
``crash`` (the process died: a signal such as SIGABRT) and ``silent`` (accepted although it must
not be: NaN, inf, an unknown or empty name, a broken constraint). Exit code 1 when any case ended
as traceback, hang, crash, silent or long, or a test failed.
"""

import importlib.util
import json
import math
import os
import pathlib
import select
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_FILES = ("test_reliability.py", "test_constraints.py", "test_oneshot.py", "test_predict.py",
              "test_export.py", "test_data_folder.py", "test_main.py")
INSTALL_HINT = "install the dev requirements (bash scripts/install.sh --dev)"
KINDS = ("fault", "bad_input")
CASE_TIMEOUT = 120  # seconds without an answer from the worker: a hang
MAIN_TIMEOUT = 600
BAD_ENDINGS = ("traceback", "hang", "crash", "silent", "long")
ENDINGS = ("error", "warning", "accepted") + BAD_ENDINGS
HUGE_INT, HUGE_FLOAT = 10 ** 15, 1e300
UNKNOWN = "no_such_name"


# ------------------------------------------------------------------------ generated cases

def _numbers_in(value) -> bool:
  is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  return is_number(value) or (isinstance(value, tuple) and bool(value)
                              and all(is_number(v) for v in value))


def generate_cases() -> list[dict]:
  """Every case: {"name", "overrides": {"section.key": value}, "must_refuse": bool}, from the
  key declarations and the records' constraints (deterministic order)."""
  sys.path.insert(0, str(REPO_ROOT))
  from ml_collections.config_dict import FieldReference
  from siamese_jax import config_checks, config_keys
  choices = config_checks.choices()
  names = set(choices) | {"data.name", "data.train_split", "data.test_split", "model.encoder_b",
                          "data.source_b"}
  cases, defaults = [], config_keys.get_config()
  for key in config_keys.KEYS:
    section, name = key.path.split(".") if "." in key.path else (None, key.path)
    value = defaults[section][name] if section else defaults[name]
    typed = key.default.get_type() if isinstance(key.default, FieldReference) else type(value)
    if key.path in names:
      for bad in (UNKNOWN, "", 7):
        cases.append({"name": f"{key.path}={bad!r}", "overrides": {key.path: bad},
                      "must_refuse": True})
      continue
    if typed is bool:
      for bad in ("abc", 2):
        cases.append({"name": f"{key.path}={bad!r}", "overrides": {key.path: bad},
                      "must_refuse": True})
      continue
    if typed is tuple and value is None:
      value = (1, 1)  # a tuple of numbers, None by default (data.train_classes, augment_crop)
    if typed not in (int, float, object) and not _numbers_in(value):
      continue  # names of files and folders
    is_int = typed in (int, object) or (isinstance(value, int) and not isinstance(value, bool))
    for label, bad, must in (("0", 0, False), ("-1", -1, False), ("nan", math.nan, True),
                             ("inf", math.inf, True),
                             ("huge", HUGE_INT if is_int else HUGE_FLOAT, False),
                             ("word", "abc", True)):
      if isinstance(value, tuple):
        bad = tuple(bad for _ in value) if value else (bad,)
      cases.append({"name": f"{key.path}={label}", "overrides": {key.path: bad},
                    "must_refuse": must})
  seen = set()
  for constraint in config_checks.every_constraint():
    breaks = dict(constraint.breaks)
    name = "conflict " + ", ".join(f"{k}={v!r}" for k, v in breaks.items())
    if name not in seen:
      seen.add(name)
      cases.append({"name": name, "overrides": breaks, "must_refuse": not constraint.warn,
                    "warns": constraint.warn})
  # checked at load, where the split's classes are known (data.protocol.load_datasets)
  cases.append({"name": "at load data.train_classes=(0, 1, 42)",
                "overrides": {"data.train_classes": (0, 1, 42)}, "must_refuse": True})
  return cases


def _stand_in_datasets(config):
  """Zeros of the tiny MNIST run's shapes: 7201 training, 799 validation, 2000 test images of
  10 classes, at data.image_size where it is set."""
  import numpy as np
  from siamese_jax.data import labelled, protocol
  size = config.data.image_size or 28
  side = (size, size) if isinstance(size, int) else tuple(size)

  def part(n):
    labels = np.arange(n, dtype=np.int32) % 10
    return labelled.LabelledImages(np.zeros((n, *side, 1), np.uint8), labels, 10, "stand-in")
  return protocol.Datasets(part(7201), part(799), part(2000), {})


def _before_compiling(config) -> list[str]:
  """What a run does with ``config`` before compiling, on stand-in data; returns its warnings.
  Raises what the run would raise."""
  import jax
  import numpy as np
  from siamese_jax import (batches, call_schedule, config_checks, losses, models, run_keys,
                           train)
  from siamese_jax.data import protocol
  config_checks.validate(config)
  warnings = config_checks.unused_keys(config)
  datasets = _stand_in_datasets(config)
  problem = protocol._train_classes_present(config, datasets.train)
  if problem is not None:
    raise config_checks.ConfigError(problem)
  kind = losses.OBJECTIVES[config.loss.name].batch_kind
  spec = batches.batch_spec_from_config(config, kind)
  config_checks.validate_against_data(config, datasets, spec)
  if config.model.head in models.CLASSIFIER_HEADS and not config.model.num_classes:
    config.model.num_classes = datasets.train.num_classes
  schedule = call_schedule.make_schedule(config, len(datasets.train.labels), spec.examples)
  model = models.build_model(config.model)
  dummy = jax.ShapeDtypeStruct((1, *datasets.train.images.shape[1:]), np.float32)
  towers = (dummy,) if isinstance(model, models.Classifier) else (dummy, dummy)
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *(
      np.zeros(t.shape, t.dtype) for t in towers), train=False))
  tx = train.optimizer_from_config(config, schedule.total_steps)
  jax.eval_shape(tx.init, variables["params"])
  rate = float(train.make_schedule(config.optimizer, schedule.total_steps)(0))
  if not np.isfinite(rate):
    raise ValueError(f"learning rate {rate} at step 0")
  run_keys.run_keys(config.seed)
  return warnings


def run_case(case: dict) -> dict:
  """How ``case`` ends in-process: {"ending", "line"}."""
  from experiments import default
  from siamese_jax import config_checks, data
  config = _tiny()
  try:
    default.override(config, case["overrides"])
  except (TypeError, ValueError, KeyError) as error:  # ml_collections refuses the type: the
    line = " ".join(str(error).split())  # flag parser says so in one line (see the sample)
    return {"ending": "error", "line": f"at assignment: {line[:200]}"}
  try:
    warnings = _before_compiling(config)
  except (config_checks.ConfigError, data.DataFileError) as error:
    message = str(error)
    return {"ending": "error" if "\n" not in message else "long", "line": message[:300]}
  except Exception as error:  # noqa: BLE001 - what the report is looking for
    return {"ending": "traceback", "line": f"{type(error).__name__}: {str(error)[:300]}"}
  if case["must_refuse"] and not (case.get("warns") and warnings):
    return {"ending": "silent", "line": "accepted"}
  if warnings:
    return {"ending": "warning", "line": warnings[0][:300]}
  return {"ending": "accepted", "line": ""}


def _tiny():
  from experiments import contrastive
  return contrastive.get_config("tiny")


def worker(start: int) -> None:
  """Runs the cases from ``start`` on, one JSON line each on stdout."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, str(REPO_ROOT))
  cases = generate_cases()
  real_stdout = sys.stdout
  sys.stdout = sys.stderr  # anything a case prints stays out of the answers
  for index in range(start, len(cases)):
    result = run_case(cases[index])
    real_stdout.write(json.dumps({"index": index, **result}) + "\n")
    real_stdout.flush()


def run_generated(cases: list[dict]) -> list[dict]:
  """Every case's ending, from worker processes restarted after a crash or a hang."""
  results, start = [None] * len(cases), 0
  while start < len(cases):
    process = subprocess.Popen([sys.executable, __file__, "--worker", str(start)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    next_index = start
    while next_index < len(cases):
      ready, _, _ = select.select([process.stdout], [], [], CASE_TIMEOUT)
      if not ready:
        process.kill()
        results[next_index] = {"ending": "hang", "line": f"no answer in {CASE_TIMEOUT} s"}
        next_index += 1
        break
      line = process.stdout.readline()
      if not line:  # the worker died on this case
        code = process.wait()
        results[next_index] = {"ending": "crash", "line": f"worker exit code {code}"}
        next_index += 1
        break
      answer = json.loads(line)
      results[answer.pop("index")] = answer
      next_index += 1
    process.kill()
    process.wait()
    start = next_index
  return results


def _flag(value) -> str:
  if isinstance(value, float) and math.isnan(value):
    return "nan"
  if isinstance(value, float) and math.isinf(value):
    return "inf"
  if isinstance(value, str):
    return value
  return repr(value).replace(" ", "")


def run_main(case: dict, workdir: pathlib.Path) -> dict:
  """How ``case`` ends through ``python main.py`` (a subprocess; trains where accepted)."""
  command = [sys.executable, "main.py", "--config", "experiments/contrastive.py:tiny",
             "--workdir", str(workdir), "--config.plots.latent=False",
             "--config.plots.animation=False",
             *(f"--config.{key}={_flag(value)}" for key, value in case["overrides"].items())]
  try:
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=MAIN_TIMEOUT)
  except subprocess.TimeoutExpired:
    return {"ending": "hang", "line": f"no end in {MAIN_TIMEOUT} s"}
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  if "Traceback (most recent call last)" in result.stderr:
    return {"ending": "traceback", "line": result.stderr.strip().splitlines()[-1][:300]}
  if result.returncode < 0:
    return {"ending": "crash", "line": f"signal {-result.returncode}"}
  if result.returncode == 2 and len(errors) == 1:
    return {"ending": "error", "line": errors[0][:300]}
  if result.returncode == 0:
    warned = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    if case["must_refuse"] and not (case.get("warns") and warned):
      return {"ending": "silent", "line": "trained"}
    return {"ending": "warning" if warned else "accepted", "line": (warned or [""])[0][:300]}
  return {"ending": "long", "line": f"exit {result.returncode}: {result.stderr[-300:]}"}


def _spread(indices: list[int], count: int) -> list[int]:
  step = max(len(indices) / max(count, 1), 1)
  return [indices[int(i * step + step / 2)] for i in range(min(count, len(indices)))]


def sample(results: list[dict], count: int) -> list[int]:
  """``count`` case indices spread evenly over the cases, a third of them among those the
  in-process run accepted (so that main.py trains them), the rest among the others."""
  if count <= 0:
    return []
  accepted = [i for i, r in enumerate(results) if r["ending"] in ("accepted", "warning")]
  others = [i for i, r in enumerate(results) if i not in set(accepted)]
  picked = _spread(accepted, count // 3)
  return sorted(picked + _spread(others, count - len(picked)))


def tally(results: list[dict]) -> dict[str, int]:
  return {ending: sum(r["ending"] == ending for r in results) for ending in ENDINGS}


def print_tally(title: str, results: list[dict], cases: list[dict]) -> None:
  counts = tally(results)
  print(f"{title}: {len(results)} cases: " + ", ".join(
      f"{counts[e]} {e}" for e in ENDINGS if counts[e] or e in BAD_ENDINGS[:3] + ("silent",)))
  for case, result in zip(cases, results):
    if result["ending"] in BAD_ENDINGS:
      print(f"  {result['ending']}: {case['name']}: {result['line']}")


# ------------------------------------------------------------------------------ the tests

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


def run_tests(pytest_args: list[str]) -> int | None:
  """Runs the marked tests; prints their counts; the number of failures (None: could not run)."""
  import pytest
  tally_plugin = MarkerTally(int(os.environ.get("HYPOTHESIS_EXAMPLES", "12")))
  files = [str(REPO_ROOT / "tests" / name) for name in TEST_FILES]
  marks, rest = "bad_input or fault", list(pytest_args)
  if "-m" in rest:  # one -m: the given expression within the marked tests
    at = rest.index("-m")
    marks = f"({marks}) and ({rest[at + 1]})"
    del rest[at:at + 2]
  code = pytest.main(["-q", "-p", "no:logging", "-m", marks, *rest, *files],
                     plugins=[tally_plugin])
  if not tally_plugin.kinds or code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
    print(f"could not run the tests (pytest exit code {int(code)}; see above)", file=sys.stderr)
    return None
  bad_inputs, bad_input_failures = tally_plugin.count("bad_input")
  faults, lost = tally_plugin.count("fault")
  print(f"tests: bad inputs tried: {bad_inputs} ({bad_input_failures} not answered cleanly)")
  print(f"tests: faults injected: {faults}")
  print(f"tests: runs lost: {lost}")
  return bad_input_failures + lost


def main(argv: list[str]) -> int:
  if argv[:1] == ["--worker"]:
    worker(int(argv[1]))
    return 0
  for name in ("pytest", "hypothesis"):
    if importlib.util.find_spec(name) is None:
      print(f"{name} is missing: {INSTALL_HINT}", file=sys.stderr)
      return 2
  count, run_cases, run_pytest, rest = 12, True, True, []
  args = iter(argv)
  for arg in args:
    if arg == "--sample":
      count = int(next(args))
    elif arg == "--no-tests":
      run_pytest = False
    elif arg == "--no-cases":
      run_cases = False
    else:
      rest.append(arg)
  os.chdir(REPO_ROOT)
  failures = 0
  if run_cases:
    cases = generate_cases()
    started = time.time()
    results = run_generated(cases)
    print_tally(f"generated config cases (in-process, {time.time() - started:.0f} s)", results,
                cases)
    failures += sum(tally(results)[e] for e in BAD_ENDINGS)
    picked = sample(results, count)
    if picked:
      started = time.time()
      with tempfile.TemporaryDirectory() as folder:
        through_main = [run_main(cases[i], pathlib.Path(folder) / f"case{i}") for i in picked]
      print_tally(f"sample through main.py ({time.time() - started:.0f} s)", through_main,
                  [cases[i] for i in picked])
      for i, result in zip(picked, through_main):
        print(f"  {result['ending']} (in-process: {results[i]['ending']}): {cases[i]['name']}")
      agree = sum(results[i]["ending"] == r["ending"] for i, r in zip(picked, through_main))
      print(f"  main.py ended as the in-process run did in {agree} of {len(picked)}")
      failures += sum(tally(through_main)[e] for e in BAD_ENDINGS)
  if run_pytest:
    failed_tests = run_tests(rest)
    if failed_tests is None:
      return 2
    failures += failed_tests
  return 0 if failures == 0 else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
