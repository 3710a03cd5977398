"""Seed 004's baseline: EmbeddingNet (2-D) + Dense classifier trained with cross-entropy."""

from experiments import default


def get_config(arg=None):
  config = default.get_config()
  config.model.encoder = "embedding_net"
  config.model.embedding_dim = 2
  config.model.num_classes = 10
  config.loss.name = "cross_entropy"  # model.head follows it: classifier
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.train.epochs = 10
  config.train.steps_per_call = 8  # one scan (model.conv_impl="auto": matmul convolutions on CPU)
  return default.with_variant(config, arg)
