"""Every config key the library reads, declared once, with its default and meaning.

``KEYS`` is the one declaration: each key with its default and what it means. ``get_config()``
builds the ConfigDict from it, ``python main.py --help`` prints it (with the names each choice
accepts, read from the tables that resolve them), and an experiment config
(``experiments/default.py`` and those that start from it) changes only what differs. The library
reads this module, never ``experiments/``. Values derived from others are ``FieldReference``s:
``eval.threshold`` follows ``loss.margin`` unless it is set itself. ``RENAMED`` maps keys of
earlier versions to their present names, so the config.json of an older run still reads.

Variants (big_vision's ``get_config(arg)``): ``experiments/<name>.py:tiny`` is the same config cut
down to a run of seconds (a few steps of 32 per epoch), used by tests, the report's quick mode and
benchmarks.
"""

import dataclasses
from typing import Any

import ml_collections
from ml_collections.config_dict import FieldReference, placeholder


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key: dotted ``path``, its ``default`` and a one-line ``help``. A ``default`` of
  ``placeholder(type)`` is None but typed, so ``--config.<path>=value`` still parses."""
  path: str
  default: Any
  help: str


KEYS = (
    Key("seed", 0, "PRNG seed for init, sampling, dropout and the validation split."),
    # data
    Key("data.name", "mnist", "mnist, fashion_mnist, omniglot (offline routes), 'folder' (your "
        "images in data.dir/<class>/<file>) or any tfds image dataset name (e.g. cifar10)"),
    Key("data.dir", placeholder(str), "'folder': the images' root; else a folder with the "
        "official files (IDX or Omniglot zips), None: search the known places"),
    Key("data.tfds_data_dir", placeholder(str), "tfds data folder (None: $TFDS_DATA_DIR or "
        "~/tensorflow_datasets)"),
    # placeholder(object): the flag parses its value as a Python literal, so both
    # --config.data.image_size=64 and --config.data.image_size=(112,92) work (int would refuse
    # the pair, tuple would make 64 a 1-tuple); config_checks checks what was given.
    Key("data.image_size", placeholder(object), "resize images to S x S (an int S) or to H x W "
        "(a pair (H, W), e.g. (112,92) for 92 x 112 portraits); None: keep theirs"),
    Key("data.channels", placeholder(int), "1 or 3: convert images (None: keep theirs)"),
    Key("data.image_key", placeholder(str), "tfds: the image feature (None: the one Image)"),
    Key("data.label_key", placeholder(str), "tfds: the label feature (None: the one ClassLabel)"),
    Key("data.skip_bad_images", False, "'folder': leave out (and list) images that do not decode"),
    Key("data.nested_classes", False, "'folder': accept classes in folders of folders "
        "(<dir>/<group>/<class>/<image>, as unzipped Omniglot), named 'group/class'; False: such "
        "a folder that is not train/ + test/ is refused (it would pool misnamed split folders)"),
    Key("data.download", placeholder(bool), "None: download a dataset that is not here only "
        "where its host answers (a 2 s probe); True: always let tfds download and prepare (what "
        "tfds.testing.mock_data needs: its download is a no-op); False: never download"),
    Key("data.source_b", placeholder(str), "a second dataset with the same classes (e.g. "
        "uci_digits, sklearn's 8 x 8 digits beside mnist): train.pair_source='two_source' pairs "
        "an image of data.name with one of it; both resized to data.image_size"),
    Key("data.train_classes", placeholder(tuple), "train and validate on these class ids only "
        "(e.g. (0, 1, 2, 3, 4, 5, 6, 7)); the test split keeps every class, so the others are "
        "classes never trained on; None: all"),
    Key("data.test_classes", placeholder(tuple), "test on these class ids of the test split only "
        "(e.g. (6, 7, 8, 9) beside data.train_classes=(0, 1, 2, 3, 4, 5): a class-disjoint test "
        "without pooling the splits); None: all"),
    Key("data.split_by", "images", "'classes': test on whole classes never trained on (a tfds "
        "dataset's two splits are pooled first; Omniglot's are already disjoint); 'images': the "
        "dataset's own splits ('folder' without train/ and test/: test_fraction of each class)"),
    Key("data.test_fraction", 0.2, "fraction of the classes (split_by='classes') or of each "
        "class's images (a 'folder' without train/ and test/) held out as test"),
    Key("data.train_split", "train", "split to train on (its validation part is held out)"),
    Key("data.test_split", "test", "split to report on; nothing is chosen on it"),
    Key("data.validation_fraction", 0.1, "fraction of the training split held out as "
        "validation: it picks the best checkpoint and the tuned threshold"),
    Key("data.rotation_classes", False, "add each training class turned by 90, 180 and 270 "
        "degrees as three new classes (training part only, after the validation split; "
        "characters, not digits or photos)"),
    Key("data.mirror_classes", False, "add each training class mirrored left-right as a new "
        "class (with data.rotation_classes, every turn too: 8 classes per character)"),
    Key("data.device_budget_mb", placeholder(float), "training images above this many MiB are "
        "streamed from host memory instead of held on the device (None: half the device's "
        "memory, or a quarter of host RAM on CPU; see siamese_jax/streaming.py)"),
    Key("data.validation_by", "auto", "hold out validation 'images' of every class, whole "
        "'classes' or whole 'groups' of classes (Omniglot's alphabets, also spelt 'alphabets': "
        "one-shot within a group, as its test); auto: classes where the test split has classes "
        "never trained on (Omniglot)"),
    # model
    Key("model.encoder", "keras_mlp", "the shared tower"),
    Key("model.head", "distance", "how the two embeddings of a pair become a score (unless set: "
        "the first head loss.name trains, e.g. cosine_classifier for cosine_softmax)"),
    Key("model.distance", "euclidean", "distance between embeddings (distance head, triplet, "
        "and how classifier embeddings are compared)"),
    Key("model.embedding_dim", placeholder(int), "encoder output size (None: the encoder's own)"),
    Key("model.features", (128, 128, 128), "layer widths of the 'mlp' encoder (last = output)"),
    Key("model.dropout_rates", (0.1, 0.1, 0.0), "dropout after each 'mlp' layer"),
    Key("model.input_dropout", 0.0, "dropout on the input pixels (keras_mlp, mlp)"),
    Key("model.activation", "relu", "activation of the 'mlp' encoder"),
    Key("model.final_activation", False, "'mlp': apply the activation after the last layer too"),
    Key("model.filters", 64, "convnet4 width (filters per block); resnet*: the first stage's, "
        "doubled at every next stage"),
    Key("model.filter_growth", 1, "convnet4: block i has model.filters * filter_growth**i "
        "filters (2: 32, 64, 128, 256 from 32)"),
    Key("model.test_time_shift", 0, "evaluation embeddings (one-shot, retrieval, pairs, "
        "siamese_jax.inference) are the mean over the image shifted by up to this many pixels "
        "each way ((2s+1)^2 views; 0: off); per-epoch validation pairs are scored without"),
    Key("model.final_pool", True, "convnet4: max-pool after the last block (False keeps its "
        "spatial map for the Dense layer: 3 x 3 at 28 x 28)"),
    Key("model.conv_impl", "auto", "how the convolutional encoders compute their convolutions: "
        "'matmul' (patches times the kernel: XLA:CPU's fast matrix product, also inside the "
        "fused steps' loop), 'xla' (XLA's convolution); auto: matmul on CPU, xla elsewhere. "
        "Same parameters and outputs either way (siamese_jax.conv)"),
    Key("model.norm_groups", 8, "GroupNorm groups of convnet4 and resnet* (divides model.filters)"),
    Key("model.resnet_stage_sizes", (2, 2, 2, 2), "residual blocks per stage of 'resnet_small' "
        "(resnet18 and resnet34 fix their own)"),
    Key("model.input_normalization", "none", "'per_channel': subtract the training part's "
        "per-channel mean and divide by its std, in the model (kept in its params)"),
    Key("model.shared_weights", True, "False: two towers with separate weights"),
    Key("model.encoder_b", placeholder(str), "shared_weights=False: the second tower's encoder, "
        "another architecture for a second source (e.g. 'mlp' for 8 x 8 digits; it reads the "
        "same model.* keys and must output the same size); None: a copy of model.encoder"),
    Key("model.input_size_b", placeholder(int), "shared_weights=False: the second tower first "
        "averages its images down to this size (8: the 8 x 8 digits kept at data.image_size 32 "
        "beside MNIST, exactly); None: as they are"),
    Key("model.num_classes", placeholder(int), "classifier head outputs (None: the data's)"),
    Key("model.pretrained", placeholder(str), "start the encoder from this file: a params .npz "
        "(siamese_jax.weights.save_params) or a run's --workdir (its latest checkpoint); for a "
        "pretrained backbone (resnet50, vit_*, resnet18_bn, ...) also a timm / torchvision / "
        "Hugging Face .safetensors (or, with torch installed, .pth / .bin) state dict; the pair "
        "head or classifier (and a backbone's embedding layer) starts random (None: all random)"),
    Key("model.freeze", "none", "'backbone': only the encoder's embedding layer (its last Dense) "
        "and the pair head or classifier train, the rest keeps its initial values (e.g. "
        "model.pretrained's); 'stageN' (pretrained backbones): the stem and stages 1..N are "
        "frozen (a ViT's 12 blocks are 4 stages of 3); 'none': everything trains"),
    Key("model.pooling", "avg", "pretrained ResNets and ConvNeXt: 'avg' (timm's features) or 'gem' "
        "(generalised mean, its exponent learned from 3) before the embedding layer"),
    Key("model.dtype", "float32", "pretrained backbones: compute in 'float32' or 'bfloat16' "
        "(accelerators; the params stay float32)"),
    Key("model.backbone_args", placeholder(str), "pretrained backbones: change the "
        "architecture's fields, e.g. 'stage_sizes=(1, 1, 1, 1), widths=(8, 16, 32, 64)' (small "
        "test networks); None: the architecture's own"),
    Key("model.pos_interpolation", "timm", "ViT / DINOv2: resample the position embeddings to "
        "the input's patch grid as 'timm' (bicubic, antialiased) or 'hf' (Hugging Face's "
        "Dinov2Model: bicubic)"),
    # loss
    Key("loss.name", "contrastive", "training objective"),
    Key("loss.margin", 1.0, "contrastive and triplet: a distance margin; cosine_softmax, cosface: "
        "the true class's cosine margin (0: NormFace); arcface, subcenter_arcface: the angular "
        "margin in degrees (PML's unit: 28.6 = 0.5 rad); proxy_anchor, soft_triple: a cosine "
        "margin (PML's margin and units throughout)"),
    Key("loss.scale", 16.0, "the factor on cosines inside the softmax or log-sum-exp (no unit): "
        "cosine_softmax, cosface, arcface: s; normalized_softmax: 1 / PML's temperature; "
        "proxy_nca: PML's softmax_scale (on minus squared distances); proxy_anchor: PML's alpha; "
        "soft_triple: PML's la"),
    Key("loss.mining", "batch_hard", "triplet mining over a P x K batch"),
    Key("loss.num_centers", 1, "learned centers per class: subcenter_arcface's sub-centers, "
        "soft_triple's centers"),
    Key("loss.center_temperature", 0.1, "soft_triple: temperature of the softmax that weighs a "
        "class's centers (PML's gamma; a cosine, no unit)"),
    # pair-based losses (pytorch-metric-learning 2.9's defaults; None: the loss's own, in its
    # record's defaults)
    Key("loss.distance", placeholder(str), "pair-based losses: how embeddings are compared "
        "(siamese_jax.similarities); None: the loss's own (PML's: cosine_similarity for "
        "multi_similarity, circle, supcon, ntxent; dot_product for npairs; lp for the others)"),
    Key("loss.distance_p", 2, "pair-based losses: p (an integer) of loss.distance='lp' and of its "
        "row normalization"),
    Key("loss.normalize_embeddings", True, "pair-based losses: scale embeddings to unit norm "
        "before comparing them (PML's default; cosine_similarity always does)"),
    Key("loss.miner", placeholder(str), "pair-based losses: pairs kept ('none', "
        "'multi_similarity', 'pair_margin') or triplets drawn ('distance_weighted'); None: the "
        "loss's own (multi_similarity for multi_similarity, else none)"),
    Key("loss.miner_epsilon", 0.1, "multi_similarity miner: epsilon"),
    Key("loss.miner_pos_margin", 0.2, "pair_margin miner: keep positives farther than this"),
    Key("loss.miner_neg_margin", 0.8, "pair_margin miner: keep negatives closer than this"),
    Key("loss.miner_cutoff", 0.5, "distance_weighted miner: distances clipped below at this"),
    Key("loss.miner_nonzero_loss_cutoff", 1.4, "distance_weighted miner: negatives at least "
        "this far are never drawn"),
    Key("loss.alpha", 2.0, "multi_similarity: weight of positive pairs"),
    Key("loss.beta", placeholder(float), "multi_similarity: weight of negative pairs (50); "
        "margin: initial boundary beta (1.2); None: the loss's own"),
    Key("loss.base", 0.5, "multi_similarity: the similarity the exponents are centred on"),
    Key("loss.relaxation", 0.4, "circle: the relaxation factor m"),
    Key("loss.gamma", 80.0, "circle: the scale factor gamma"),
    Key("loss.pos_margin", 0.0, "contrastive_batch, lifted_structure: positive pairs closer "
        "than this cost nothing"),
    Key("loss.neg_margin", 1.0, "contrastive_batch, lifted_structure: negative pairs farther "
        "than this cost nothing"),
    Key("loss.nu", 0.0, "margin: weight of the beta regulariser nu * beta"),
    Key("loss.learn_beta", True, "margin: learn beta with the model (PML's flag: False)"),
    Key("loss.temperature", placeholder(float), "ntxent (0.07), supcon (0.1): the softmax "
        "temperature; None: the loss's own"),
    Key("loss.memory_loss", "contrastive_batch", "xbm: the pair-based loss computed between "
        "the batch and the memory"),
    Key("loss.memory_size", 1024, "xbm: past embeddings kept in the memory"),
    # optimizer
    Key("optimizer.name", "rmsprop", "optax optimiser"),
    Key("optimizer.learning_rate", 1e-3, "peak learning rate (> 0)"),
    Key("optimizer.schedule", "constant", "learning-rate schedule"),
    Key("optimizer.momentum", 0.9, "momentum of the 'momentum' optimiser"),
    Key("optimizer.warmup_steps", 0, "linear warm-up steps of 'warmup_cosine'"),
    Key("optimizer.backbone_lr_scale", 1.0, "the encoder's layers below its embedding layer "
        "learn at learning_rate times this (e.g. 0.1 to fine-tune a model.pretrained encoder); "
        "1: one rate for all"),
    # train
    Key("train.epochs", 20, "epochs to train"),
    Key("train.batch_size", 128, "pairs or examples per step (triplet: P x K below)"),
    Key("train.steps_per_epoch", placeholder(int), "None: training images // batch size, at "
        "least 10 (a small folder's epoch of 1 or 2 steps trains nothing; one line says so)"),
    Key("train.classes_per_batch", 8, "P of a P x K triplet batch"),
    Key("train.samples_per_class", 4, "K of a P x K triplet batch"),
    Key("train.steps_per_call", 100, "steps fused into one compiled call (progress is shown, "
        "and a preempted run checkpoints, between calls)"),
    Key("train.unroll", "auto", "unroll the steps of a call; auto = convolutional encoders on "
        "CPU with model.conv_impl='xla', whose conv gradients XLA runs in loops on a slow path "
        "(jax-ml/jax#12868)"),
    Key("train.program_budget_mb", placeholder(float), "memory a compiled training call may "
        "take: unrolled calls (train.unroll) get fewer steps than train.steps_per_call when the "
        "estimate of their program exceeds it (None: half the device's memory, or half the host "
        "memory available at the start on CPU; see siamese_jax/program_memory.py)"),
    Key("train.pair_source", "balanced", "'two_source': the first image of every pair from "
        "data.name, the second from data.source_b, same digit or not (two-tower experiments)"),
    Key("train.augment", False, "random rotation and shift of every training image (Koch et al.)"),
    Key("train.augment_scale", 0.0, "with train.augment: each axis also scaled by a random "
        "1 +- this (Koch et al.: 0.2)"),
    Key("train.augment_shear", 0.0, "with train.augment: each axis also sheared by a random "
        "+- this (Koch et al.: 0.3)"),
    Key("train.augment_elastic", 0.0, "with train.augment: each pixel also moved by a smooth "
        "random field of up to this many pixels (a 4 x 4 lattice of offsets, interpolated)"),
    Key("train.augment_crop", placeholder(tuple), "random resized crops covering this range of "
        "the image's area, e.g. (0.35, 1.0), resized back (colour images; None: off)"),
    Key("train.augment_crop_ratio", (3 / 4, 4 / 3), "aspect-ratio range (w / h) of those crops"),
    Key("train.augment_flip", False, "random left-right flips (not for digits or characters)"),
    Key("train.resume", True, "continue from the workdir's last checkpoint if there is one"),
    Key("train.overwrite", False, "allow a workdir that holds a run of another config"),
    Key("train.checkpoints_to_keep", 3, "the last N checkpoints kept (the best one is kept too)"),
    # eval
    Key("eval.pairs", 2000, "validation and test pairs drawn (the same every epoch)"),
    Key("eval.threshold", None, "distance below which a pair is called 'same' before the "
        "threshold is tuned on validation pairs (default: loss.margin / 2; logit heads: 0)"),
    Key("eval.far", placeholder(float), "calibrate the verification threshold on validation "
        "pairs for this false-accept rate (e.g. 0.001); None: for the best accuracy"),
    Key("eval.plot_points", 2000, "test images embedded for the latent-space plots"),
    # plots
    Key("plots.latent", True, "per-epoch latent-space plots"),
    Key("plots.animation", True, "their GIF"),
)

# The variant of a config for a run of seconds (tests, the report's quick mode, benchmarks).
TINY = {"train.epochs": 2, "train.steps_per_epoch": 6, "train.steps_per_call": 3,
        "train.batch_size": 32, "eval.pairs": 200, "eval.plot_points": 300}
VARIANTS = {"tiny": TINY}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The defaults of every key (``arg``: a variant name, see VARIANTS)."""
  config = ml_collections.ConfigDict()
  for key in KEYS:
    *sections, name = key.path.split(".")
    node = config
    for section in sections:
      if section not in node:
        node[section] = ml_collections.ConfigDict()
      node = node[section]
    # A fresh placeholder per config: a shared FieldReference would carry a value set on one
    # config into every config made after it.
    node[name] = (placeholder(key.default.get_type())
                  if isinstance(key.default, FieldReference) else key.default)
  _follow_loss_name(config)
  config.eval.threshold = config.loss.get_ref("margin") * 0.5
  return with_variant(config, arg)


def _follow_loss_name(config: ml_collections.ConfigDict) -> None:
  """Makes ``model.head`` and the ``loss.*`` keys some objective declares its own default for
  ``FieldReference``s of ``loss.name``: unless set themselves, they take the chosen loss's (its
  record in ``siamese_jax.losses``), so ``--config.loss.name=arcface`` alone trains an embedding
  model with PML's ArcFace margin and scale. A value set (by a config or a flag) replaces the
  reference and stays."""
  from siamese_jax import losses  # below this module: the records read no config module
  name = config.loss.get_ref("name")
  declared = {key.path: key.default for key in KEYS}
  # FieldReference's ops are ml_collections' own mechanism (what ``ref * 0.5`` builds); the
  # cast restores the key's type, so a flag still parses and a wrong type is refused.
  config.model.head = name._apply_op(
      lambda value: losses.default_head(value, declared["model.head"]))
  for path in losses.own_defaults():
    fallback = declared[path]
    # A placeholder (None, typed) stays None for a loss without its own value (a None skips
    # the cast), and casts the others to the placeholder's type.
    field_type = fallback.get_type() if isinstance(fallback, FieldReference) else type(fallback)
    fallback = fallback.get() if isinstance(fallback, FieldReference) else fallback
    key = path.split(".", 1)[1]
    config.loss[key] = name._apply_op(
        lambda value, key=key, fallback=fallback: losses.default_setting(value, key, fallback)
    )._apply_cast_op(field_type)


def with_variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """``config`` changed as variant ``arg`` says (None: unchanged). Every experiment's
  ``get_config(arg)`` ends with it, so ``experiments/<name>.py:tiny`` works for all."""
  if arg is None or arg == "":
    return config
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; use one of {', '.join(VARIANTS)} "
                     "(e.g. experiments/contrastive.py:tiny)")
  return override(config, VARIANTS[arg])


def override(config: ml_collections.ConfigDict, changes: dict) -> ml_collections.ConfigDict:
  """Sets ``{"section.key": value}`` on ``config`` through its locked form, so a misspelt key
  raises (a KeyError naming it) instead of adding a new key. Returns ``config``."""
  was_locked = config.is_locked
  config.lock()
  try:
    for path, value in changes.items():
      *sections, name = path.split(".")
      node = config
      for section in sections:
        node = node[section]
      if name not in node:
        raise KeyError(f"unknown config key {path!r}")
      node[name] = value
  finally:
    if not was_locked:
      config.unlock()
  return config


# An earlier version's key -> its name now (``upgrade`` applies it to a saved config).
RENAMED = {"loss.threshold": "eval.threshold"}


def upgrade(saved: dict) -> dict:
  """A saved config (config.json's nested dict) with the keys of ``RENAMED`` under their present
  names (a value already under the new name wins). ``saved`` itself is not changed."""
  upgraded = {section: dict(value) if isinstance(value, dict) else value
              for section, value in saved.items()}
  for old, new in RENAMED.items():
    (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
    if old_name not in upgraded.get(old_section, {}):
      continue
    value = upgraded[old_section].pop(old_name)
    upgraded.setdefault(new_section, {}).setdefault(new_name, value)
  return upgraded


def declared_paths() -> tuple[str, ...]:
  """Every declared key, dotted (``model.encoder``, ...)."""
  return tuple(key.path for key in KEYS)
