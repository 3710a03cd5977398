"""``svm``: seed 000's test, an RBF SVM learning "same class?" from pair features: learned
``|f(a) - f(b)|`` against raw-pixel ``|a - b|``, trained on balanced pairs of the training part
and scored on balanced pairs of the test split (``context.num_pairs`` of each)."""

import jax
import numpy as np

from siamese_jax import batches, evaluate
from siamese_jax.evaluators.context import Context, Evaluator


def pair_features(context: Context, part: str, key) -> tuple:
  """(|f(a) - f(b)| [M, D], raw |a - b| [M, H W C] in [0, 1], same [M] bool) of M balanced
  pairs of ``part``."""
  num_pairs = context.num_pairs
  batch = batches.sample_batch(key, context.device_data(part),
                               batches.BatchSpec(kind="pairs", batch_size=num_pairs))
  emb_a, emb_b = context.embed(batch["x_a"]), context.embed(batch["x_b"])
  raw_a = np.asarray(batch["x_a"], np.float32).reshape(num_pairs, -1) / 255.0
  raw_b = np.asarray(batch["x_b"], np.float32).reshape(num_pairs, -1) / 255.0
  return np.abs(emb_a - emb_b), np.abs(raw_a - raw_b), np.asarray(batch["same"]) > 0


def run(context: Context) -> dict:
  learned_train, raw_train, same_train = pair_features(context, "train",
                                                       jax.random.fold_in(context.key, 7))
  learned_test, raw_test, same_test = pair_features(context, "test",
                                                    jax.random.fold_in(context.key, 8))
  return {"svm_learned": evaluate.svm_pair_accuracy(learned_train, same_train, learned_test,
                                                    same_test),
          "svm_raw_pixels": evaluate.svm_pair_accuracy(raw_train, same_train, raw_test,
                                                       same_test)}


EVALUATOR = Evaluator("svm", run)
