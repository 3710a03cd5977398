"""Cars196 (Krause et al. 2013) in the Reality Check's setting (``experiments/cub200.py``:
pretrained ResNet-50, 128-d embedding, half the car models for training, the other half
for test), beside ``cars196.py`` (a GroupNorm ResNet-18 from scratch at 64 px). tfds
``cars196``, or a folder ``DIR/<model>/<image>``. ``experiments/cars196_pretrained.py:tiny``: as
cub200's.
"""

from experiments import cub200, default


def get_config(arg=None):
  return cub200.reality_check(default.get_config(), "cars196", arg)
