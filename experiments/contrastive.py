"""Keras `mnist_siamese` example in JAX: MLP (Dense 128 x3, dropout 0.1), Euclidean distance,
contrastive loss with margin 1, RMSprop, 20 epochs, MNIST (the embedded sample offline)."""

from experiments import default


def get_config(arg=None):
  return default.get_config(arg)
