"""Omniglot at 28 x 28: a 4-block convnet trained with contrastive loss on the background
alphabets of small1, evaluated on the alphabets of small2 that small1 lacks (Japanese_katakana,
Sanskrit, Tagalog: characters and alphabets never trained on; small2's Greek and Latin are dropped).
One-shot accuracy (20-way and 5-way, within alphabet) is in ``scripts/make_report.py`` and
``python -m siamese_jax.oneshot``.
Koch et al.'s convnet at 105 x 105 is ``--config.model.encoder=koch --config.data.image_size=105``
(meant for accelerators)."""

from experiments import default


def get_config(arg=None):
  config = default.get_config()
  config.data.name = "omniglot"
  config.data.train_split = "small1"
  config.data.test_split = "small2"
  config.data.image_size = 28
  config.model.encoder = "convnet4"
  config.model.embedding_dim = 64
  config.model.filters = 32  # 32 keeps a run to minutes on 2 CPU cores
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.train.epochs = 10
  config.train.batch_size = 64
  config.train.steps_per_call = 8  # unrolled on CPU (train.unroll="auto"): compile time grows with it
  return default.with_variant(config, arg)
