"""Defaults shared by every experiment; an experiment config changes only what differs.

Keys (override any with ``--config.<section>.<key>=value``):
  seed                       PRNG seed for init, sampling and dropout.
  data.name                  mnist | fashion_mnist | omniglot.
  data.dir                   folder with the official files (IDX or Omniglot zips); None: search.
  data.tfds_data_dir         tfds data folder (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
  data.image_size            resize to this size (None: keep 28 or 105).
  data.train_split / test_split   which splits to train on and to evaluate on.
  model.encoder              keras_mlp | mlp_2d | mlp | embedding_net | koch | koch28 | convnet4.
  model.head                 distance | abs_diff | concat | subtract | classifier.
  model.distance             euclidean | squared_euclidean | l1 | cosine.
  model.embedding_dim        output size of the encoder (None: the encoder's own default).
  model.features / dropout_rates / input_dropout   layers of the "mlp" encoder.
  model.shared_weights       False: two towers with separate weights.
  loss.name                  contrastive | bce | triplet | cross_entropy.
  loss.margin                contrastive and triplet margin.
  loss.mining                batch_all | batch_hard | semi_hard (triplet).
  loss.threshold             distance below which a pair is called "same".
  optimizer.name             sgd | momentum | adam | rmsprop; optimizer.learning_rate > 0.
  optimizer.schedule         constant | cosine | warmup_cosine (optimizer.warmup_steps).
  train.epochs, train.batch_size (pairs or examples per step), train.steps_per_epoch
                             (None: training images // batch_size), train.classes_per_batch and
                             train.samples_per_class (P x K batches for triplet).
  train.steps_per_call       steps fused into one compiled call (progress is shown between calls).
  train.unroll               auto | always | never: unroll the steps of a call (no loop in the
                             program); auto = convolutional encoders on CPU, where XLA runs conv
                             gradients inside loops on a slow path (jax-ml/jax#12868).
  train.pair_source          balanced | two_source (second image: an inverted, warped view, for
                             two-tower experiments with model.shared_weights=False).
  train.augment              random rotation and shift of every training image (Koch et al.).
  train.resume               continue from the workdir's last checkpoint if there is one.
  train.overwrite            allow a workdir that holds a run of another config.
  train.checkpoints_to_keep  the last N checkpoints kept (the best one is kept too).
  eval.pairs                 test pairs drawn (the same every epoch) for pair accuracy.
  eval.plot_points           test images embedded for the latent-space plots.
  plots.latent / plots.animation   per-epoch latent plots and their GIF.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "mnist"
  config.data.dir = placeholder(str)
  config.data.tfds_data_dir = placeholder(str)
  config.data.image_size = placeholder(int)
  config.data.train_split = "train"
  config.data.test_split = "test"

  config.model = ml_collections.ConfigDict()
  config.model.encoder = "keras_mlp"
  config.model.head = "distance"
  config.model.distance = "euclidean"
  config.model.embedding_dim = placeholder(int)
  config.model.features = (128, 128, 128)
  config.model.dropout_rates = (0.1, 0.1, 0.0)
  config.model.input_dropout = 0.0
  config.model.shared_weights = True
  config.model.num_classes = placeholder(int)

  config.loss = ml_collections.ConfigDict()
  config.loss.name = "contrastive"
  config.loss.margin = 1.0
  config.loss.mining = "batch_hard"
  config.loss.threshold = 0.5

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "rmsprop"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "constant"
  config.optimizer.momentum = 0.9
  config.optimizer.warmup_steps = 0

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 20
  config.train.batch_size = 128
  config.train.steps_per_epoch = placeholder(int)
  config.train.classes_per_batch = 8
  config.train.samples_per_class = 4
  config.train.steps_per_call = 100
  config.train.unroll = "auto"
  config.train.pair_source = "balanced"
  config.train.augment = False
  config.train.resume = True
  config.train.overwrite = False
  config.train.checkpoints_to_keep = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.pairs = 2000
  config.eval.plot_points = 2000

  config.plots = ml_collections.ConfigDict()
  config.plots.latent = True
  config.plots.animation = True
  return config
