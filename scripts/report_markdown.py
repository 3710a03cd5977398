"""The report's document (scripts/make_report.py): results.md's sections, their tables, verdict
sentences and latent-space figures, and the sections kept from the last report's results.json.

A section is ``(finding, stats, (reproduced, sentence))``: stats as experiments/findings.py
describes them, the verdict from ``findings.verdict``.
"""

import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

from experiments import findings as findings_lib
from siamese_jax import plots

META = "_meta"  # results.json: {"runs": {finding: {workdir: wall s}}, "figures": {finding: [...]}}
# Sections that other scripts write into results.md (between section_markers) and results.json
# (under the same key): scripts/benchmark_losses.py's. The report keeps them as they are.
OTHER_SECTIONS = ("loss_benchmark",)


def section_markers(name: str) -> tuple[str, str]:
  """The lines that open and close section ``name`` of results.md written by another script."""
  return (f"<!-- section {name}: written by its own script, kept by make_report.py -->",
          f"<!-- end of section {name} -->")


def other_sections(text: str) -> str:
  """The OTHER_SECTIONS blocks of a results.md text (markers included), "" if none."""
  blocks = []
  for name in OTHER_SECTIONS:
    start, end = section_markers(name)
    if start in text and end in text.split(start, 1)[1]:
      blocks.append(start + text.split(start, 1)[1].split(end, 1)[0] + end)
  return "\n\n".join(blocks)


def replace_section(path: pathlib.Path, name: str, lines: list[str]) -> None:
  """Writes ``lines`` as section ``name`` of the markdown file at ``path``: in place of its last
  version, else at the end (a new file holds the section alone)."""
  start, end = section_markers(name)
  block = "\n".join([start, *lines, end])
  text = path.read_text() if path.exists() else ""
  if start in text and end in text.split(start, 1)[1]:
    before, rest = text.split(start, 1)
    text = before + block + rest.split(end, 1)[1]
  else:
    text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
  path.write_text(text)


def verdict_with_unrun_arms(finding, stats, workdirs: dict, seeds: list) -> tuple:
  """The finding's verdict, its sentence saying which arms have fewer finished runs than seeds
  (--train_only leaves them out or short): their numbers are not yet 3-seed figures."""
  try:
    reproduced, sentence = findings_lib.verdict(finding, stats)
  except KeyError:  # the verdict compares arms not run yet
    reproduced, sentence = None, "no verdict: it needs arms not run yet"
  unrun = [arm.name for arm in finding.arms if arm.name not in workdirs]
  short = [f"{arm.name} {len(workdirs[arm.name])} of {len(seeds)}" for arm in finding.arms
           if 0 < len(workdirs.get(arm.name, ())) < len(seeds)]
  if short:
    sentence += f". Seeds run so far: {', '.join(short)}"
  if unrun:
    sentence += (f". Not yet run: {', '.join(unrun)} (make_report.py --only {finding.key} "
                 "--train_only ARMS)")
  return reproduced, sentence


def keep_earlier_sections(path: pathlib.Path, sections: list, figures: dict,
                          run_seconds: dict) -> list[str]:
  """With ``--only``: the other findings' sections of the last report at ``path`` (its .json:
  their numbers; verdicts recomputed) added to ``sections``, ``figures`` and ``run_seconds`` in
  FINDINGS order. A finding whose arms changed since keeps the arms it had, and its verdict says
  which arms have no numbers yet. Returns the keys kept."""
  earlier_path = path.with_suffix(".json")
  if not earlier_path.exists():
    return []
  earlier = json.loads(earlier_path.read_text())
  meta = earlier.get(META, {})
  done = {finding.key for finding, _, _ in sections}
  kept = []
  for finding in findings_lib.FINDINGS:
    stats = earlier.get(finding.key)
    if finding.key in done or stats is None:
      continue
    missing = [arm.name for arm in finding.arms if arm.name not in stats]
    try:
      reproduced, sentence = findings_lib.verdict(finding, stats)
    except KeyError:  # the verdict needs an arm the last report did not run
      reproduced, sentence = None, "no verdict: it needs arms the last report did not run"
    if missing:
      sentence += (f" (numbers of the last report, whose arms differ: {', '.join(missing)} not "
                   f"yet run; run --only {finding.key})")
      print(f"note: {finding.key}: kept from the last report without {', '.join(missing)}",
            file=sys.stderr)
    sections.append((finding, stats, (reproduced, sentence)))
    found = ([tuple(f) for f in meta["figures"][finding.key]] if finding.key in meta.get(
        "figures", {}) else  # a report written before figures were recorded: its files, by name
             [("latent spaces", str(f.relative_to(path.parent))) for f in sorted(
                 (path.parent / "figures").glob(f"{finding.key}_latent*.png"))])
    if found:
      figures[finding.key] = found
    run_seconds[finding.key] = meta.get("runs", {}).get(finding.key, {})
    kept.append(finding.key)
  order = [finding.key for finding in findings_lib.FINDINGS]
  sections.sort(key=lambda section: order.index(section[0].key))
  return kept


COLUMNS = {  # metric -> header
    "accuracy_fixed": "acc @ fixed", "accuracy_tuned": "acc @ tuned", "roc_auc": "ROC AUC",
    "eer": "EER", "train_loss": "train loss", "examples_per_second": "ex/s",
    "svm_learned": "SVM learned", "svm_raw_pixels": "SVM pixels", "knn_accuracy": "k-NN acc",
    "precision_at_1": "P@1", "r_precision": "R-prec", "mean_average_precision_at_r": "MAP@R",
    "elongation": "elongation", "oneshot_20way": "20-way", "oneshot_5way": "5-way",
    "oneshot_20way_no_views": "20-way, no test-time views",
    "oneshot_5way_no_views": "5-way, no test-time views",
    "train_minutes": "train min",
    "cross_precision_at_1": "8x8 -> MNIST P@1", "cross_map_at_r": "8x8 -> MNIST MAP@R",
    "seen_accuracy": "trained acc", "seen_roc_auc": "trained AUC", "seen_2way": "trained 2-way",
    "new_accuracy": "new acc", "new_roc_auc": "new AUC", "new_2way": "new 2-way",
    "all_10way": "10-way", "head_init_positive": "head starts > 0", "logit_std": "logit std",
    "logit_saturated": "|logit| > 5",
}


def _cell(values, metric):
  values = [v for v in values if v is not None]
  if not values:
    return "–"
  mean, std = np.mean(values), np.std(values)
  if metric == "examples_per_second":
    return f"{mean:,.0f}"
  if metric == "train_minutes":
    return f"{mean:.1f}"
  if metric in ("train_loss", "elongation", "logit_std"):
    return f"{mean:.3f} ± {std:.3f}"
  return f"{100 * mean:.1f} ± {100 * std:.1f}"


def write_markdown(path, mode, seeds, sections, started, figures, run_seconds,
                   kept=()) -> None:
  earlier = (f" The sections of {', '.join(kept)} are kept from the last report (this invocation "
             "ran the others with --only; verdicts recomputed from the kept numbers); the run "
             "count covers the runs recorded for each section." if kept else "")
  lines = ["# Results: the seed findings, reproduced", "",
           f"Generated by `python scripts/make_report.py{' --quick' if mode == 'quick' else ''}` "
           f"on {time.strftime('%Y-%m-%d')}: {len(run_seconds)} distinct training runs "
           f"({sum(run_seconds.values()) / 60:.1f} min of run wall time in all; this invocation "
           f"took {(time.time() - started) / 60:.1f} min, reusing finished runs) "
           f"({jax.default_backend()}, {len(jax.devices())} device(s), {os.cpu_count()} CPU "
           f"cores, jax {jax.__version__}); {len(seeds)} seeds per arm, mean ± std.", "",
           "Pair accuracies are on balanced pairs of the test split; *acc @ fixed* uses the "
           "untuned threshold (eval.threshold = margin / 2 on the distance, logit 0 for BCE "
           "heads), *acc @ tuned* the threshold that was best on pairs of the validation part "
           "held out of the training split (never on test data). Percentages are mean ± std "
           "over seeds." + earlier]
  if mode == "quick":
    lines += ["", "**Quick mode**: every arm trained for a handful of steps only. These numbers "
              "check the pipeline; they do not test the findings."]
  summary_rows, intro_end = [], len(lines)
  for finding, stats, (reproduced, sentence) in sections:
    metrics = [c for c in COLUMNS if any(any(v is not None for v in s.get(c, []))
                                         for s in stats.values())]
    runs = [f"*Runs.* {finding.note}.", ""] if finding.note else []
    lines += ["", f"## {finding.title}", "", f"*Claim.* {finding.claim}.", "", *runs,
              "| arm | " + " | ".join(COLUMNS[c] for c in metrics) + " |",
              "|---|" + "---|" * len(metrics)]
    for arm_name, arm_stats in stats.items():
      lines.append(f"| {arm_name} | " + " | ".join(_cell(arm_stats.get(c, []), c)
                                                   for c in metrics) + " |")
    label = {True: "reproduced", False: "not reproduced", None: "measured"}[reproduced]
    lines += ["", f"**{label.capitalize()}**: {sentence}."]
    for caption, figure in figures.get(finding.key, []):
      lines += ["", f"![{caption}]({figure})"]
    summary_rows.append(f"| {finding.title} | {label} |")
  lines[intro_end:intro_end] = ["", "| finding | verdict |", "|---|---|", *summary_rows]
  kept = other_sections(pathlib.Path(path).read_text()) if pathlib.Path(path).exists() else ""
  pathlib.Path(path).write_text("\n".join(lines) + "\n" + (f"\n{kept}\n" if kept else ""))


def latent_figures(finding, workdirs, out_dir) -> list:
  """Seed 0's last latent-space plot of each arm, side by side, copied under docs/figures."""
  frames, titles = [], []
  for arm in finding.arms:
    if arm.name not in workdirs:  # not run (--train_only)
      continue
    candidates = sorted((workdirs[arm.name][0] / "plots").glob("latent_epoch*.png"))
    if candidates:
      frames.append(str(candidates[-1]))
      titles.append(arm.name)
  if not frames:
    return []
  out = out_dir / "figures" / f"{finding.key}_latent.png"
  out.parent.mkdir(parents=True, exist_ok=True)
  figures = []
  per_row = 4
  for start in range(0, len(frames), per_row):
    part = out if start == 0 else out.with_name(f"{finding.key}_latent_{start // per_row}.png")
    plots.side_by_side(frames[start:start + per_row], titles[start:start + per_row], str(part))
    figures.append((f"latent spaces: {', '.join(titles[start:start + per_row])}",
                    str(part.relative_to(out_dir))))
  return figures
