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
The trained model is then restored from its workdir and measured with ``siamese_jax.evaluate``:
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
import optax  # noqa: E402

from experiments import default, findings as findings_lib  # noqa: E402
from scripts import report_markdown  # noqa: E402
from siamese_jax import (batches, checkpoints, data, evaluate, experiment, models,  # noqa: E402
                         plots, scoring, sharding, splits, train)

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
           | {f"loss.{k}" for k in ("name",) + train.LOSSES[config.loss.name].reads})
  unread = {k for k in wanted if k.split(".")[0] in ("model", "loss") and k not in reads}
  for saved_path in sorted(runs_dir.glob("*/config.json")):
    saved = _flat(json.loads(saved_path.read_text()))
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


def _pairs(state, dataset, key, pair_scoring, num_pairs, pair_source, shared_weights=True,
           embed_split=None):
  """(scores [M], same [M], higher_means_same) of the pairs evaluate.make_pair_scorer draws from
  ``dataset`` with ``key``. Where the split has fewer images than the M pairs hold (Omniglot's
  test alphabets: 2,120 images, 4,000 in the pairs, each with 25 test-time views), each image is
  embedded once and the pairs are scored from the embeddings: the same scores up to float
  rounding, for about half the work. ``embed_split()``: the split's tower-0 embeddings where the
  caller has them (default: computed here)."""
  data = sharding.device_data(dataset.images, dataset.labels, dataset.num_classes,
                              sharding.make_mesh(jax.devices()[:1]))
  spec, num_batches = evaluate.pair_batches(num_pairs, pair_source)
  if pair_source != "balanced" or len(dataset.images) >= 2 * spec.batch_size * num_batches:
    score = evaluate.make_pair_scorer(state.apply_fn, pair_scoring, num_pairs, pair_source)
    scores, same = jax.device_get(score(state.params, data, key))
    return scores, same, pair_scoring.higher_means_same
  drawn = jax.device_get(evaluate.draw_pairs(key, data.index, len(dataset.images), num_pairs,
                                             pair_source))
  idx_a, idx_b, same = drawn["idx_a"], drawn["idx_b"], drawn["same"]
  emb_a = embed_split() if embed_split else _embed(state, dataset.images)
  emb_b = emb_a if shared_weights else _embed(state, dataset.images, tower=1)
  scores = scoring.score_embeddings(state.apply_fn, state.params, emb_a[idx_a], emb_b[idx_b],
                                    pair_scoring)
  return np.asarray(scores), same, pair_scoring.higher_means_same


def _embed(state, images, tower: int = 0, views: bool = True) -> np.ndarray:
  return scoring.embed_in_batches(state.apply_fn, state.params, images, tower=tower, views=views)


def _pair_features(state, dataset, key, num_pairs):
  """(|f(a) - f(b)| [M, D], raw |a - b| [M, H W C], same [M]) for balanced pairs."""
  data = sharding.device_data(dataset.images, dataset.labels, dataset.num_classes,
                              sharding.make_mesh(jax.devices()[:1]))
  batch = batches.sample_batch(key, data, batches.BatchSpec(kind="pairs", batch_size=num_pairs))
  emb_a, emb_b = _embed(state, batch["x_a"]), _embed(state, batch["x_b"])
  raw_a = np.asarray(batch["x_a"], np.float32).reshape(num_pairs, -1) / 255.0
  raw_b = np.asarray(batch["x_b"], np.float32).reshape(num_pairs, -1) / 255.0
  return np.abs(emb_a - emb_b), np.abs(raw_a - raw_b), np.asarray(batch["same"]) > 0


def _similarity_fn(state, config):
  """Higher = more alike, for one-shot episodes, as siamese_jax.scoring scores a pair."""
  pair_scoring = scoring.pair_scoring_from_config(config)
  sign = 1.0 if pair_scoring.higher_means_same else -1.0
  return lambda a, b: sign * scoring.score_embeddings(state.apply_fn, state.params, a, b,
                                                      pair_scoring)


def cluster_elongation(points, labels) -> float:
  """Mean over classes of sqrt(largest / smallest covariance eigenvalue) of 2-D points [N, 2]:
  1 for round clusters, large for spindly ones (seed 002's Adam vs SGD picture, as a number)."""
  ratios = []
  for c in np.unique(labels):
    eig = np.linalg.eigvalsh(np.cov(points[labels == c].T))
    ratios.append(np.sqrt(eig[-1] / max(eig[0], 1e-12)))
  return float(np.mean(ratios))


def evaluate_run(finding, config, workdir, mode, datasets) -> dict:
  """Test-pair verification (threshold tuned on pairs of the run's validation part, held out of
  its training split) and what the finding needs beyond it, of the run's last checkpoint."""
  _, state = checkpoints.load_trained(str(workdir))
  pair_scoring = scoring.pair_scoring_from_config(config)
  key = jax.random.key(config.seed + 100)
  num_pairs = EVAL_PAIRS[mode]
  train_set, test_set = datasets.train, datasets.test
  embedded = {}

  def test_embeddings(views: bool = True) -> np.ndarray:
    """The test split's embeddings [N, D] (tower 0), once for pairs, one-shot and retrieval."""
    if views not in embedded:
      embedded[views] = _embed(state, test_set.images, views=views)
    return embedded[views]

  (val_scores, val_same, higher), (test_scores, test_same, _) = [
      _pairs(state, part, jax.random.fold_in(key, i), pair_scoring, num_pairs,
             config.train.pair_source, config.model.shared_weights, embed_split)
      for i, (part, embed_split) in enumerate(((datasets.validation, None),
                                               (test_set, test_embeddings)))]
  result = evaluate.pair_verification(test_scores, test_same, val_scores, val_same, higher,
                                      fixed_threshold=pair_scoring.threshold)
  summary = json.loads((workdir / "summary.json").read_text())
  final = summary["final"]
  result.update(train_loss=final.get("train_loss"), train_accuracy=final.get("train_accuracy"),
                examples_per_second=summary["examples_per_second"],
                train_seconds=summary["train_seconds"])
  if finding.extra == "svm":
    train_features = _pair_features(state, train_set, jax.random.fold_in(key, 7), num_pairs)
    test_features = _pair_features(state, test_set, jax.random.fold_in(key, 8), num_pairs)
    result["svm_learned"] = evaluate.svm_pair_accuracy(train_features[0], train_features[2],
                                                       test_features[0], test_features[2])
    result["svm_raw_pixels"] = evaluate.svm_pair_accuracy(train_features[1], train_features[2],
                                                          test_features[1], test_features[2])
  if finding.extra in ("retrieval", "latent"):
    embeddings = test_embeddings()
    if finding.extra == "retrieval":
      result.update(evaluate.retrieval_metrics(embeddings, test_set.labels))
    else:
      result["elongation"] = cluster_elongation(plots.project_2d(embeddings)[0], test_set.labels)
  if finding.extra == "two_sources":
    result.update(cross_source_retrieval(state, test_set, config.model.distance))
  if finding.extra == "new_classes":
    result.update(new_class_figures(state, config, datasets, key, mode,
                                    (val_scores, val_same, higher)))
  if config.model.head == "abs_diff" and finding.key == "table":
    result.update(bce_head_figures(config, test_scores, test_set.images.shape[1:]))
  if finding.extra == "oneshot":
    result["train_minutes"] = summary["train_seconds"] / 60
    similarity = _similarity_fn(state, config)
    # A model with test-time views is also measured without them (the same trained weights).
    for suffix, views in (("", True), ("_no_views", False))[:1 + bool(
        config.model.test_time_shift)]:
      embeddings = test_embeddings(views)
      for n_way in (20, 5):
        result[f"oneshot_{n_way}way{suffix}"] = evaluate.one_shot_accuracy(
            jax.random.fold_in(key, n_way), embeddings, test_set.labels, n_way,
            episodes=EPISODES[mode], similarity=similarity,
            alphabet_of_class=_alphabet_of_class(test_set), within_alphabet=True)
  return result


def cross_source_retrieval(state, test_set, distance: str) -> dict:
  """Each second-source test image (tower 1) as a query among the first source's (tower 0):
  seed 002's use, a query of one kind finding examples of its class of the other kind."""
  source = data.two_sources.source_of(test_set.labels, test_set.num_classes)
  digit = data.two_sources.shared_class(test_set.labels, test_set.num_classes)
  queries = _embed(state, test_set.images[source == 1], tower=1)
  references = _embed(state, test_set.images[source == 0], tower=0)
  found = evaluate.cross_retrieval_metrics(queries, digit[source == 1], references,
                                           digit[source == 0], distance=distance)
  return {"cross_precision_at_1": found["precision_at_1"],
          "cross_map_at_r": found["mean_average_precision_at_r"]}


def new_class_figures(state, config, datasets, key, mode, validation_pairs) -> dict:
  """Pair verification (threshold tuned on the validation pairs of the trained classes) and
  one-shot accuracy on the test images of the trained classes ("seen_*") and of the classes
  never trained on ("new_*"), and 10-way one-shot over every test class."""
  test_set, pair_scoring = datasets.test, scoring.pair_scoring_from_config(config)
  similarity = _similarity_fn(state, config)
  val_scores, val_same, higher = validation_pairs
  seen = np.isin(test_set.labels, np.asarray(config.data.train_classes))
  result = {}
  for i, (name, members) in enumerate((("seen", seen), ("new", ~seen))):
    part = splits.take(test_set, np.flatnonzero(members))
    scores, same, _ = _pairs(state, part, jax.random.fold_in(key, 20 + i), pair_scoring,
                             EVAL_PAIRS[mode], "balanced", config.model.shared_weights)
    found = evaluate.pair_verification(scores, same, val_scores, val_same, higher,
                                       fixed_threshold=pair_scoring.threshold)
    result[f"{name}_accuracy"], result[f"{name}_roc_auc"] = (found["accuracy_tuned"],
                                                             found["roc_auc"])
    result[f"{name}_2way"] = evaluate.one_shot_accuracy(
        jax.random.fold_in(key, 30 + i), _embed(state, part.images), part.labels, 2,
        episodes=EPISODES[mode], similarity=similarity)
  result["all_10way"] = evaluate.one_shot_accuracy(
      jax.random.fold_in(key, 40), _embed(state, test_set.images), test_set.labels,
      test_set.num_classes, episodes=EPISODES[mode], similarity=similarity)
  return result


def bce_head_figures(config, test_scores, image_shape) -> dict:
  """What a pair-BCE run's head did: whether every weight of its Dense(1) on |f(a) - f(b)| was
  > 0 at initialisation (then a larger distance starts out meaning "same"), the spread of its
  test logits [M] and the fraction beyond |5| (a saturated sigmoid: p < 0.7 % or > 99.3 %)."""
  init_key = jax.random.split(jax.random.key(config.seed), 3)[0]  # as train_and_evaluate draws
  initial = train.create_train_state(init_key, models.build_model(config.model),
                                     list(image_shape), optax.identity()).params
  logits = np.asarray(test_scores, np.float64)
  return {"head_init_positive": float(np.all(np.asarray(initial["head"]["Dense_0"]["kernel"]) > 0)),
          "logit_std": float(np.std(logits)), "logit_saturated": float(np.mean(np.abs(logits) > 5))}


def _alphabet_of_class(dataset):
  alphabet_of_class = np.zeros(dataset.num_classes, np.int32)
  alphabet_of_class[dataset.labels] = dataset.alphabets
  return alphabet_of_class


def raw_pixel_oneshot(test_set, mode) -> dict:
  """The reference beside the Omniglot arms: 1-NN on raw pixels in the same episodes."""
  pixels = test_set.images.reshape(len(test_set.images), -1).astype(np.float32) / 255.0
  return {f"oneshot_{n}way": evaluate.one_shot_accuracy(
      jax.random.key(n), pixels, test_set.labels, n, episodes=EPISODES[mode],
      alphabet_of_class=_alphabet_of_class(test_set), within_alphabet=True) for n in (20, 5)}


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
  parser.add_argument("--train_only", default="", help="comma-separated arm names: only these "
                      "arms are trained where no finished run exists; other arms appear only "
                      "with the finished runs they have (a long finding measured arm by arm)")
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
  # Seeds and arms of one architecture compile the same programs (the seed is data): cache them.
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
    for arm in finding.arms:
      for seed in seeds:
        config = arm_config(finding, arm, seed, mode)
        if args.tfds_data_dir:
          config.data.tfds_data_dir = args.tfds_data_dir
        workdir = pathlib.Path(args.runs) / mode / config_hash(config)
        if args.train_only and arm.name not in args.train_only.split(","):
          found = (workdir if _finished(workdir, config.train.epochs)
                   else compatible_run(config, workdir.parent))
          if found is None:
            print(f"{finding.key}/{arm.name} seed {seed}: no finished run, not trained "
                  "(--train_only)", flush=True)
            continue
        run_started = time.time()
        workdir = train_once(config, workdir)
        data_key = (config.data.name, config.data.train_split, config.data.test_split,
                    config.data.image_size, config.data.validation_fraction,
                    config.data.validation_by, config.data.rotation_classes,
                    config.data.mirror_classes, config.seed,
                    config.data.source_b, config.data.train_classes)
        first_data_key = first_data_key or data_key
        if data_key not in dataset_cache:
          with contextlib.redirect_stderr(open(os.devnull, "w")):
            dataset_cache[data_key] = experiment.load_datasets(config)
        result = evaluate_run(finding, config, workdir, mode, dataset_cache[data_key])
        jax.clear_caches()  # this model's programs (their memory maps), as each run releases its own
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
  (out_dir / name).with_suffix(".json").write_text(json.dumps(
      {**{f.key: s for f, s, _ in sections},
       report_markdown.META: {"runs": run_seconds, "figures": figures}}, indent=1, default=float))
  print(f"wrote {out_dir / name} in {(time.time() - started) / 60:.1f} min"
        + (f", keeping the sections of {', '.join(kept)} from the last report" if kept else ""))
  return 0


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
