"""Every loss on classes never trained on: "A Metric Learning Reality Check" (Musgrave et al., ECCV
2020) scaled to 2 CPU cores, written to docs/results.md (its own section) and docs/results.json.

  .venv/bin/python scripts/benchmark_losses.py                  # every loss, both datasets
  .venv/bin/python scripts/benchmark_losses.py --losses contrastive,triplet --seeds 2
  .venv/bin/python scripts/benchmark_losses.py --smoke          # 2 losses, tiny runs: seconds
  .venv/bin/python scripts/benchmark_losses.py --data.name=cars196 --data.image_size=224 \\
      --model.encoder=resnet18 --model.embedding_dim=512 --train.epochs=40   # accelerator

The protocol: class-disjoint data, one encoder and embedding size for every loss (the
experiments/retrieval.py config), one training budget (the same epochs and 64 images a step:
32 pairs for a loss on pairs), each loss's settings chosen by a small random search on validation
classes carved out of the training classes (never the test classes), then ``--seeds`` runs of
the chosen settings trained on every training class and tested on the test classes: P@1,
R-precision, MAP@R, Recall@{1,2,4,8} and k-means NMI / AMI (summary.json's ``test``), mean ± std.

- fashion_mnist: trained on classes 0-5 of the training split, tested on the test split's 6-9;
  validation classes 4 and 5 (their test-split images), searched trained on 0-3; 3 epochs.
- omniglot: trained on small1's 5 alphabets, tested on small2's 3 new ones; validation: small1's
  last alphabet (Latin), searched trained on the other 4; 28 x 28, 4 epochs of 190 steps (about
  20 passes over small1: few epochs, as each ends with validation pairs and a checkpoint).
- any other ``--data.name`` (a tfds dataset or a folder): its classes by id, the first half
  trained on, the second half tested on (the CUB-200 / Cars196 convention), the last quarter of
  the training classes the validation classes. ``--section.key=value`` flags change the base
  config of every run.

The search: candidate 0 is the loss's defaults, each next one every float ``loss.*`` key the loss
reads and the learning rate scaled by 2**u, u uniform in [-1, 1] (drawn from the loss's name);
the candidate with the best validation MAP@R is taken. Runs are kept in ``--workdir``/runs.jsonl,
so an interrupted benchmark resumes (delete it after changing the library: runs are keyed by
their config changes only). Each run trains through ``experiment.train_and_evaluate``; a run
that fails (a config error, a diverged loss) is a "failed" row of the table, not the end.
"""

import argparse
import ast
import contextlib
import json
import os
import pathlib
import shutil
import sys
import time
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from experiments import default, retrieval  # noqa: E402
from scripts import loss_table, report_markdown  # noqa: E402
from siamese_jax import caches, config_checks, data, experiment, losses, preemption  # noqa: E402

SECTION = "loss_benchmark"  # results.json key and results.md section (report_markdown)
IMAGES_PER_STEP = 64
VALIDATION_FRACTION = 0.25  # of the training classes (whole groups where the data has them)
# The datasets of the table: the data of the test runs and the training length.
DATASETS = {
    "fashion_mnist": {"data.name": "fashion_mnist", "data.train_split": "train",
                      "data.test_split": "test", "data.train_classes": (0, 1, 2, 3, 4, 5),
                      "data.test_classes": (6, 7, 8, 9), "train.epochs": 3},
    "omniglot": {"data.name": "omniglot", "data.train_split": "small1",
                 "data.test_split": "small2", "data.train_classes": None,
                 "data.test_classes": None, "data.image_size": 28, "train.epochs": 4,
                 "train.steps_per_epoch": 190, "train.classes_per_batch": 16,
                 "train.samples_per_class": 4},  # 760 steps: ~20 passes over small1
}
GENERIC = {"data.train_split": "train", "data.test_split": "test", "data.train_classes": None,
           "data.test_classes": None}  # a named dataset's, before its own flags
SMOKE = {"data.name": "mnist", "data.train_classes": (0, 1, 2, 3, 4, 5),
         "data.test_classes": (6, 7, 8, 9), "train.epochs": 1, "train.steps_per_epoch": 6,
         "train.steps_per_call": 3, "eval.pairs": 100}


# ------------------------------------------------------------------------- the protocol


def class_split(labels_count: int, groups_of_class=None, fraction: float = VALIDATION_FRACTION):
  """Validation classes carved from training class ids 0..C-1 (``labels_count`` = C): the last
  round(fraction C) ids (at least 2); with ``groups_of_class`` [C], whole groups from the last one
  on, as many as bring the count closest to fraction C. Returns (kept ids, validation ids)."""
  ids = list(range(labels_count))
  target = fraction * labels_count
  if groups_of_class is None:
    held = max(2, int(round(target)))
    return ids[:-held], ids[-held:]
  order = list(dict.fromkeys(reversed([int(g) for g in groups_of_class])))  # last group first
  best, taken = None, []
  for group in order[:-1]:  # at least one group stays for training
    taken = taken + [c for c in ids if groups_of_class[c] == group]
    if best is None or abs(len(taken) - target) < abs(len(best) - target):
      best = list(taken)
  held = sorted(best)
  return [c for c in ids if c not in held], held


def _classes_of(split):
  """(class count, group of each class [C] or None, class names or None) of a LabelledImages."""
  groups = None
  if split.groups is not None:
    groups = np.zeros(split.num_classes, np.int64)
    groups[split.labels] = split.groups
  return split.num_classes, groups, split.class_names


def protocol(base, dataset: str, changes: dict) -> dict:
  """{"test": config changes of the test runs, "search": of the search runs} for ``dataset``
  (its DATASETS entry or the generic halves of a named dataset) on top of ``base``."""
  test = dict(changes)
  config = default.override(_copy(base), test)
  train_split = data.load_split(config.data, config.data.train_split)
  count, groups, names = _classes_of(train_split)
  if dataset not in DATASETS and config.data.train_classes is None:  # first half / second half
    test["data.train_classes"] = tuple(range(count // 2))
    test["data.test_classes"] = tuple(range(count // 2, count))
    config = default.override(config, test)
  train_ids = list(config.data.train_classes or range(count))
  kept, held = class_split(len(train_ids), None if groups is None else groups[train_ids])
  held_ids = tuple(train_ids[i] for i in held)
  test_split = data.load_split(config.data, config.data.test_split)
  same_classes = (test_split.num_classes == count and test_split.class_names == names)
  search = {**test, "data.train_classes": tuple(train_ids[i] for i in kept),
            "data.test_classes": held_ids,
            "data.test_split": config.data.test_split if same_classes else config.data.train_split}
  if "train.steps_per_epoch" not in changes:  # IMAGES_PER_STEP whatever the batch kind
    for part in (test, search):
      chosen = part.get("data.train_classes") or range(count)
      images = np.isin(train_split.labels, list(chosen)).sum() * (
          1 - config.data.validation_fraction)
      part["train.steps_per_epoch"] = max(1, int(images) // IMAGES_PER_STEP)
  return {"test": test, "search": search}


def _copy(config):
  return config.copy_and_resolve_references()


def loss_changes(base, name: str) -> dict:
  """The config changes that train loss ``name`` on ``base``: its name, a head it trains (the
  first its record lists, where base's is not one) and the batch of IMAGES_PER_STEP images."""
  record = losses.OBJECTIVES[name]
  changes = {"loss.name": name}
  if base.model.head not in record.heads:
    changes["model.head"] = record.heads[0]
  changes["train.batch_size"] = (IMAGES_PER_STEP // 2 if record.batch_kind == "pairs"
                                 else IMAGES_PER_STEP)
  return changes


def benchmarkable(names=None) -> list[str]:
  """The losses of ``losses.OBJECTIVES`` (``names``: these, checked), one name per record (an
  alias kept for an older name is left out)."""
  if names:
    unknown = [n for n in names if n not in losses.OBJECTIVES]
    if unknown:
      raise SystemExit(f"--losses: {', '.join(unknown)} not in siamese_jax.losses.OBJECTIVES "
                       f"({', '.join(losses.OBJECTIVES)})")
    return list(names)
  seen, found = set(), []
  for name, record in losses.OBJECTIVES.items():
    if id(record) not in seen and (record.name == name or record.name not in losses.OBJECTIVES):
      seen.add(id(record))
      found.append(name)
  return found


def search_candidates(base, name: str, count: int) -> list[dict]:
  """``count`` setting changes for loss ``name`` (see the module docstring): {} first (its
  defaults), then draws that pass config_checks (up to 20 tries each)."""
  record = losses.OBJECTIVES[name]
  keys = [f"loss.{key}" for key in record.reads
          if isinstance(base.loss.get(key), float) and base.loss.get(key) != 0.0]
  keys.append("optimizer.learning_rate")
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  found = [{}]
  while len(found) < count:
    for _ in range(20):
      changes = {key: float(_value(base, key) * 2.0 ** rng.uniform(-1, 1)) for key in keys}
      try:
        config_checks.validate(default.override(_copy(base), {**loss_changes(base, name),
                                                             **changes}))
      except config_checks.ConfigError:
        continue
      found.append(changes)
      break
    else:
      break
  return found


def _value(config, path: str):
  *sections, key = path.split(".")
  for section in sections:
    config = config[section]
  return config[key]


# ------------------------------------------------------------------------------ the runs


def run_one(config, workdir: pathlib.Path, log) -> dict:
  """Trains ``config`` in ``workdir`` (removed after; its printout to ``log``) and returns
  {"metrics" or "error", "wall_s", "cpu_s"}: cpu_s is this process's CPU time over the run (all
  threads), which a shared machine's load does not inflate as it does the wall time."""
  cpu = time.process_time()
  found = _run_one(config, workdir, log)
  return {**found, "cpu_s": time.process_time() - cpu}


def _run_one(config, workdir: pathlib.Path, log) -> dict:
  started = time.time()
  shutil.rmtree(workdir, ignore_errors=True)
  try:
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
      summary = experiment.train_and_evaluate(config, str(workdir))
    test = summary["test"]
    if "retrieval" not in test:
      return {"error": "no retrieval figures: some test classes were trained on (see "
                       "data.train_classes, data.test_classes)", "wall_s": time.time() - started}
    metrics = {**{k: v for k, v in test["retrieval"].items() if k in loss_table.METRICS},
               **test.get("clustering", {})}
    return {"metrics": metrics, "wall_s": time.time() - started}
  except Exception as error:  # noqa: BLE001 -- a loss that fails is a row of the table
    if isinstance(error, preemption.Preempted):
      raise
    return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
            "wall_s": time.time() - started}
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


class Runs:
  """The runs of one benchmark, appended to ``<workdir>/runs.jsonl`` as they finish and read
  back on a rerun (keyed by their config changes), with a progress line for each."""

  def __init__(self, workdir: pathlib.Path, total: int):
    self.workdir, self.total, self.done, self.started = workdir, total, 0, time.time()
    self.path = workdir / "runs.jsonl"
    self.records = {}
    if self.path.exists():
      for line in self.path.read_text().splitlines():
        record = json.loads(line)
        self.records[record["key"]] = record

  def run(self, base, changes: dict, what: dict) -> dict:
    key = json.dumps({**what, "changes": changes}, sort_keys=True, default=list)
    self.done += 1
    record = self.records.get(key)
    if record is None:
      config = default.override(_copy(base), changes)
      name = f"{what['dataset']}_{what['loss']}_{what['phase']}_{what.get('seed', 0)}_{self.done}"
      with open(self.workdir / "logs" / f"{name}.log", "w") as log:
        record = {"key": key, **what, "changes": changes,
                  **run_one(config, self.workdir / "run", log)}
      with open(self.path, "a") as out:
        out.write(json.dumps(record, default=list) + "\n")
      self.records[key] = record
    found = (f"MAP@R {record['metrics']['mean_average_precision_at_r']:.4f}, P@1 "
             f"{record['metrics']['precision_at_1']:.4f}" if "metrics" in record
             else f"failed: {record['error'][:120]}")
    print(f"[{self.done}/{self.total}] {what['dataset']} {what['loss']} {what['phase']}"
          f"{' seed ' + str(what['seed']) if 'seed' in what else ''}: {found} "
          f"({record['wall_s']:.1f} s, {record.get('cpu_s', 0.0):.1f} s CPU; "
          f"{(time.time() - self.started) / 60:.1f} min so far)",
          flush=True)
    return record


def benchmark(base, datasets: dict, names: list, seeds: int, search: int, workdir) -> dict:
  """Every loss of ``names`` on every dataset ({name: config changes}): the search, then the test
  runs of the chosen settings. Returns {"chosen": {dataset: {loss: changes}}, "runs": [...]}."""
  (workdir / "logs").mkdir(parents=True, exist_ok=True)
  plans = {dataset: protocol(base, dataset, changes) for dataset, changes in datasets.items()}
  candidates = {name: search_candidates(base, name, search) for name in names}
  total = len(datasets) * sum(len(c) + seeds for c in candidates.values())
  runs, chosen, records = Runs(workdir, total), {}, []
  for dataset, plan in plans.items():
    for name in names:
      loss = loss_changes(base, name)
      scored = []
      for i, candidate in enumerate(candidates[name]):
        record = runs.run(base, {**plan["search"], **loss, **candidate},
                          {"dataset": dataset, "loss": name, "phase": "search", "candidate": i})
        records.append(record)
        score = record.get("metrics", {}).get("mean_average_precision_at_r", -1.0)
        scored.append((score, -i, candidate))
      best = max(scored, key=lambda s: s[:2])[2]
      chosen.setdefault(dataset, {})[name] = {**loss, **best}
      for seed in range(seeds):
        records.append(runs.run(base, {**plan["test"], **loss, **best, "seed": seed},
                                {"dataset": dataset, "loss": name, "phase": "test", "seed": seed}))
  return {"chosen": chosen, "runs": records, "plans": plans,
          "wall_s": time.time() - runs.started}


# ----------------------------------------------------------------------------- the driver


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="--section.key=value: a config change of every run")
  parser.add_argument("--losses", default="", help="comma-separated loss.name values (default: "
                      "every objective of siamese_jax.losses.OBJECTIVES)")
  parser.add_argument("--datasets", default=",".join(DATASETS), help="of " + ", ".join(DATASETS))
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--search", type=int, default=3, help="candidates per loss and dataset")
  parser.add_argument("--workdir", default="/tmp/benchmark_losses",
                      help="runs.jsonl (finished runs, reused on a rerun) and each run's log")
  parser.add_argument("--out", default=str(REPO_ROOT / "docs"),
                      help="the folder of results.md and results.json")
  parser.add_argument("--smoke", action="store_true", help="2 losses, 1 seed, tiny runs on the "
                      "embedded MNIST sample (seconds each), written to --workdir")
  args, rest = parser.parse_known_args(argv)
  changes = {}
  for flag in rest:
    path, sep, value = flag.lstrip("-").partition("=")
    if not flag.startswith("--") or not sep or path not in default.declared_paths():
      parser.error(f"{flag}: not a --section.key=value of a declared config key")
    try:
      changes[path] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      changes[path] = value
  return args, changes


def main(argv=None) -> int:
  args, changes = parse(argv)
  caches.enable_compilation_cache()
  import jax
  base = default.override(retrieval.get_config(), {
      k: v for k, v in changes.items() if not k.startswith("data.")})
  names = benchmarkable([n for n in args.losses.split(",") if n])
  workdir = pathlib.Path(args.workdir)
  if args.smoke:
    names, args.seeds, args.search = names[:2], 1, 2
    datasets = {"mnist": dict(SMOKE)}
    out = workdir
  elif "data.name" in changes:
    datasets = {changes["data.name"]: {**GENERIC, **{k: v for k, v in changes.items()
                                                     if k.startswith("data.")}}}
    out = pathlib.Path(args.out)
  else:
    datasets = {name: DATASETS[name] for name in args.datasets.split(",")}
    out = pathlib.Path(args.out)
  found = benchmark(base, datasets, names, args.seeds, args.search, workdir)
  by_dataset = loss_table.table(found["runs"])
  check_dataset = next(iter(datasets))
  epochs = (found["plans"][check_dataset]["test"].get("train.epochs") or base.train.epochs)
  result = {"arguments": "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
            "date": time.strftime("%Y-%m-%d"), "losses": names, "seeds": args.seeds,
            "search": args.search, "wall_s": found["wall_s"],
            "devices": f"{jax.default_backend()}, {len(jax.devices())} device(s), "
                       f"{os.cpu_count()} CPU cores",
            "table": by_dataset, "chosen": found["chosen"],
            "verdict": loss_table.verdict(by_dataset),
            "check_dataset": check_dataset,
            "check": loss_table.epochs_check(by_dataset, check_dataset, epochs),
            "reality_check": loss_table.REALITY_CHECK}
  out.mkdir(parents=True, exist_ok=True)
  json_path = out / "results.json"
  saved = json.loads(json_path.read_text()) if json_path.exists() else {}
  json_path.write_text(json.dumps({**saved, SECTION: result}, indent=1, default=float))
  report_markdown.replace_section(out / "results.md", SECTION, loss_table.markdown(result))
  print("\n".join(loss_table.markdown(result)))
  print(f"\n{loss_table.CHECK_RATIO} x {loss_table.REFERENCE_LOSS}'s test MAP@R after {epochs} "
        f"epochs on {check_dataset}:")
  for row in result["check"]:
    ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.3f}"
    print(f"  {row['loss']:24s} ratio {ratio:>6s}  {'pass' if row['pass'] else 'FAIL'}")
  print(f"wrote {out / 'results.md'} and {json_path} in {found['wall_s'] / 60:.1f} min")
  return 0


if __name__ == "__main__":
  sys.exit(main())
