"""Koch et al. (2015) pair head on the Keras MLP: |f(a) - f(b)| -> Dense -> logit, pair BCE."""

from experiments import default


def get_config(arg=None):
  config = default.get_config()
  config.loss.name = "bce"  # model.head follows it: abs_diff, its first head
  return default.with_variant(config, arg)
