"""CUB-200-2011 (Wah et al. 2011; 11,788 photos of 200 bird species) in the setting of Musgrave,
Belongie & Lim, "A Metric Learning Reality Check" (ECCV 2020): an ImageNet-pretrained ResNet-50
with frozen BatchNorm, a 128-d embedding (512-d: ``--config.model.embedding_dim=512``), 227 px
random resized crops and flips, 32 images a step (8 classes x 4), class-disjoint train and test
classes (half each). The loss (batch-all triplet, margin 0.1) and the learning rates (1e-5 for the
backbone, 1e-4 for the embedding layer, Adam) are this library's choice, not the paper's tuned
ones; ``reality_check`` is the setting that ``sop.py`` and ``cars196_pretrained.py`` share.

Weights: timm's ``resnet50.a1_in1k`` (``model.safetensors`` from
https://huggingface.co/timm/resnet50.a1_in1k) or any timm / torchvision ResNet-50 state dict:
``--config.model.pretrained=PATH``. Data: tfds ``caltech_birds2011`` (prepare it on a networked
machine and copy it into ``data.tfds_data_dir``), or a folder ``DIR/<species>/<image>`` with
``--config.data.name=folder --config.data.dir=DIR``.

``experiments/cub200.py:tiny`` is a run of seconds on this CPU: a reduced ResNet-50 (one block per
stage, 8-64 wide) with random weights at 32 px; pass ``--config.data.name=folder
--config.data.dir=DIR`` for a small folder.
"""

from experiments import default

# The reduced network and images of the :tiny variants (a Bottleneck ResNet as ResNet-50's).
TINY_MODEL = {"model.backbone_args": "stage_sizes=(1, 1, 1, 1), widths=(8, 16, 32, 64)",
              "model.embedding_dim": 16, "data.image_size": 32, "model.pretrained": None,
              "train.augment_crop": (0.5, 1.0)}


def reality_check(config, dataset: str, arg=None):
  """``config`` in the Reality Check's setting for tfds ``dataset``; ``arg``: a variant."""
  config.data.name = dataset
  config.data.image_size = 227
  config.data.channels = 3
  config.data.split_by = "classes"
  config.data.test_fraction = 0.5
  config.data.validation_by = "classes"
  config.model.encoder = "resnet50"
  config.model.embedding_dim = 128
  config.model.pooling = "avg"
  config.loss.name = "triplet"
  config.loss.mining = "batch_all"
  config.loss.margin = 0.1
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.backbone_lr_scale = 0.1
  config.train.epochs = 30
  config.train.classes_per_batch = 8
  config.train.samples_per_class = 4
  config.train.steps_per_call = 50
  config.train.augment_crop = (0.16, 1.0)
  config.train.augment_flip = True
  config.eval.plot_points = 1000
  config = default.with_variant(config, arg)
  return default.override(config, TINY_MODEL) if arg == "tiny" else config


def get_config(arg=None):
  config = reality_check(default.get_config(), "caltech_birds2011", arg)
  config.data.image_key = "image"  # beside segmentation_mask
  config.data.label_key = "label"
  return config
