"""Cars196 (Krause et al. 2013): 16,185 colour photos of 196 car models, at 64 x 64, for metric
learning: a ResNet-18 (GroupNorm) trained with batch-all triplet loss over 16 x 4 P x K batches,
per-channel input normalisation, random resized crops and flips.

It needs the tfds data, which this machine cannot download: on a networked machine run
``python -c "import tensorflow_datasets as tfds; tfds.builder('cars196').download_and_prepare()"``
(or ``tfds build cars196 --data_dir DIR``) and copy the prepared ``cars196/`` folder into this
machine's ``data.tfds_data_dir`` (default ``~/tensorflow_datasets``). Through tfds it trains on
tfds's ``train`` split (8,144 images) and reports on ``test`` (8,041 other images of the same 196
models); validation holds out whole classes, so the checkpoint is chosen on models never trained
on.

The class-disjoint protocol of the metric-learning papers (Song et al. 2016: half the models for
training, the other half for test) is the folder route: export the photos as ``DIR/<model>/<image>``
and pass ``--config.data.name=folder --config.data.dir=DIR``; ``data.split_by="classes"`` and
``data.test_fraction=0.5`` below then hold out half the models as the test split.

``experiments/cars196.py:tiny`` is the same for a run of seconds (the model is not made smaller:
pass e.g. ``--config.model.encoder=resnet_small --config.model.resnet_stage_sizes=(1,1)``).
"""

from experiments import default


def get_config(arg=None):
  config = default.get_config()
  config.data.name = "cars196"
  config.data.image_size = 64
  config.data.channels = 3
  config.data.validation_by = "classes"
  config.data.split_by = "classes"  # the folder route: whole car models held out as test
  config.data.test_fraction = 0.5
  config.model.encoder = "resnet18"
  config.model.embedding_dim = 128
  config.model.input_normalization = "per_channel"
  config.loss.name = "triplet"
  config.loss.mining = "batch_all"  # batch-hard from scratch on 64 images a step tends to collapse
  config.loss.margin = 0.5
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-4
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.warmup_steps = 200
  config.train.epochs = 40
  config.train.classes_per_batch = 16
  config.train.samples_per_class = 4
  config.train.steps_per_call = 50
  config.train.augment_crop = (0.35, 1.0)
  config.train.augment_flip = True
  config.eval.plot_points = 1000
  return default.with_variant(config, arg)
