"""Omniglot's standard background/evaluation split: experiments/omniglot.py trained on tfds
``omniglot`` "train" (the 30 background alphabets, 19,280 drawings, 964 characters) and tested on
"test" (the 20 evaluation alphabets, never trained on). Needs the full Omniglot data (tfds
downloads it where there is a network; see siamese_jax/data). With
``--config.data.train_split=small1 --config.data.test_split=small2`` it is the minimal split
again (that is how the tests run it offline).

With 7x the drawings of small1 an epoch takes 7x as long (about 2,200 steps of 64 with the
rotated and mirrored classes), so it trains 5 epochs, about the default's steps; meant for a
machine with more than 2 CPU cores or an accelerator.
"""

from experiments import default, omniglot


def get_config(arg=None):
  config = omniglot.get_config()
  config.data.train_split = "train"
  config.data.test_split = "test"
  config.train.epochs = 5
  return default.with_variant(config, arg)
