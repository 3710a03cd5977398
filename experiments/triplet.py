"""Triplet loss with batch-hard mining over P x K batches (Hermans et al. 2017)."""

from experiments import default


def get_config(arg=None):
  config = default.get_config()
  config.loss.name = "triplet"
  config.loss.mining = "batch_hard"
  config.loss.margin = 0.5
  config.train.classes_per_batch = 10
  config.train.samples_per_class = 12
  return default.with_variant(config, arg)
