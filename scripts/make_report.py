"""Runs every seed finding (experiments/findings.py) for several seeds and writes docs/results.md.

  .venv/bin/python scripts/make_report.py            # full report (see README for its duration)
  .venv/bin/python scripts/make_report.py --quick    # every arm, tiny runs: checks the pipeline
  .venv/bin/python scripts/make_report.py --only heads,abs --seeds 2
  .venv/bin/python scripts/make_report.py --only omniglot --train_only no_affine,image_42

Each arm x seed is one ``train_and_evaluate`` run into ``--runs/<mode>/<config hash>`` (arms with
the same config share their runs; finished runs are reused, so an interrupted report resumes; a
finished run of the same config before a key was added at a default that keeps it the same is
reused too, see ``compatible_run``). ``--only`` reruns some findings and keeps the other findings'
sections of the last report (from results.json, verdicts recomputed).
The trained model is then restored from its workdir and measured with ``siamese_jax.evaluators``:
pair verification on pairs of the test split, with the tuned threshold chosen on pairs of the
validation part held out of the training split (never on test data), plus what a finding needs
(SVM on pair features, retrieval metrics, Omniglot one-shot episodes, latent-space pictures).
Tables give mean ± std over seeds; each finding gets the verdict that experiments/findings.py
declares beside its arms, computed from its numbers; scripts/report_markdown.py writes them.
"""

import argparse
import contextlib
import hashlib
import json
import logging
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import jax  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
import numpy as np  # noqa: E402

from experiments import default, findings as findings_lib  # noqa: E402
from scripts import report_markdown  # noqa: E402
from siamese_jax import (checkpoints, config_keys, evaluate, evaluators,  # noqa: E402
                         experiment, losses, models)
from siamese_jax.data import protocol  # noqa: E402

# Training length per finding in the full report (on top of each arm's config).
FULL = {
    "keras": {"train.epochs": 20},
    "optimizer": {"train.epochs": 5},
    "margin": {"train.epochs": 5},
    "table": {"train.epochs": 5},
    "towers": {"train.epochs": 3},
    "new_classes": {"train.epochs": 5},
    "omniglot": {},  # each arm's own length (experiments/findings.py)
}
FULL_DEFAULT = {"train.epochs": 10}  # findings not in FULL
QUICK = {"train.epochs": 1}  # on top of each config's "tiny" variant (experiments/default.py)
EVAL_PAIRS = {"full": 2000, "quick": 200}
EPISODES = {"full": 400, "quick": 20}
# finding.extra -> the evaluator (siamese_jax.evaluators) that measures what the finding needs
EXTRA_EVALUATORS = {"svm": "svm", "retrieval": "retrieval", "latent": "elongation",
                    "two_sources": "cross_retrieval", "new_classes": "new_classes"}


# ---------------------------------------------------------------------------- running


def arm_config(finding, arm, seed: int, mode: str):
  config = findings_lib.arm_config(arm, seed, "tiny" if mode == "quick" else None)
  overrides = dict(QUICK if mode == "quick" else FULL.get(finding.key, FULL_DEFAULT))  # a copy
  if mode == "quick" and dict(arm.overrides).get("train.batch_size"):
    overrides["train.batch_size"] = min(dict(arm.overrides)["train.batch_size"], 512)
  overrides.update({"plots.animation": False,
                    "plots.latent": finding.extra in ("latent", "retrieval")})
  if mode == "quick" and config.model.test_time_shift:  # 9 views, not 25: the same code path
    overrides["model.test_time_shift"] = 1
  if mode == "quick" and config.model.encoder == "convnet4":  # Omniglot's arms: a narrow convnet
    overrides["model.filters"] = min(config.model.filters, 16)
  return default.override(config, overrides)


def config_hash(config) -> str:
  return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:12]


def _flat(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def _finished(workdir: pathlib.Path, epochs: int) -> bool:
  summary_path = workdir / "summary.json"
  return summary_path.exists() and json.loads(summary_path.read_text()).get("epochs") == epochs


def compatible_run(config, runs_dir: pathlib.Path) -> pathlib.Path | None:
  """A finished run in ``runs_dir`` whose config.json is ``config`` except for keys it lacks that
  ``config`` has at their declared default (keys added since it ran: they change the hash, not the
  run). A default whose value changed is in the old config.json, so it never matches; model.* and
  loss.* keys the chosen model and loss do not read are not compared, nor plots the run drew
  that ``config`` does not ask for. Values
  filled in from the data where the config says None match what the run stored: a classifier's
  model.num_classes, and data.image_size where the run's images had that size."""
  wanted = _flat(json.loads(config.to_json_best_effort()))
  defaults = _flat(json.loads(default.get_config().to_json_best_effort()))
  reads = ({f"model.{k}" for k in models.keys_read(config.model)}
           | {f"loss.{k}" for k in ("name",) + losses.OBJECTIVES[config.loss.name].reads})
  unread = {k for k in wanted if k.split(".")[0] in ("model", "loss") and k not in reads}
  for saved_path in sorted(runs_dir.glob("*/config.json")):
    saved = _flat(config_keys.upgrade(json.loads(saved_path.read_text())))
    if set(saved) - set(wanted) or not _finished(saved_path.parent, config.train.epochs):
      continue
    derived = {"model.num_classes"} if wanted.get("model.num_classes") is None else set()
    derived |= unread  # keys the model and loss do not read cannot change the run
    # Plots are drawn beside training and change nothing in it: a run with more of them will do
    # (e.g. `python main.py`'s own run copied in), one with fewer lacks figures a finding shows.
    derived |= {k for k in ("plots.animation", "plots.latent")
                if not wanted.get(k) and saved.get(k) is not None}
    if wanted.get("data.image_size") is None and saved.get("data.image_size") is not None:
      summary = json.loads((saved_path.parent / "summary.json").read_text())
      if summary["splits"]["train"]["shape"][1] == saved["data.image_size"]:
        derived.add("data.image_size")
    if all(saved[k] == v if k in saved else v == defaults.get(k, object())
           for k, v in wanted.items() if k not in derived):
      return saved_path.parent
  return None


def train_once(config, workdir: pathlib.Path) -> pathlib.Path:
  """The workdir of a finished run of ``config``: ``workdir`` after training into it unless a
  finished run is there or elsewhere in its folder (``compatible_run``); output goes to
  workdir/log.txt."""
  if _finished(workdir, config.train.epochs):
    return workdir
  found = compatible_run(config, workdir.parent)
  if found is not None:
    return found
  workdir.mkdir(parents=True, exist_ok=True)
  with open(workdir / "log.txt", "w") as log, contextlib.redirect_stdout(log), \
      contextlib.redirect_stderr(log):
    experiment.train_and_evaluate(config, str(workdir))
  return workdir


# ------------------------------------------------------------------------- evaluation


def evaluate_run(finding, config, workdir, mode, datasets) -> dict:
  """Test-pair verification (threshold tuned on pairs of the run's validation part, held out of
  its training split) and what the finding needs beyond it (siamese_jax.evaluators), of the
  run's last checkpoint."""
  _, state = checkpoints.load_trained(str(workdir))
  context = evaluators.for_report(config, state.params, state.apply_fn, datasets,
                                  EVAL_PAIRS[mode], EPISODES[mode])
  result = evaluators.run("pairs", context)
  summary = json.loads((workdir / "summary.json").read_text())
  final = summary["final"]
  result.update(train_loss=final.get("train_loss"), train_accuracy=final.get("train_accuracy"),
                examples_per_second=summary["examples_per_second"],
                train_seconds=summary["train_seconds"])
  if finding.extra in EXTRA_EVALUATORS:
    found = evaluators.run(EXTRA_EVALUATORS[finding.extra], context)
    result.update(found.get("retrieval", found))  # retrieval's figures under their own names
  if finding.key == "table" and evaluators.EVALUATORS["bce_head"].applies(context):
    result.update(evaluators.run("bce_head", context))
  if finding.extra == "oneshot":
    result["train_minutes"] = summary["train_seconds"] / 60
    # A model with test-time views is also measured without them (the same trained weights).
    for suffix, views in (("", True), ("_no_views", False))[:1 + bool(
        config.model.test_time_shift)]:
      ways = evaluators.run("one_shot", context.replace(views=views))["one_shot"]
      for n_way in (20, 5):
        result[f"oneshot_{n_way}way{suffix}"] = ways[f"{n_way}_way"]
  return result


def raw_pixel_oneshot(test_set, mode) -> dict:
  """The reference beside the Omniglot arms: 1-NN on raw pixels in the same episodes."""
  pixels = test_set.images.reshape(len(test_set.images), -1).astype(np.float32) / 255.0
  return {f"oneshot_{n}way": evaluate.one_shot_accuracy(
      jax.random.key(n), pixels, test_set.labels, n, episodes=EPISODES[mode],
      group_of_class=evaluators.one_shot.group_of_class(test_set), within_group=True)
      for n in (20, 5)}


# ------------------------------------------------------------------------------ driver


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=__doc__.split("\n", 1)[1])
  parser.add_argument("--quick", action="store_true", help="tiny runs: checks the pipeline")
  parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
  parser.add_argument("--only", default="", help="comma-separated finding keys: " +
                      ",".join(f.key for f in findings_lib.FINDINGS))
  parser.add_argument("--runs", default=str(REPO_ROOT / "runs" / "report"), help="run folders")
  parser.add_argument("--out", default=str(REPO_ROOT / "docs"), help="where results.md goes")
  parser.add_argument("--tfds_data_dir", default=None, help="tfds data folder for every run")
  parser.add_argument("--train_only", default="", help="comma-separated arm names, or "
                      "finding/arm where a name is in several findings: only these arms are "
                      "trained where no finished run exists; other arms appear only with the "
                      "finished runs they have (a long finding measured arm by arm)")
  args = parser.parse_args(argv)
  logging.getLogger().setLevel(logging.ERROR)  # the per-run notices are in each run's log.txt
  absl_logging.set_verbosity(absl_logging.ERROR)
  mode = "quick" if args.quick else "full"
  selected = [f for f in findings_lib.FINDINGS if not args.only or f.key in args.only.split(",")]
  unknown = set(filter(None, args.only.split(","))) - {f.key for f in findings_lib.FINDINGS}
  if unknown or not selected or args.seeds < 1:
    print(f"error: unknown finding(s) {sorted(unknown)} or --seeds < 1; see --help", file=sys.stderr)
    return 2
  seeds = list(range(args.seeds))
  # Seeds and arms of one architecture compile the same programs (the seed is data): cache them,
  # unless a cache is on already (the test suite's: a later test must keep it).
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(args.runs) / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  started = time.time()
  total = sum(len(f.arms) for f in selected) * len(seeds)
  done, sections, figures, results, run_seconds = 0, [], {}, {}, {}
  dataset_cache = {}
  for finding in selected:
    stats, workdirs, first_data_key = {}, {}, None
    evaluated = {}  # arms of this finding with one config (e.g. quick mode's epochs_*) share it
    for arm in finding.arms:
      for seed in seeds:
        config = arm_config(finding, arm, seed, mode)
        if args.tfds_data_dir:
          config.data.tfds_data_dir = args.tfds_data_dir
        workdir = pathlib.Path(args.runs) / mode / config_hash(config)
        if args.train_only and not selected_arm(finding, arm, args.train_only.split(",")):
          found = (workdir if _finished(workdir, config.train.epochs)
                   else compatible_run(config, workdir.parent))
          if found is None:
            print(f"{finding.key}/{arm.name} seed {seed}: no finished run, not trained "
                  "(--train_only)", flush=True)
            continue
        run_started = time.time()
        workdir = train_once(config, workdir)
        data_key = (config.data.to_json(sort_keys=True), config.seed)  # what load_datasets reads
        first_data_key = first_data_key or data_key
        if data_key not in dataset_cache:
          with contextlib.redirect_stderr(open(os.devnull, "w")):
            dataset_cache[data_key] = protocol.load_datasets(config)
        if workdir not in evaluated:  # the workdir names the config; its evaluation is fixed
          evaluated[workdir] = evaluate_run(finding, config, workdir, mode,
                                            dataset_cache[data_key])
          jax.clear_caches()  # this model's programs (their memory maps), as each run releases
        result = dict(evaluated[workdir])
        results[str(workdir)] = result
        run_seconds.setdefault(finding.key, {})[str(workdir)] = json.loads(
            (workdir / "summary.json").read_text())["wall_seconds"]
        for metric, value in result.items():
          stats.setdefault(arm.name, {}).setdefault(metric, []).append(value)
        workdirs.setdefault(arm.name, []).append(workdir)
        done += 1
        print(f"[{done}/{total}] {finding.key}/{arm.name} seed {seed}: acc@fixed "
              f"{result['accuracy_fixed']:.3f}, acc@tuned {result['accuracy_tuned']:.3f} "
              f"({time.time() - run_started:.0f} s; {(time.time() - started) / 60:.1f} min in all)",
              flush=True)
    if finding.extra == "oneshot":  # on the first run's images: arms may change the image size
      test_set = dataset_cache[first_data_key].test
      pixels = raw_pixel_oneshot(test_set, mode)
      stats["raw pixels"] = {metric: [value] * len(seeds) for metric, value in pixels.items()}
    if finding.extra in ("latent", "retrieval"):
      figures[finding.key] = report_markdown.latent_figures(finding, workdirs, out_dir)
    sections.append((finding, stats,
                     report_markdown.verdict_with_unrun_arms(finding, stats, workdirs, seeds)))
  name = "results_quick.md" if mode == "quick" else "results.md"
  kept = (report_markdown.keep_earlier_sections(out_dir / name, sections, figures, run_seconds)
          if args.only else [])
  for key in kept:  # a report written before runs were recorded: find them (no training)
    if not run_seconds.get(key):
      finding = next(f for f in findings_lib.FINDINGS if f.key == key)
      run_seconds[key] = finished_runs(finding, seeds, mode, pathlib.Path(args.runs) / mode)
  report_markdown.write_markdown(
      out_dir / name, mode, seeds, sections, started, figures,
      {run: t for runs in run_seconds.values() for run, t in runs.items()}, kept)
  json_path = (out_dir / name).with_suffix(".json")
  earlier = json.loads(json_path.read_text()) if json_path.exists() else {}
  json_path.write_text(json.dumps(
      {**{key: earlier[key] for key in report_markdown.OTHER_SECTIONS if key in earlier},
       **{f.key: s for f, s, _ in sections},
       report_markdown.META: {"runs": run_seconds, "figures": figures}}, indent=1, default=float))
  print(f"wrote {out_dir / name} in {(time.time() - started) / 60:.1f} min"
        + (f", keeping the sections of {', '.join(kept)} from the last report" if kept else ""))
  return 0


def selected_arm(finding, arm, names) -> bool:
  """Whether ``names`` (--train_only) names ``arm`` of ``finding``: by its name, or as
  finding/arm (e.g. keras/contrastive, not omniglot's arm of that name)."""
  return arm.name in names or f"{finding.key}/{arm.name}" in names


def finished_runs(finding, seeds, mode: str, runs_dir: pathlib.Path) -> dict:
  """{workdir: wall seconds} of the finished runs of ``finding``'s arms that are in ``runs_dir``."""
  found = {}
  for arm in finding.arms:
    for seed in seeds:
      config = arm_config(finding, arm, seed, mode)
      workdir = runs_dir / config_hash(config)
      workdir = workdir if _finished(workdir, config.train.epochs) else compatible_run(config,
                                                                                        runs_dir)
      if workdir is not None:
        found[str(workdir)] = json.loads((workdir / "summary.json").read_text())["wall_seconds"]
  return found



if __name__ == "__main__":
  sys.exit(main())
