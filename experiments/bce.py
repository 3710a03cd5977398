"""Koch et al. (2015) pair head on the Keras MLP: |f(a) - f(b)| -> Dense -> logit, pair BCE."""

from experiments import default


def get_config(arg=None):
  config = default.get_config()
  config.model.head = "abs_diff"
  config.loss.name = "bce"
  return default.with_variant(config, arg)
