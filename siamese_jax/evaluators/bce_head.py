"""``bce_head``: what a pair-BCE run's |a - b| head did: whether every weight of its Dense(1) on
|f(a) - f(b)| was > 0 at initialisation (then a larger distance starts out meaning "same"), the
spread of its test logits and the fraction beyond |5| (a saturated sigmoid: p < 0.7 % or
> 99.3 %)."""

import numpy as np
import optax

from siamese_jax import models, run_keys, train
from siamese_jax.evaluators.context import Context, Evaluator


def run(context: Context) -> dict:
  config = context.config
  initial = train.create_train_state(
      run_keys.run_keys(config.seed).init, models.build_model(config.model),
      list(context.datasets.test.images.shape[1:]), optax.identity()).params
  logits = np.asarray(context.pairs("test")[0], np.float64)
  return {"head_init_positive": float(np.all(np.asarray(initial["head"]["Dense_0"]["kernel"]) > 0)),
          "logit_std": float(np.std(logits)), "logit_saturated": float(np.mean(np.abs(logits) > 5))}


EVALUATOR = Evaluator("bce_head", run,
                      applies=lambda context: context.config.model.head == "abs_diff")
