"""The seed write-ups' findings as experiments: each finding is a set of arms, each arm a config.

An arm is a base config (an ``experiments/<name>.py``) plus overrides, as data. The report
(``scripts/make_report.py``) runs every arm for several seeds and compares the arms.
"""

import dataclasses
import importlib

import ml_collections

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
  extra: str = ""  # "svm" | "retrieval" | "oneshot" | "latent" | "two_sources" | "new_classes":
  #                  evaluations beyond pair accuracy (scripts/make_report.py)
  note: str = ""  # how the runs were cut to fit the report's time, and why


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

FINDINGS = (
    Finding("keras", "Contrastive MLP on MNIST (Keras mnist_siamese)",
            "seed 003: 99.55 % train / 97.42 % test pair accuracy at threshold 0.5",
            (Arm("contrastive"),)),
    Finding("heads", "Distance head vs Dense heads",
            "seed 003: subtract -> Dense gives 48 %; seed 001: concat -> Dense does not work",
            (Arm("distance"), Arm("abs_diff", overrides=BCE),
             Arm("concat", overrides=(("model.head", "concat"), ("loss.name", "bce"))),
             Arm("subtract", overrides=(("model.head", "subtract"), ("loss.name", "bce"))))),
    Finding("abs", "abs present or missing in the BCE head",
            "seed 000: forgetting the absolute value gave inferior results",
            (Arm("with_abs", overrides=BCE),
             Arm("without_abs", overrides=(("model.head", "subtract"), ("loss.name", "bce"))))),
    Finding("dropout", "Dropout on the first layer",
            "seed 000: dropout on the first layer gave inferior results",
            (Arm("no_input_dropout", overrides=BCE),
             Arm("input_dropout_0.2", overrides=BCE + (("model.input_dropout", 0.2),)))),
    Finding("learning_rate", "Learning-rate sweep (RMSprop)",
            "seed 000: too high a learning rate gave bad results",
            tuple(Arm(f"lr_{lr:g}", overrides=(("optimizer.learning_rate", lr),))
                  for lr in (1e-4, 1e-3, 1e-2, 1e-1))),
    Finding("batch_size", "Batch-size sweep (same epochs, so fewer steps at larger batches)",
            "seed 000: a larger batch ran faster but hurt accuracy more than loss",
            tuple(Arm(f"batch_{b}", overrides=(("train.batch_size", b),))
                  for b in (32, 128, 512, 2048))),
    Finding("optimizer", "Adam vs SGD with 2-D embeddings",
            "seed 002: Adam gives spindly clusters, SGD round ones",
            (Arm("adam", overrides=(("model.encoder", "mlp_2d"), ("loss.margin", 5.0),
                                    ("optimizer.name", "adam"), ("optimizer.learning_rate", 1e-3))),
             Arm("sgd", overrides=(("model.encoder", "mlp_2d"), ("loss.margin", 5.0),
                                   ("optimizer.name", "sgd"), ("optimizer.learning_rate", 1e-2)))),
            extra="latent"),
    Finding("margin", "Contrastive margin 1 vs 5",
            "seed 002 uses margin 5 (with a 2-D embedding); the Keras example margin 1",
            (Arm("margin_1", overrides=(("model.encoder", "mlp_2d"),)),
             Arm("margin_5", overrides=(("model.encoder", "mlp_2d"), ("loss.margin", 5.0))))),
    Finding("svm", "SVM on learned |f(a) - f(b)| vs on raw-pixel |a - b|",
            "seed 000: 80 % vs 74 %", (Arm("bce_abs", overrides=BCE),), extra="svm"),
    Finding("table", "Seed 004's table: CE, contrastive, BCE, triplet with a 2-D embedding",
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
            extra="retrieval",
            note="5 epochs of 56 steps at batch 128 (seed 004: 20 epochs of the full sets): "
                 "an epoch is 56 batches drawn from the MNIST sample's 7,200 training images or "
                 "from Fashion-MNIST's 60,000. EmbeddingNet (2-D output) on "
                 "both; the MLP stand-in (Dense 256, 256, 2) of the earlier report is kept beside "
                 "it on Fashion-MNIST, and on MNIST's BCE arm at three learning rates"),
    Finding("towers", "Two towers for two kinds of input: MNIST against the 8 x 8 UCI digits",
            "seed 002: inputs of different type (a camera photo against a satellite map) can use "
            "towers with distinct weights, or different architectures",
            (Arm("shared", overrides=TWO_SOURCES + MLP_32),
             Arm("separate", overrides=TWO_SOURCES + MLP_32 + (("model.shared_weights", False),)),
             Arm("convnet_and_mlp", overrides=TWO_SOURCES + CONVNET_AND_MLP)),
            extra="two_sources",
            note="3 epochs of 66 steps (the 7,200 + 1,294 training images at batch 128; 72 for "
                 "convnet_and_mlp, whose calls of 8 unrolled steps round up); shared "
                 "and separate: MLP towers (Dense 256, 256, 32) over both sources at 32 x 32; "
                 "convnet_and_mlp: EmbeddingNet (32-D) on MNIST, the same MLP on the 8 x 8 "
                 "pixels. EmbeddingNet for both sources ran at 1.7 s a step on the shared cores "
                 "(8 min a run), too slow for the report's time"),
    Finding("new_classes", "Verifying classes never trained on: digits 8 and 9",
            "seed 001: the Siamese network verifies a client who was never in the training data",
            (Arm("mnist", overrides=DIGITS_0_TO_7),
             Arm("fashion_mnist", overrides=DIGITS_0_TO_7 + (("data.name", "fashion_mnist"),))),
            extra="new_classes",
            note="5 epochs of the Keras MLP (contrastive); trained on classes 0-7 of the training "
                 "split (less its validation part), tested on the test "
                 "split's images of 0-7 (trained classes) and of 8-9 (Fashion-MNIST: bag, ankle "
                 "boot), threshold tuned on validation pairs of 0-7"),
    Finding("omniglot", "Omniglot one-shot on alphabets never trained on",
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
            note="the pair arms (koch_l1_bce to contrastive_affine) ran 25 epochs; "
                 "cosine_classifier is experiments/omniglot.py as it is, epochs_25 the same at its "
                 "length before stop 16, previous_default the "
                 "default before stop 15 (width 64, no warp, 25 epochs); the arms from epochs_12 "
                 "on take one part out of the default, or add one that was left out, and ran 12 "
                 "epochs each against the default at 12 epochs (epochs_12), so that 3 seeds of "
                 "each fit the report's time (12 of the default's 35 epochs a run)",
            extra="oneshot"),
)


def arm_config(arm: Arm, seed: int, variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of ``arm`` for ``seed`` (``variant``: e.g. "tiny", see experiments/default.py).
  Overrides go through the locked config, so a misspelt key raises a KeyError naming it."""
  config = importlib.import_module(f"experiments.{arm.base}").get_config(variant)
  return default.override(config, {"seed": seed, **dict(arm.overrides)})
