"""The loss benchmark's figures (scripts/benchmark_losses.py): its test runs as a table (mean ±
std over seeds), the verdict (which losses are within noise of the best: a paired t-test over
seeds), the check against the reference loss, and its section of docs/results.md."""

import numpy as np

METRICS = ("mean_average_precision_at_r", "r_precision", "precision_at_1", "recall_at_1",
           "recall_at_2", "recall_at_4", "recall_at_8", "nmi", "ami")
SHORT = {"mean_average_precision_at_r": "MAP@R", "r_precision": "R-prec", "precision_at_1": "P@1",
         "recall_at_1": "R@1", "recall_at_2": "R@2", "recall_at_4": "R@4", "recall_at_8": "R@8",
         "nmi": "NMI", "ami": "AMI"}
REFERENCE_LOSS = "contrastive"  # the check's reference
CHECK_RATIO = 0.8
# Not quoted: their table could not be checked against the paper's own text from here.
REALITY_CHECK = ("Musgrave, Belongie, Lim, \"A Metric Learning Reality Check\", ECCV 2020 "
                 "(arXiv:2003.08505): their CUB-200 / Cars196 MAP@R figures are not quoted here: "
                 "not verified (the paper's tables could not be read from this machine).")



def table(records: list) -> dict:
  """{dataset: {loss: {metric: {"mean", "std", "values" by seed}}}} of the test runs (std over
  seeds with ddof 1; 0 for one seed); a loss whose runs failed has {"errors": [...]}."""
  found = {}
  for record in records:
    if record["phase"] != "test":
      continue
    entry = found.setdefault(record["dataset"], {}).setdefault(record["loss"], {})
    if "error" in record:
      entry.setdefault("errors", []).append(record["error"])
      continue
    for metric, value in record["metrics"].items():
      entry.setdefault(metric, {"values": {}})["values"][str(record["seed"])] = value
  for losses_found in found.values():
    for entry in losses_found.values():
      for metric, stats in entry.items():
        if metric != "errors":
          values = np.array(list(stats["values"].values()))
          stats["mean"] = float(values.mean())
          stats["std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return found


def within_noise(best: dict, other: dict) -> bool | None:
  """Whether ``other``'s MAP@R is within noise of ``best``'s (values by seed): a two-sided paired
  t-test at 5 % over the seeds both have does not find best better; None under two seeds."""
  from scipy import stats
  seeds = sorted(set(best) & set(other))
  if len(seeds) < 2:
    return None
  differences = np.array([best[s] - other[s] for s in seeds])
  spread = differences.std(ddof=1) / np.sqrt(len(seeds))
  if spread == 0:
    return bool(differences.mean() <= 0)
  return bool(differences.mean() <= stats.t.ppf(0.975, len(seeds) - 1) * spread)


def verdict(found: dict) -> dict:
  """{dataset: {"best", "within_noise": [...], "behind": [...]}} by test MAP@R, and "start_from":
  the loss within noise of the best on every dataset with the best mean rank (None without one)."""
  key = "mean_average_precision_at_r"
  result, ranks = {}, {}
  for dataset, by_loss in found.items():
    scored = {loss: entry[key] for loss, entry in by_loss.items() if key in entry}
    if not scored:
      continue
    best = max(scored, key=lambda loss: scored[loss]["mean"])
    close = {loss: within_noise(scored[best]["values"], stats["values"])
             for loss, stats in scored.items() if loss != best}
    result[dataset] = {"best": best, "within_noise": [l for l, c in close.items() if c],
                       "behind": [l for l, c in close.items() if c is False],
                       "undecided": [l for l, c in close.items() if c is None]}
    for rank, loss in enumerate(sorted(scored, key=lambda l: -scored[l]["mean"])):
      ranks.setdefault(loss, []).append(rank)
  candidates = [loss for loss in ranks if len(ranks[loss]) == len(result) and all(
      loss == r["best"] or loss in r["within_noise"] for r in result.values())]
  start = min(candidates, key=lambda loss: (np.mean(ranks[loss]), loss)) if candidates else None
  return {"datasets": result, "start_from": start}


def epochs_check(found: dict, dataset: str, epochs: int) -> list[dict]:
  """Each loss's test MAP@R over the reference loss's on ``dataset`` (means over seeds), and
  whether it reaches CHECK_RATIO."""
  by_loss = found.get(dataset, {})
  key = "mean_average_precision_at_r"
  reference = by_loss.get(REFERENCE_LOSS, {}).get(key, {}).get("mean")
  rows = []
  for loss, entry in by_loss.items():
    if reference and key in entry:
      ratio = entry[key]["mean"] / reference
      rows.append({"loss": loss, "ratio": ratio, "pass": ratio >= CHECK_RATIO, "epochs": epochs})
    else:
      rows.append({"loss": loss, "ratio": None, "pass": False, "epochs": epochs,
                   "why": "failed" if key not in entry else f"no {REFERENCE_LOSS} run"})
  return rows


def _cell(entry: dict, metric: str) -> str:
  stats = entry.get(metric)
  return "" if stats is None else f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def markdown(result: dict) -> list[str]:
  """The results.md section of a benchmark ``result`` (what results.json holds)."""
  lines = ["## Losses on classes never trained on (issue 28)", "",
           f"Generated by `python scripts/benchmark_losses.py{result['arguments']}` on "
           f"{result['date']}: {len(result['losses'])} losses x {len(result['table'])} datasets x "
           f"{result['seeds']} seeds after a search of {result['search']} candidates per loss "
           f"and dataset on validation classes; {result['wall_s'] / 60:.1f} min "
           f"({result['devices']}). Percentages: mean ± std over seeds on the test classes. "
           "Every loss: the encoder, embedding size and budget of experiments/retrieval.py "
           "(cosine distance); its settings the search's choice (results.json: `chosen`).", ""]
  columns = list(METRICS)
  for dataset, by_loss in result["table"].items():
    lines += [f"### {dataset}", "", "| loss | " + " | ".join(SHORT[c] for c in columns) + " |",
              "|---|" + "---|" * len(columns)]
    order = sorted(by_loss, key=lambda loss: -by_loss[loss].get(
        "mean_average_precision_at_r", {"mean": -1})["mean"])
    for loss in order:
      entry = by_loss[loss]
      if "errors" in entry and len(entry) == 1:
        lines.append(f"| {loss} | failed: {entry['errors'][0][:80]} |" + " |" * (len(columns) - 1))
      else:
        lines.append(f"| {loss} | " + " | ".join(_cell(entry, c) for c in columns) + " |")
    lines.append("")
  lines += [f"*Their figures.* {REALITY_CHECK}", ""]
  verdict_found = result["verdict"]
  for dataset, found in verdict_found["datasets"].items():
    lines.append(f"- {dataset}: best {found['best']}; within noise of it (paired t-test over "
                 f"seeds, 5 %): {', '.join(found['within_noise']) or 'none'}; behind: "
                 f"{', '.join(found['behind']) or 'none'}"
                 + (f"; undecided (one seed): {', '.join(found['undecided'])}"
                    if found["undecided"] else "") + ".")
  start = verdict_found["start_from"]
  if start:
    dataset = next(iter(result["chosen"]))
    chosen = sorted(result["chosen"][dataset][start].items())
    flags = " ".join(f"--config.{k}={v}" for k, v in chosen
                     if k.startswith(("loss.", "optimizer.", "model.head")))
    lines += ["", f"**Verdict**: start from `experiments/retrieval.py` with {start}: `{flags}` "
              f"(the settings the search chose on {dataset})."]
  else:
    lines += ["", "**Verdict**: no loss is within noise of the best on every dataset."]
  check = result["check"]
  if check:
    lines += ["", f"*Check*: every loss reaches >= {CHECK_RATIO} x {REFERENCE_LOSS}'s test MAP@R "
              f"after {check[0]['epochs']} epochs on class-disjoint {result['check_dataset']}: "
              + ", ".join(f"{row['loss']} {row['ratio']:.2f}" if row["ratio"] is not None
                          else f"{row['loss']} ({row['why']})" for row in check)
              + f" ({sum(row['pass'] for row in check)} of {len(check)} pass)."]
  return lines
