"""The seed write-ups' findings as experiments: each finding is a set of arms, each arm a config,
and a verdict that judges the write-up's claim from the arms' numbers.

An arm is a base config (an ``experiments/<name>.py``) plus overrides, as data. The report
(``scripts/make_report.py``) runs every arm for several seeds, gathers each arm's numbers as
``stats`` ({arm name: {metric: [one value a seed, None where the run has none]}}) and writes
``verdict(finding, stats)`` beside the finding's table. Each finding's verdict is defined just
above it.
"""

import dataclasses
import importlib
from typing import Callable

import ml_collections
import numpy as np

from experiments import default


@dataclasses.dataclass(frozen=True)
class Arm:
  name: str
  base: str = "contrastive"  # experiments/<base>.py
  overrides: tuple = ()  # (("model.head", "subtract"), ...)


@dataclasses.dataclass(frozen=True)
class Finding:
  key: str
  title: str
  claim: str  # what the seed write-up reports
  arms: tuple
  verdict: Callable  # (finding, stats) -> (reproduced: bool | None, sentence): see `verdict`
  extra: str = ""  # "svm" | "retrieval" | "oneshot" | "latent" | "two_sources" | "new_classes":
  #                  evaluations beyond pair accuracy (scripts/make_report.py)
  note: str = ""  # how the runs were cut to fit the report's time, and why


def verdict(finding: Finding, stats: dict) -> tuple[bool | None, str]:
  """(reproduced?, one sentence with the numbers) of ``finding`` for ``stats`` (see the module
  docstring); reproduced is None where the finding has no testable claim. KeyError when the
  verdict compares an arm that ``stats`` lacks (not run yet)."""
  return finding.verdict(finding, stats)


# ------------------------------------------------------------------ verdict arithmetic


def _mean(stats, arm, metric):
  values = [v for v in stats[arm].get(metric, []) if v is not None]  # KeyError: not run
  return float(np.mean(values)) if values else float("nan")


def _std(stats, arm, metric):
  values = [v for v in stats[arm].get(metric, []) if v is not None]
  return float(np.std(values)) if values else float("nan")


def _means(stats):
  """m(arm, metric="accuracy_fixed"): the mean over seeds of ``arm``'s ``metric`` in ``stats``."""
  return lambda arm, metric="accuracy_fixed": _mean(stats, arm, metric)


def _percent(x):
  return f"{100 * x:.1f} %"


# ---------------------------------------------------------------- arms shared by findings

BCE = (("model.head", "abs_diff"), ("loss.name", "bce"))
# experiments/omniglot.py as it was before issue 16: contrastive pairs on small1's characters
# (no rotations), convnet4 width 32 on raw pixels, constant learning rate, no elastic warp; the
# pair arms start here.
OMNIGLOT_PAIRS = (
    ("data.rotation_classes", False), ("model.filters", 32), ("model.input_normalization", "none"),
    ("model.head", "distance"), ("model.distance", "euclidean"), ("loss.name", "contrastive"),
    ("loss.margin", 1.0), ("eval.threshold", 0.5), ("optimizer.schedule", "constant"),
    ("train.augment", False), ("data.mirror_classes", False), ("model.final_pool", True),
    ("model.test_time_shift", 0), ("model.filter_growth", 1), ("train.augment_elastic", 0.0))
# The report's pair arms: that model, trained as long as the default was then (the tests reuse
# OMNIGLOT_PAIRS at their own length)
OMNIGLOT_PAIR_ARM = OMNIGLOT_PAIRS + (("train.epochs", 25),)
# The Omniglot ablations: each arm that takes one part out of the default trains this long
ABLATION_LENGTH = (("train.epochs", 12),)

# Seed 004's table (adambielski/siamese-triplet): EmbeddingNet with a 2-D output. The report used
# an MLP stand-in (Dense 256, 256, 2) before issue 18; its BCE arm on MNIST stays, to measure why
# it was unstable (56.9 +- 13.9 % over 3 seeds).
EMBEDDING_NET_2D = (("model.encoder", "embedding_net"), ("model.embedding_dim", 2),
                    ("train.steps_per_call", 8))
MLP_2D = (("model.encoder", "mlp"), ("model.features", (256, 256, 2)), ("model.dropout_rates", ()))
# batch-hard mining collapsed the 2-D MLP to a point (MAP@R 0.01, all three seeds); seed 004's
# triplets use margin 1 and all or random triplets, so the table mines every valid triplet.
TABLE_LOSSES = (("ce", "embedding_ce", ()), ("contrastive", "contrastive", ()), ("bce", "bce", ()),
                ("triplet", "triplet", (("loss.mining", "batch_all"), ("loss.margin", 1.0))))
# 56 steps an epoch: the MNIST sample's 7,200 training images at batch 128 (56 x 120 for triplets).
TABLE_STEPS = (("train.steps_per_epoch", 56),)

# Issue 18 part 1: MNIST (28 x 28, resized to 32) against the UCI digits (8 x 8, 17 levels, repeated
# to 32 x 32), pairs labelled by digit; the first member from MNIST, the second from the UCI set.
TWO_SOURCES = (("data.source_b", "uci_digits"), ("train.pair_source", "two_source"),
               ("data.image_size", 32))
MLP_32 = (("model.encoder", "mlp"), ("model.features", (256, 256, 32)), ("model.dropout_rates", ()))
# Towers suited to each input: EmbeddingNet (32-D) for MNIST, an MLP over the 64 pixels of the
# 8 x 8 digits (averaged back down from 32 x 32).
CONVNET_AND_MLP = (("model.encoder", "embedding_net"), ("model.embedding_dim", 32),
                   ("train.steps_per_call", 8), ("model.shared_weights", False),
                   ("model.encoder_b", "mlp"), ("model.input_size_b", 8),
                   ("model.features", (256, 256, 32)), ("model.dropout_rates", ()))
DIGITS_0_TO_7 = (("data.train_classes", tuple(range(8))),)


# ---------------------------------------------------------------- findings and their verdicts


def _keras_verdict(finding, stats):
  got = _means(stats)("contrastive")
  return abs(got - 0.9742) <= 0.02, (
      f"{_percent(got)} test pair accuracy at threshold 0.5 against the Keras example's 97.42 %")


KERAS = Finding(
    "keras", "Contrastive MLP on MNIST (Keras mnist_siamese)",
    "seed 003: 99.55 % train / 97.42 % test pair accuracy at threshold 0.5",
    (Arm("contrastive"),),
    verdict=_keras_verdict)


def _heads_verdict(finding, stats):
  m = _means(stats)
  works = min(m("distance"), m("abs_diff", "accuracy_tuned"))
  fails = max(m("concat", "accuracy_tuned"), m("subtract", "accuracy_tuned"))
  return works >= 0.85 and fails <= 0.6, (
      f"distance head {_percent(m('distance'))}, |a - b| -> Dense "
      f"{_percent(m('abs_diff', 'accuracy_tuned'))}; concat -> Dense "
      f"{_percent(m('concat', 'accuracy_tuned'))}, subtract -> Dense "
      f"{_percent(m('subtract', 'accuracy_tuned'))} (tuned threshold)")


HEADS = Finding(
    "heads", "Distance head vs Dense heads",
    "seed 003: subtract -> Dense gives 48 %; seed 001: concat -> Dense does not work",
    (Arm("distance"), Arm("abs_diff", overrides=BCE),
     Arm("concat", overrides=(("model.head", "concat"), ("loss.name", "bce"))),
     Arm("subtract", overrides=(("model.head", "subtract"), ("loss.name", "bce")))),
    verdict=_heads_verdict)


def _abs_verdict(finding, stats):
  a, b = _mean(stats, "with_abs", "accuracy_tuned"), _mean(stats, "without_abs", "accuracy_tuned")
  return a - b > 0.05, f"with abs {_percent(a)}, without {_percent(b)}"


ABS = Finding(
    "abs", "abs present or missing in the BCE head",
    "seed 000: forgetting the absolute value gave inferior results",
    (Arm("with_abs", overrides=BCE),
     Arm("without_abs", overrides=(("model.head", "subtract"), ("loss.name", "bce")))),
    verdict=_abs_verdict)


def _dropout_verdict(finding, stats):
  a = _mean(stats, "no_input_dropout", "accuracy_tuned")
  b = _mean(stats, "input_dropout_0.2", "accuracy_tuned")
  spread = max(_std(stats, "no_input_dropout", "accuracy_tuned"),
               _std(stats, "input_dropout_0.2", "accuracy_tuned"))
  reproduced = a - b > max(2 * spread, 0.002)
  why = "" if reproduced else (
      f"; the gap of {100 * (a - b):.1f} points is not larger than twice the spread over seeds "
      f"({200 * spread:.1f} points): seed 000 compared single runs")
  sentence = (f"without first-layer dropout {_percent(a)}, with dropout 0.2 on the inputs "
              f"{_percent(b)}")
  return reproduced, sentence + why


DROPOUT = Finding(
    "dropout", "Dropout on the first layer",
    "seed 000: dropout on the first layer gave inferior results",
    (Arm("no_input_dropout", overrides=BCE),
     Arm("input_dropout_0.2", overrides=BCE + (("model.input_dropout", 0.2),))),
    verdict=_dropout_verdict)


def _learning_rate_verdict(finding, stats):
  accuracies = {arm.name: _mean(stats, arm.name, "accuracy_fixed") for arm in finding.arms}
  best = max(accuracies, key=accuracies.get)
  worst_high = accuracies[finding.arms[-1].name]
  return accuracies[best] - worst_high > 0.05, (
      "; ".join(f"{name} {_percent(v)}" for name, v in accuracies.items()))


LEARNING_RATE = Finding(
    "learning_rate", "Learning-rate sweep (RMSprop)",
    "seed 000: too high a learning rate gave bad results",
    tuple(Arm(f"lr_{lr:g}", overrides=(("optimizer.learning_rate", lr),))
          for lr in (1e-4, 1e-3, 1e-2, 1e-1)),
    verdict=_learning_rate_verdict)


def _batch_size_verdict(finding, stats):
  m = _means(stats)
  small, large = "batch_128", finding.arms[-1].name
  faster = m(large, "examples_per_second") > m(small, "examples_per_second")
  acc_drop = (m(small) - m(large)) / m(small)
  loss_rise = (m(large, "train_loss") - m(small, "train_loss")) / m(small, "train_loss")
  return faster and m(large) < m(small), (
      f"{large}: {m(large, 'examples_per_second'):,.0f} pairs/s vs "
      f"{m(small, 'examples_per_second'):,.0f}; test accuracy {_percent(m(large))} vs "
      f"{_percent(m(small))} ({100 * acc_drop:+.1f} % relative drop), final train loss "
      f"{m(large, 'train_loss'):.4f} vs {m(small, 'train_loss'):.4f} "
      f"({100 * loss_rise:+.1f} % relative rise)")


BATCH_SIZE = Finding(
    "batch_size", "Batch-size sweep (same epochs, so fewer steps at larger batches)",
    "seed 000: a larger batch ran faster but hurt accuracy more than loss",
    tuple(Arm(f"batch_{b}", overrides=(("train.batch_size", b),)) for b in (32, 128, 512, 2048)),
    verdict=_batch_size_verdict)


def _optimizer_verdict(finding, stats):
  adam, sgd = (_mean(stats, arm, "elongation") for arm in ("adam", "sgd"))
  return adam > sgd, (f"cluster elongation (sqrt of covariance eigenvalue ratio) Adam "
                      f"{adam:.2f}, SGD {sgd:.2f}")


OPTIMIZER = Finding(
    "optimizer", "Adam vs SGD with 2-D embeddings",
    "seed 002: Adam gives spindly clusters, SGD round ones",
    (Arm("adam", overrides=(("model.encoder", "mlp_2d"), ("loss.margin", 5.0),
                            ("optimizer.name", "adam"), ("optimizer.learning_rate", 1e-3))),
     Arm("sgd", overrides=(("model.encoder", "mlp_2d"), ("loss.margin", 5.0),
                           ("optimizer.name", "sgd"), ("optimizer.learning_rate", 1e-2)))),
    verdict=_optimizer_verdict, extra="latent")


def _margin_verdict(finding, stats):
  return None, (f"margin 1: {_percent(_mean(stats, 'margin_1', 'accuracy_tuned'))}, margin 5: "
                f"{_percent(_mean(stats, 'margin_5', 'accuracy_tuned'))} (tuned threshold; seed "
                "002 makes no accuracy claim)")


MARGIN = Finding(
    "margin", "Contrastive margin 1 vs 5",
    "seed 002 uses margin 5 (with a 2-D embedding); the Keras example margin 1",
    (Arm("margin_1", overrides=(("model.encoder", "mlp_2d"),)),
     Arm("margin_5", overrides=(("model.encoder", "mlp_2d"), ("loss.margin", 5.0)))),
    verdict=_margin_verdict)


def _svm_verdict(finding, stats):
  a, b = _mean(stats, "bce_abs", "svm_learned"), _mean(stats, "bce_abs", "svm_raw_pixels")
  return a > b, (f"SVM on learned |f(a) - f(b)| {_percent(a)}, on raw-pixel |a - b| "
                 f"{_percent(b)} (seed 000: 80 % vs 74 %)")


SVM = Finding(
    "svm", "SVM on learned |f(a) - f(b)| vs on raw-pixel |a - b|",
    "seed 000: 80 % vs 74 %", (Arm("bce_abs", overrides=BCE),),
    verdict=_svm_verdict, extra="svm")


def _table_verdict(finding, stats):
  """Seed 004's table in words: MAP@R of each arm, and why the pair-BCE arm on MNIST is unstable,
  from each seed's ROC AUC, final train loss, head initialisation and logits."""
  m = lambda arm, metric: _mean(stats, arm, metric)
  maps = "; ".join(f"{arm.name} MAP@R {m(arm.name, 'mean_average_precision_at_r'):.3f}"
                   for arm in finding.arms if "_lr_" not in arm.name)
  bce = [arm for arm in finding.arms
         if "bce_mnist" in arm.name and stats.get(arm.name, {}).get("head_init_positive")]
  per_seed = lambda arm, metric: [v for v in stats[arm.name].get(metric, []) if v is not None]
  runs = [dict(arm=arm, auc=auc, positive=positive, loss=loss, std=std, saturated=saturated)
          for arm in bce for auc, positive, loss, std, saturated in zip(*(
              per_seed(arm, metric) for metric in ("roc_auc", "head_init_positive", "train_loss",
                                                   "logit_std", "logit_saturated")))]
  if not runs:
    return None, maps
  mean = lambda values: float(np.mean(values)) if values else float("nan")
  stuck = [r for r in runs if r["auc"] < 0.75]
  aucs = "; ".join(f"{arm.name} " + "/".join(f"{100 * v:.0f}" for v in per_seed(arm, "roc_auc"))
                   for arm in bce)
  rate = lambda arm: arm_config(arm, 0).optimizer.learning_rate
  started_positive = lambda arm: [r["auc"] for r in runs if r["arm"] is arm and r["positive"]]
  by_rate = "; ".join(
      f"{arm.name} (learning rate {rate(arm):g}) {_percent(mean(started_positive(arm)))}"
      for arm in bce)
  learnt = sum(not r["positive"] for r in runs if r["auc"] >= 0.75)
  return None, (
      f"{maps} (mlp_: the Dense 256, 256, 2 stand-in of the earlier report, else "
      f"EmbeddingNet). Pair BCE on MNIST, ROC AUC per seed (%): {aucs}. {len(stuck)} of "
      f"{len(runs)} runs stay at chance (ROC AUC < 75 %, final train loss "
      f"{mean([r['loss'] for r in stuck]):.3f}; ln 2 = 0.693), "
      f"{int(sum(r['positive'] for r in stuck))} of them runs whose head, Dense(1) on the 2-D "
      f"|f(a) - f(b)|, starts with both weights > 0 (a larger distance means 'same' at the first "
      f"step; the head's initialisation depends on the seed only, so the arms share it), and "
      f"{learnt} of the {sum(not r['positive'] for r in runs)} runs that start otherwise learn. "
      f"Not a saturating sigmoid: the stuck runs' test logits have std "
      f"{mean([r['std'] for r in stuck]):.2f} and "
      f"{_percent(mean([r['saturated'] for r in stuck]))} beyond |5| (p stays near 0.5). The "
      f"learning rate decides whether such a start escapes; ROC AUC of the runs that start with "
      f"both weights > 0: {by_rate}")


TABLE = Finding(
    "table", "Seed 004's table: CE, contrastive, BCE, triplet with a 2-D embedding",
    "seed 004 shows latent-space plots of the four on MNIST and Fashion-MNIST "
    "(EmbeddingNet, 2-D output)",
    tuple(Arm(f"{name}_{dataset}", base=base, overrides=(
        ("data.name", dataset),) + EMBEDDING_NET_2D + TABLE_STEPS + extra_overrides)
          for dataset in ("mnist", "fashion_mnist")
          for name, base, extra_overrides in TABLE_LOSSES)
    + tuple(Arm(f"mlp_{name}_fashion_mnist", base=base, overrides=(
        ("data.name", "fashion_mnist"),) + MLP_2D + extra_overrides)
            for name, base, extra_overrides in TABLE_LOSSES)
    # the unstable arm of the report before issue 18 (its MLP stand-in), at three
    # learning rates: is it the learning rate?
    + tuple(Arm(f"mlp_bce_mnist{suffix}", base="bce", overrides=(
        ("data.name", "mnist"),) + MLP_2D + lr)
            for suffix, lr in (("", ()),
                               ("_lr_0.0001", (("optimizer.learning_rate", 1e-4),)),
                               ("_lr_0.01", (("optimizer.learning_rate", 1e-2),)))),
    verdict=_table_verdict, extra="retrieval",
    note="5 epochs of 56 steps at batch 128 (seed 004: 20 epochs of the full sets): "
         "an epoch is 56 batches drawn from the MNIST sample's 7,200 training images or "
         "from Fashion-MNIST's 60,000. EmbeddingNet (2-D output) on "
         "both; the MLP stand-in (Dense 256, 256, 2) of the earlier report is kept beside "
         "it on Fashion-MNIST, and on MNIST's BCE arm at three learning rates")


def _towers_verdict(finding, stats):
  m = _means(stats)
  recommended = ("separate", "convnet_and_mlp")  # seed 002: distinct weights for distinct inputs
  best = max(recommended, key=lambda n: m(n, "roc_auc"))
  arms = "; ".join(
      f"{arm.name}: ROC AUC {_percent(m(arm.name, 'roc_auc'))}, pair accuracy "
      f"{_percent(m(arm.name, 'accuracy_tuned'))}, 8 x 8 query -> MNIST P@1 "
      f"{_percent(m(arm.name, 'cross_precision_at_1'))}, MAP@R "
      f"{_percent(m(arm.name, 'cross_map_at_r'))}" for arm in finding.arms)
  gap = m(best, "roc_auc") - m("shared", "roc_auc")
  spread = max(_std(stats, best, "roc_auc"), _std(stats, "shared", "roc_auc"))
  compared = ("above" if gap > 2 * spread else "below" if gap < -2 * spread else
              "no different from")
  return m(best, "roc_auc") >= 0.9, (
      f"{arms} (MNIST against UCI digits, test images of both). Seed 002's separate towers "
      f"({best}) reach {_percent(m(best, 'roc_auc'))} ROC AUC against issue 18's bar of 90 %, "
      f"{compared} one shared tower over both resized to 32 x 32 (a gap of "
      f"{100 * gap:+.1f} points against twice the spread over seeds, {200 * spread:.1f})"
      + (": here the towers of their own do better" if compared == "above" else
         ": different inputs can have towers of their own, but here they need not"))


TOWERS = Finding(
    "towers", "Two towers for two kinds of input: MNIST against the 8 x 8 UCI digits",
    "seed 002: inputs of different type (a camera photo against a satellite map) can use "
    "towers with distinct weights, or different architectures",
    (Arm("shared", overrides=TWO_SOURCES + MLP_32),
     Arm("separate", overrides=TWO_SOURCES + MLP_32 + (("model.shared_weights", False),)),
     Arm("convnet_and_mlp", overrides=TWO_SOURCES + CONVNET_AND_MLP)),
    verdict=_towers_verdict, extra="two_sources",
    note="3 epochs of 66 steps (the 7,200 + 1,294 training images at batch 128; 72 for "
         "convnet_and_mlp, whose calls of 8 unrolled steps round up); shared "
         "and separate: MLP towers (Dense 256, 256, 32) over both sources at 32 x 32; "
         "convnet_and_mlp: EmbeddingNet (32-D) on MNIST, the same MLP on the 8 x 8 "
         "pixels. EmbeddingNet for both sources ran at 1.7 s a step on the shared cores "
         "(8 min a run), too slow for the report's time")


def _new_classes_verdict(finding, stats):
  m = _means(stats)
  mnist_arms = [arm.name for arm in finding.arms if arm.name.startswith("mnist")]
  worst = min(mnist_arms, key=lambda n: m(n, "new_roc_auc"))
  arms = "; ".join(
      f"{arm.name}: new classes ROC AUC {_percent(m(arm.name, 'new_roc_auc'))}, pair accuracy "
      f"{_percent(m(arm.name, 'new_accuracy'))}, 2-way one-shot "
      f"{_percent(m(arm.name, 'new_2way'))} (trained classes "
      f"{_percent(m(arm.name, 'seen_roc_auc'))}, {_percent(m(arm.name, 'seen_accuracy'))}, "
      f"{_percent(m(arm.name, 'seen_2way'))}); 10-way over all ten "
      f"{_percent(m(arm.name, 'all_10way'))}" for arm in finding.arms)
  return m(worst, "new_roc_auc") >= 0.9, (
      f"{arms}. Threshold tuned on validation pairs of the trained classes; reproduced when "
      f"every MNIST arm verifies pairs of 8 and 9 with ROC AUC >= 90 % (lowest: {worst}, "
      f"{_percent(m(worst, 'new_roc_auc'))})")


NEW_CLASSES = Finding(
    "new_classes", "Verifying classes never trained on: digits 8 and 9",
    "seed 001: the Siamese network verifies a client who was never in the training data",
    (Arm("mnist", overrides=DIGITS_0_TO_7),
     Arm("fashion_mnist", overrides=DIGITS_0_TO_7 + (("data.name", "fashion_mnist"),))),
    verdict=_new_classes_verdict, extra="new_classes",
    note="5 epochs of the Keras MLP (contrastive); trained on classes 0-7 of the training "
         "split (less its validation part), tested on the test "
         "split's images of 0-7 (trained classes) and of 8-9 (Fashion-MNIST: bag, ankle "
         "boot), threshold tuned on validation pairs of 0-7")


def _omniglot_verdict(finding, stats):
  m = _means(stats)
  # The target is experiments/omniglot.py's as it is: choosing the best arm would choose on test.
  default_arm = "cosine_classifier"
  pixels = m("raw pixels", "oneshot_20way")
  twenty, five = m(default_arm, "oneshot_20way"), m(default_arm, "oneshot_5way")
  return twenty >= 0.80 and five >= 0.93, (
      f"the default config ({default_arm}): 20-way one-shot {_percent(twenty)}, 5-way "
      f"{_percent(five)}, {m(default_arm, 'train_minutes'):.0f} min of training, against issue "
      f"16's target of 80 % and 93 %; raw pixels {_percent(pixels)} 20-way, chance 5 %. Trained "
      "on small1 only (5 alphabets, 2,720 drawings) at 28 x 28 on 2 CPU cores, tested within "
      "each alphabet of "
      "small2 that small1 lacks; Koch et al.'s 92 % 20-way comes from 30 background alphabets "
      "at 105 x 105. On the same minimal splits Lake et al. 2015 (Science 350:1332, p. 1335) "
      "report a deep convnet at 24.0 % and 22.3 % error (small1, small2; 76.0 / 77.7 % "
      "correct) and BPL at 4.3 / 4.0 %, 20-way within their 10 evaluation alphabets (Lake "
      "et al. 2019's table of the minimal split was not found to verify)"
      + _omniglot_ablation_sentence(finding, stats))


def _omniglot_ablation_sentence(finding, stats, reference: str = "epochs_12") -> str:
  """The arms after ``reference`` in ``finding`` (one part of the default taken out or added,
  same length) in words: each one's 20-way one-shot difference from ``reference`` in points,
  beside the seeds' spread, and its training minutes; "" when ``reference`` was not run."""
  names = [arm.name for arm in finding.arms]
  if reference not in stats or reference not in names:
    return ""
  ablated = [name for name in names[names.index(reference) + 1:] if name in stats]
  if not ablated:
    return ""
  twenty = lambda arm: _mean(stats, arm, "oneshot_20way")
  spread = lambda arm: _std(stats, arm, "oneshot_20way")
  minutes = lambda arm: _mean(stats, arm, "train_minutes")
  parts = [f"{name} {100 * (twenty(name) - twenty(reference)):+.1f} points "
           f"(std {100 * spread(name):.1f}; {minutes(name):.0f} min)"
           for name in sorted(ablated, key=twenty, reverse=True)]
  return (f". At the same length, 20-way one-shot against {reference}'s "
          f"{_percent(twenty(reference))} (std {100 * spread(reference):.1f}; "
          f"{minutes(reference):.0f} min): " + ", ".join(parts))


OMNIGLOT = Finding(
    "omniglot", "Omniglot one-shot on alphabets never trained on",
    "Koch et al. 2015: a Siamese convnet generalises to unseen alphabets; issue 16's "
    "target from the minimal split: >= 80 % 20-way and >= 93 % 5-way within alphabet",
    (Arm("koch_l1_bce", base="omniglot", overrides=OMNIGLOT_PAIR_ARM + BCE),
     Arm("contrastive", base="omniglot", overrides=OMNIGLOT_PAIR_ARM),
     Arm("triplet", base="omniglot", overrides=OMNIGLOT_PAIR_ARM + (
         ("loss.name", "triplet"), ("loss.margin", 0.5), ("eval.threshold", 0.25),
         ("train.classes_per_batch", 16), ("train.samples_per_class", 4))),
     Arm("koch_l1_bce_affine", base="omniglot",
         overrides=OMNIGLOT_PAIR_ARM + BCE + (("train.augment", True),)),
     Arm("contrastive_affine", base="omniglot",
         overrides=OMNIGLOT_PAIR_ARM + (("train.augment", True),)),
     # issue 16: the default (experiments/omniglot.py) at its full length; the same at
     # the 25 epochs it had before stop 16, and the default before stop 15 (3 finished
     # runs each)
     Arm("cosine_classifier", base="omniglot"),
     Arm("epochs_25", base="omniglot", overrides=(("train.epochs", 25),)),
     Arm("previous_default", base="omniglot", overrides=(
         ("model.filters", 64), ("model.filter_growth", 1),
         ("train.augment_elastic", 0.0), ("train.epochs", 25))),
     # what the default is without each part, and what was tried and left out (Koch et
     # al.'s scale and shear, 42 x 42 images): 12 epochs each, against the default at 12
     Arm("epochs_12", base="omniglot", overrides=ABLATION_LENGTH),
     Arm("no_elastic", base="omniglot",
         overrides=ABLATION_LENGTH + (("train.augment_elastic", 0.0),)),
     Arm("constant_width", base="omniglot",
         overrides=ABLATION_LENGTH + (("model.filters", 64), ("model.filter_growth", 1))),
     Arm("no_mirrored_classes", base="omniglot",
         overrides=ABLATION_LENGTH + (("data.mirror_classes", False),)),
     Arm("no_new_classes", base="omniglot", overrides=ABLATION_LENGTH + (
         ("data.rotation_classes", False), ("data.mirror_classes", False))),
     Arm("final_pool", base="omniglot",
         overrides=ABLATION_LENGTH + (("model.final_pool", True),)),
     Arm("no_affine", base="omniglot",
         overrides=ABLATION_LENGTH + (("train.augment", False),)),
     Arm("raw_input", base="omniglot",
         overrides=ABLATION_LENGTH + (("model.input_normalization", "none"),)),
     Arm("softmax_classifier", base="omniglot", overrides=ABLATION_LENGTH + (
         ("model.head", "classifier"), ("loss.name", "cross_entropy"),
         ("loss.margin", 1.0))),
     Arm("koch_scale_shear", base="omniglot", overrides=ABLATION_LENGTH + (
         ("train.augment_scale", 0.2), ("train.augment_shear", 0.3))),
     Arm("image_42", base="omniglot",
         overrides=ABLATION_LENGTH + (("data.image_size", 42),))),
    verdict=_omniglot_verdict, extra="oneshot",
    note="the pair arms (koch_l1_bce to contrastive_affine) ran 25 epochs; "
         "cosine_classifier is experiments/omniglot.py as it is, epochs_25 the same at its "
         "length before stop 16, previous_default the "
         "default before stop 15 (width 64, no warp, 25 epochs); the arms from epochs_12 "
         "on take one part out of the default, or add one that was left out, and ran 12 "
         "epochs each against the default at 12 epochs (epochs_12), so that 3 seeds of "
         "each fit the report's time (12 of the default's 35 epochs a run)")

FINDINGS = (KERAS, HEADS, ABS, DROPOUT, LEARNING_RATE, BATCH_SIZE, OPTIMIZER, MARGIN, SVM, TABLE,
            TOWERS, NEW_CLASSES, OMNIGLOT)


def arm_config(arm: Arm, seed: int, variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``arm`` for ``seed`` (``variant``: e.g. "tiny", see experiments/default.py).
  Overrides go through the locked config, so a misspelt key raises a KeyError naming it."""
  config = importlib.import_module(f"experiments.{arm.base}").get_config(variant)
  return default.override(config, {"seed": seed, **dict(arm.overrides)})
