"""Koch et al. (2015) pair head on the Keras MLP: |f(a) - f(b)| -> Dense -> logit, pair BCE."""

from experiments import default


def get_config():
  config = default.get_config()
  config.model.head = "abs_diff"
  config.loss.name = "bce"
  return config
