"""Stanford Online Products (Song et al. 2016; 120,053 photos of 22,634 products, about 5 each) in
the Reality Check's setting (``experiments/cub200.py``: pretrained ResNet-50, 128-d embedding,
class-disjoint split). tfds ``stanford_online_products`` already splits the products into
disjoint train (11,318) and test (11,316) sets, so its own splits are kept; or a folder
``DIR/<product>/<image>`` with ``--config.data.name=folder --config.data.dir=DIR`` (half the
products held out). ``experiments/sop.py:tiny``: as cub200's.
"""

from experiments import cub200, default


def get_config(arg=None):
  config = cub200.reality_check(default.get_config(), "stanford_online_products", arg)
  config.data.label_key = "class_id"  # beside super_class_id (12 categories)
  config.data.split_by = "images"  # tfds's splits are class-disjoint already
  config.train.samples_per_class = 2  # ~5 images a product
  config.train.classes_per_batch = 16
  return config
