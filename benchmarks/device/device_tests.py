"""The project's tests that touch devices and sharding, run on the device by pytest in this
process, with a plugin that

- keeps the slow tests named in ``SLOW_ALLOWED`` and deselects the other slow ones;
- reports a test that fails only because TensorFlow or tfds is missing (the device image has
  neither: MNIST and the tfds routes need them) as skipped, saying so;
- skips what is left once the part's time budget has run out;
- writes every outcome to tests.json as it comes, so a run stopped early still reports.
"""

import time

import pytest

FILES = ("tests/test_train.py", "tests/test_streaming.py", "tests/test_augment.py",
         "tests/test_resnet.py", "tests/test_two_sources.py")
SLOW_ALLOWED = ("test_eight_fake_devices_match_one_device",
                "test_unrolled_epoch_equals_scanned_epoch_for_a_convnet",
                "test_every_loss_trains_on_separable_data")
# The dry run checks the plumbing on three quick tests: one on the device path, one on sharded
# batches, and one that needs tfds (skipped here as on the device).
DRY_RUN_TESTS = ("tests/test_train.py::test_fused_epoch_equals_loop_of_jit_steps",
                 "tests/test_augment.py::test_batch_spec_augmentation_is_applied_to_sampled_batches",
                 "tests/test_two_sources.py::test_train_classes_keep_the_other_classes_for_test")
MISSING_ON_DEVICE = ("tensorflow", "tensorflow_datasets")


def _needs_missing_package(excinfo) -> str | None:
  """The package whose absence made the test fail, if that is why, else None."""
  error = excinfo.value if excinfo is not None else None
  while error is not None:
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in \
        MISSING_ON_DEVICE:
      return error.name
    error = error.__cause__ or error.__context__
  return None


class DevicePlugin:
  """The pytest plugin (see the module docstring); ``report(dict)`` receives the results."""

  def __init__(self, deadline: float, report):
    self.deadline, self.report = deadline, report
    self.tests: list[dict] = []
    self.deselected: list[str] = []

  def pytest_collection_modifyitems(self, config, items):
    keep = [i for i in items if i.get_closest_marker("slow") is None
            or i.originalname in SLOW_ALLOWED]
    self.deselected = [i.nodeid for i in items if i not in keep]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep

  def pytest_runtest_setup(self, item):
    if time.monotonic() > self.deadline:
      pytest.skip("the tests part's time budget ran out")

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_makereport(self, item, call):
    outcome = yield
    report = outcome.get_result()
    missing = _needs_missing_package(call.excinfo) if report.failed else None
    if missing:
      report.outcome = "skipped"
      report.longrepr = (str(item.path), item.location[1] or 0,
                         f"Skipped: needs {missing}, absent on the device image")

  def pytest_runtest_logreport(self, report):
    if report.when == "call" or report.outcome != "passed":
      reason = None
      if report.outcome != "passed":
        longrepr = report.longrepr
        reason = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr))[-1500:]
      self.tests.append({"test": report.nodeid, "when": report.when, "outcome": report.outcome,
                         "seconds": report.duration, "reason": reason})
      self.report(self.summary())

  def summary(self) -> dict:
    counts: dict[str, int] = {}
    for test in self.tests:
      counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    return {"counts": counts, "tests": self.tests, "deselected_slow": self.deselected}


def run(ctx) -> None:
  """Part "tests" (ctx: run.PartContext): pytest over FILES (DRY_RUN_TESTS in the dry run)."""
  args = list(DRY_RUN_TESTS if ctx.dry_run else FILES)
  ctx.write({"status": "running", "args": args})
  plugin = DevicePlugin(ctx.deadline, lambda found: ctx.write({"status": "running", "args": args,
                                                               **found}))
  exit_code = pytest.main(["-q", "-p", "no:cacheprovider", *args], plugins=[plugin])
  ctx.write({"status": "ok" if int(exit_code) in (0, 5) else "failed", "args": args,
             "pytest_exit_code": int(exit_code), **plugin.summary()})
