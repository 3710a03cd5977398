"""Builds one-shot runs in Lake et al.'s layout from an Omniglot background zip, for
``python -m siamese_jax.oneshot --runs``: run01 ... runNN, each N characters of ONE alphabet,
one drawer's image of each as training/classNN.png, another drawer's as test/itemNN.png (test
items shuffled), and class_labels.txt pairing them, as brendenlake/omniglot's
python/one-shot-classification. Alphabets that ``--exclude`` holds (the training zip) are left
out, so the runs are of alphabets never trained on; alphabets with fewer characters than
``--ways`` are too (small2's Tagalog has 17). Runs take the alphabets in turn.

  .venv/bin/python scripts/make_oneshot_runs.py --out runs/small2_oneshot \\
      --zip ../shared/data/omniglot/images_background_small2.zip \\
      --exclude ../shared/data/omniglot/images_background_small1.zip
"""

import argparse
import pathlib
import re
import sys
import zipfile

import numpy as np

PNG = re.compile(r"[^/]+/(?P<alphabet>[^/]+)/(?P<character>[^/]+)/\d+_(?P<drawer>\d+)\.png$")


def characters(zip_path: pathlib.Path) -> dict[str, dict[str, dict[int, str]]]:
  """{alphabet: {character: {drawer: member name}}} of an Omniglot zip."""
  found: dict = {}
  with zipfile.ZipFile(zip_path) as archive:
    for name in archive.namelist():
      match = PNG.match(name)
      if match:
        found.setdefault(match["alphabet"], {}).setdefault(match["character"], {})[
            int(match["drawer"])] = name
  if not found:
    raise ValueError(f"{zip_path}: no Omniglot PNGs (<alphabet>/<character>/<id>_<drawer>.png)")
  return found


def plan_runs(chars: dict, runs: int, ways: int, seed: int) -> list[dict]:
  """[{"alphabet", "members": [(training member, test member)] * ways}] per run: the eligible
  alphabets in turn, ``ways`` random characters, and two random drawers that drew them all."""
  rng = np.random.default_rng(seed)
  eligible = sorted(a for a, c in chars.items() if len(c) >= ways)
  if not eligible:
    raise ValueError(f"no alphabet has {ways} characters; lower --ways")
  plans = []
  for r in range(runs):
    alphabet = eligible[r % len(eligible)]
    picked = rng.permutation(sorted(chars[alphabet]))[:ways]
    drawers = sorted(set.intersection(*(set(chars[alphabet][c]) for c in picked)))
    train_drawer, test_drawer = rng.permutation(drawers)[:2]
    plans.append({"alphabet": alphabet, "members": [
        (chars[alphabet][c][train_drawer], chars[alphabet][c][test_drawer]) for c in picked]})
  return plans


def write_runs(zip_path: pathlib.Path, plans: list[dict], out: pathlib.Path, seed: int) -> None:
  rng = np.random.default_rng(seed + 1)
  with zipfile.ZipFile(zip_path) as archive:
    for r, plan in enumerate(plans, start=1):
      run = f"run{r:02d}"
      (out / run / "training").mkdir(parents=True, exist_ok=True)
      (out / run / "test").mkdir(parents=True, exist_ok=True)
      lines = []
      for item, c in enumerate(rng.permutation(len(plan["members"])), start=1):
        training, test = plan["members"][c]
        (out / run / "training" / f"class{c + 1:02d}.png").write_bytes(archive.read(training))
        (out / run / "test" / f"item{item:02d}.png").write_bytes(archive.read(test))
        lines.append(f"{run}/test/item{item:02d}.png {run}/training/class{c + 1:02d}.png")
      (out / run / "class_labels.txt").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--zip", required=True, type=pathlib.Path, help="Omniglot zip to draw from")
  parser.add_argument("--exclude", type=pathlib.Path, action="append", default=[],
                      help="zip whose alphabets are left out (the training data); repeatable")
  parser.add_argument("--out", required=True, type=pathlib.Path, help="folder to write (new)")
  parser.add_argument("--runs", type=int, default=20)
  parser.add_argument("--ways", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  try:
    if args.out.exists() and any(args.out.iterdir()):
      raise ValueError(f"{args.out} is not empty; choose a new --out")
    chars = characters(args.zip)
    for other in args.exclude:
      for alphabet in characters(other):
        chars.pop(alphabet, None)
    plans = plan_runs(chars, args.runs, args.ways, args.seed)
    write_runs(args.zip, plans, args.out, args.seed)
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  alphabets = sorted({p["alphabet"] for p in plans})
  print(f"{args.out}: {len(plans)} runs of {args.ways} characters from {', '.join(alphabets)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
