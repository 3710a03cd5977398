"""Omniglot one-shot from the minimal background split (issue 16): trained on small1 (5
alphabets, 2,720 drawings, 136 characters), tested 20-way and 5-way one-shot within each alphabet
of small2 that small1 lacks (Japanese_katakana, Sanskrit, Tagalog: never trained on; small2's
Greek and Latin are dropped). A validation part of small1 is held out by classes: the best
checkpoint (validation ROC AUC) and anything tuned are chosen on it, never on small2.

The recipe (Chen et al. 2019's Baseline++, NormFace/CosFace): a classifier over the training
characters whose logits are ``loss.scale * cos`` between the unit embedding and unit class weights
(a ``loss.margin`` taken off the true class's cosine), so the embedding it reads is the one a
one-shot episode compares by cosine distance; every character turned by 90, 180 and 270 degrees
and mirrored, as seven more characters (Santoro et al. 2016, Vinyals et al. 2016), with random
rotations and shifts of every image and a smooth elastic warp of up to 2.5 pixels (handwriting
varies between drawers; Simard et al. 2003); a 4-block convnet at 28 x 28 whose width doubles as
the map halves (32, 64, 128, 256 filters: about the compute of width 64 throughout) on
per-channel standardised pixels, whose Dense layer reads the last 3 x 3 map (no final pool); Adam
with a cosine learning-rate decay; evaluation embeddings averaged over the image shifted by up to
2 pixels each way (25 views, support and query alike).
Each part was kept for what it added on the validation alphabet (one small1 alphabet held out,
``--config.data.validation_by=alphabets --config.data.validation_fraction=0.2``, 12 epochs,
seed 0, 20-way within the alphabet): 77.6 % before; mirrored classes 85.2 %; no final pool 82.0 %;
both 86.1 %; test-time views +1 to +4 points on top; Koch et al.'s scale and shear (78.1 %) and
42 x 42 images (82.0 %, 2.2 times the time per step) did not pay and are off. With this config
(test-time views on, same protocol): 88.7 %; embedding_dim 128: 89.2 %; filters 96: 89.6 % at
~1.9 times the training time (25 epochs would pass 30 min): within one seed's noise, not taken.
Then (issue 16, stop 15; same protocol, 2,000 episodes): CosFace margin 0.25 87.2 %; batch 128 at
learning rate 2e-3 86.9 % (the same images/s on CPU); widths 32-64-128-256 89.8 %; elastic warp
1.5 px 89.7 %; both 90.8 %; both with 2.5 px 91.5 % (taken); 3.5 px 90.4 %. Length (stop 16,
same protocol with the epochs changed): 12 epochs 91.5 %, 18 93.7 %, 25 93.8 %, 35 94.4 % (taken:
the best on validation, and 35 epochs fit the 30 minutes on 2 cores). Test-time centring of the
embeddings (SimpleShot's CL2N), the 576 features before the Dense layer, 49 views or rotated and
scaled views did not pay (on the 12-epoch default's checkpoint: 88.1 % as it is; 88.1, 77.4,
88.0 and 88.2 % with them).
``experiments/findings.py`` holds the arms that led here; ``experiments/omniglot_full.py`` is the
same run on the 30 background alphabets.
Koch et al.'s convnet at 105 x 105 is ``--config.model.encoder=koch --config.data.image_size=105``
(meant for accelerators).
"""

from experiments import default


def get_config(arg=None):
  config = default.get_config()
  config.data.name = "omniglot"
  config.data.train_split = "small1"
  config.data.test_split = "small2"
  config.data.image_size = 28
  config.data.rotation_classes = True  # 122 training characters -> 488
  config.data.mirror_classes = True  # -> 976
  config.model.encoder = "convnet4"
  config.model.embedding_dim = 64
  config.model.filters = 32
  config.model.filter_growth = 2  # 32, 64, 128, 256: the width where the map is small
  config.model.final_pool = False  # the Dense layer reads where in the character a stroke is
  config.model.test_time_shift = 2  # one-shot, retrieval and inference embed 25 shifted views
  config.model.input_normalization = "per_channel"  # lifts the classifier off its first plateau sooner
  config.model.distance = "cosine"  # one-shot episodes and pairs compare the unit embeddings
  config.loss.name = "cosine_softmax"  # model.head follows it: cosine_classifier
  config.loss.scale = 16.0
  config.loss.margin = 0.1
  config.eval.threshold = 0.5  # cosine distance calling a pair "same" before the tuned threshold
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.train.epochs = 35  # 305 steps of 64 per epoch
  config.train.batch_size = 64
  config.train.augment = True  # Koch et al.'s affine distortions
  config.train.augment_elastic = 2.5  # pixels: a smooth random warp of every training image
  config.train.steps_per_call = 8  # one scan (model.conv_impl="auto": matmul convolutions on CPU)
  return default.with_variant(config, arg)
