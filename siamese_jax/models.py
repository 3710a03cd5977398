"""Encoders, pair heads and the Siamese / classifier wrappers, as Flax linen modules.

Every encoder is called as ``encoder(x, train=False) -> [B, D]`` on float32 NHWC images
``x: [B, H, W, C]`` already scaled to [0, 1] (MLPs flatten them; with
``model.input_normalization="per_channel"`` it is wrapped in ``normalization.NormalizedEncoder``).
No encoder keeps batch statistics (the convnets use GroupNorm; the pretrained ResNets'
BatchNorm is frozen, its statistics fixed params), so an encoder is a pure function of
``(params, x)`` plus a "dropout" rng in train mode; the ResNets are in ``siamese_jax.resnet``, the
pretrained backbones (``resnet50``, ``vit_*``, ``resnet18_bn``, ...) in ``siamese_jax.pretrained``.
A pair head is called as ``head(emb_a, emb_b) -> [B]``.
"""

import re
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from siamese_jax import constraints, conv, distances, normalization, pooling, pretrained, resnet
from siamese_jax.pretrained import tower

ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu, "tanh": nn.tanh, "sigmoid": nn.sigmoid, "gelu": nn.gelu, "elu": nn.elu}


def _flatten(x):
  """[B, ...] -> [B, prod(...)]."""
  return x.reshape(x.shape[0], -1)


# ---------------------------------------------------------------------------------- encoders


class MLPEncoder(nn.Module):
  """Flatten -> [Dense(features[i]) -> activation -> Dropout(dropout_rates[i])] for each i.

  ``input_dropout`` drops input pixels before the first Dense. The last layer's activation
  is applied only if ``final_activation``. ``dropout_rates`` has one rate per layer (or is
  empty for no dropout). x: [B, ...] -> [B, features[-1]].
  """
  features: Sequence[int]
  dropout_rates: Sequence[float] = ()
  input_dropout: float = 0.0
  activation: str = "relu"
  final_activation: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    rates = tuple(self.dropout_rates) or (0.0,) * len(self.features)
    if len(rates) != len(self.features):
      raise ValueError(f"MLPEncoder: dropout_rates has {len(rates)} entries but features has "
                       f"{len(self.features)}; give one rate per layer.")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"MLPEncoder: unknown activation {self.activation!r}; "
                       f"choose one of {sorted(ACTIVATIONS)}.")
    act = ACTIVATIONS[self.activation]
    x = _flatten(x)
    if self.input_dropout > 0:
      x = nn.Dropout(self.input_dropout, deterministic=not train)(x)
    for i, (width, rate) in enumerate(zip(self.features, rates)):
      x = nn.Dense(width)(x)
      if i < len(self.features) - 1 or self.final_activation:
        x = act(x)
      if rate > 0:
        x = nn.Dropout(rate, deterministic=not train)(x)
    return x


def keras_mnist_mlp(embedding_dim: int = 128, hidden: int = 128, dropout: float = 0.1,
                    input_dropout: float = 0.0) -> MLPEncoder:
  """Keras ``mnist_siamese`` base network: Dense 128 relu, Dropout .1, Dense 128 relu,
  Dropout .1, Dense ``embedding_dim`` relu. [B, H, W, C] -> [B, embedding_dim]."""
  return MLPEncoder(features=(hidden, hidden, embedding_dim),
                    dropout_rates=(dropout, dropout, 0.0), input_dropout=input_dropout,
                    activation="relu", final_activation=True)


def mlp_2d(embedding_dim: int = 2, hidden: int = 1024) -> MLPEncoder:
  """Seed 002's FNN: Dense 1024 relu, Dense 1024 relu, Dense 2 linear (for latent plots)."""
  return MLPEncoder(features=(hidden, hidden, embedding_dim), final_activation=False)


class EmbeddingNet(nn.Module):
  """adambielski/siamese-triplet EmbeddingNet (VALID convs; 28 -> 24 -> 12 -> 8 -> 4).

  Conv 32 5x5, PReLU, pool 2, Conv 64 5x5, PReLU, pool 2, Dense 256 PReLU, Dense 256 PReLU,
  Dense embedding_dim. PReLU is one shared slope initialised at 0.25 as in torch.nn.PReLU().
  x: [B, 28, 28, C] -> [B, embedding_dim].
  """
  embedding_dim: int = 2
  conv_impl: str = "xla"  # siamese_jax.conv.CONV_IMPLS: how the convolutions are computed

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    for filters in (32, 64):
      x = nn.Conv(filters, (5, 5), padding="VALID",
                  conv_general_dilated=conv.conv_function(self.conv_impl))(x)
      x = pooling.max_pool_2x2(nn.PReLU(negative_slope_init=0.25)(x))
    x = _flatten(x)
    for _ in range(2):
      x = nn.PReLU(negative_slope_init=0.25)(nn.Dense(256)(x))
    return nn.Dense(self.embedding_dim)(x)


# Per variant: conv kernel sizes and whether a 2x2 max pool follows each conv (VALID convs).
# "105" is Koch et al. (2015): 105 -> 96 -> 48 -> 42 -> 21 -> 18 -> 9 -> 6, flatten 6*6*256.
# "28" keeps the filters and shrinks kernels to 5, 3, 3, 2; three pools would leave nothing
# for the last conv, so only the first two convs pool: 28 -> 24 -> 12 -> 10 -> 5 -> 3 -> 2,
# flatten 2*2*256.
KOCH_VARIANTS = {
    "105": ((10, 7, 4, 4), (True, True, True, False)),
    "28": ((5, 3, 3, 2), (True, True, False, False)),
}


class KochConvNet(nn.Module):
  """Koch, Zemel & Salakhutdinov (2015) convolutional tower; see KOCH_VARIANTS for shapes.

  Conv 64, 128, 128, 256 (relu, VALID), then Dense embedding_dim with sigmoid.
  x: [B, 105, 105, C] ("105") or [B, 28, 28, C] ("28") -> [B, embedding_dim] in (0, 1).
  """
  variant: str = "105"
  embedding_dim: int = 4096
  filters: Sequence[int] = (64, 128, 128, 256)
  conv_impl: str = "xla"  # siamese_jax.conv.CONV_IMPLS

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if self.variant not in KOCH_VARIANTS:
      raise ValueError(f"KochConvNet: unknown variant {self.variant!r}; "
                       f"choose one of {sorted(KOCH_VARIANTS)}.")
    kernels, pools = KOCH_VARIANTS[self.variant]
    for filters, k, pool in zip(self.filters, kernels, pools):
      x = nn.relu(nn.Conv(filters, (k, k), padding="VALID",
                          conv_general_dilated=conv.conv_function(self.conv_impl))(x))
      if pool:
        x = pooling.max_pool_2x2(x)
    return nn.sigmoid(nn.Dense(self.embedding_dim)(_flatten(x)))


class ConvNet4(nn.Module):
  """Four blocks of Conv 3x3 SAME -> GroupNorm -> relu -> max pool 2, then Dense.

  GroupNorm (not BatchNorm) keeps the encoder free of batch statistics. ``filters`` must be
  divisible by ``norm_groups``. Block i has ``filters * filter_growth ** i`` channels (growth 2:
  widths double as the map halves, about the same compute as constant width at twice the first
  block's). x: [B, 28, 28, C] -> (28, 14, 7, 3, 1) -> [B, embedding_dim]; without ``final_pool``
  the Dense layer reads the last block's 3 x 3 map (where in the character a stroke is), not its
  maximum.
  """
  filters: int = 64
  embedding_dim: int = 64
  norm_groups: int = 8
  final_pool: bool = True
  filter_growth: int = 1
  conv_impl: str = "xla"  # siamese_jax.conv.CONV_IMPLS

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    for block in range(4):
      x = nn.Conv(self.filters * self.filter_growth ** block, (3, 3), padding="SAME",
                  conv_general_dilated=conv.conv_function(self.conv_impl))(x)
      x = nn.relu(nn.GroupNorm(num_groups=self.norm_groups)(x))
      if block < 3 or self.final_pool:
        x = pooling.max_pool_2x2(x)
    return nn.Dense(self.embedding_dim)(_flatten(x))


# ------------------------------------------------------------------------------------- heads


class DistanceHead(nn.Module):
  """No parameters: distance [B] between emb_a, emb_b [B, D] (for contrastive losses).

  Uses ``siamese_jax.distances``, whose euclidean distance has a 0 (not NaN) gradient at a == b.
  """
  distance: str = "euclidean"

  def __call__(self, emb_a, emb_b):
    return distances.get_batch_distance(self.distance)(emb_a, emb_b)


class AbsDiffHead(nn.Module):
  """Koch head: Dense(1) on |emb_a - emb_b| -> logit [B] (for BCE with sigmoid).

  With ``use_abs=False`` it sees emb_a - emb_b: seed 000's "missing abs" bug, which makes the
  score antisymmetric in the pair order. emb_a, emb_b: [B, D] -> [B].
  """
  use_abs: bool = True

  @nn.compact
  def __call__(self, emb_a, emb_b):
    diff = emb_a - emb_b
    return nn.Dense(1)(jnp.abs(diff) if self.use_abs else diff)[:, 0]


class SubtractHead(AbsDiffHead):
  """Dense(1) on emb_a - emb_b -> logit [B] (seed 003; fails at about chance)."""
  use_abs: bool = False


class ConcatHead(nn.Module):
  """Dense(1) on concat(emb_a, emb_b) -> logit [B] (seed 001; not symmetric, fails)."""

  @nn.compact
  def __call__(self, emb_a, emb_b):
    return nn.Dense(1)(jnp.concatenate([emb_a, emb_b], axis=-1))[:, 0]


# ---------------------------------------------------------------------------------- wrappers


class SiameseModel(nn.Module):
  """Two-tower model: ``(x_a, x_b, train) -> (head output [B], emb_a [B, D], emb_b [B, D])``.

  shared_weights=True applies one encoder (params["encoder"]) to both inputs; False gives
  the second input its own tower (params["encoder"] for x_a, params["encoder_b"] for x_b): a
  copy of ``encoder``, or ``second_encoder`` where given (another architecture, for a second
  source of another kind; both must output D). The head's params, if any, are params["head"].
  Dropout uses the "dropout" rng.
  """
  encoder: nn.Module
  head: nn.Module
  shared_weights: bool = True
  second_encoder: nn.Module | None = None
  test_time_shift: int = 0  # eval embeddings: the mean over views shifted by up to this many px

  def setup(self):
    if not self.shared_weights:
      # A deep clone: a wrapper's inner encoder must also live under "encoder_b".
      self.encoder_b = (self.second_encoder or self.encoder).clone(
          parent=None, name=None, _deep_clone=True, _reset_names=True)

  def embed(self, x, train: bool = False, tower: int = 0, views: bool = True):
    """x: [B, H, W, C] -> [B, D] through tower 0 (x_a's) or 1 (x_b's; same if shared); in eval
    mode the mean over ``test_time_shift``'s shifted views unless ``views`` is False."""
    second = tower == 1 and not self.shared_weights
    encode = lambda mdl, v: (mdl.encoder_b if second else mdl.encoder)(v, train=train)
    shift = 0 if train or not views else self.test_time_shift
    return mean_over_shifted_views(self, encode, x, shift)

  def __call__(self, x_a, x_b, train: bool):
    if self.shared_weights:
      # One encoder call on the 2B stacked inputs: the same function, with matmuls twice as
      # tall, which is what keeps a CPU or an accelerator busy.
      emb_a, emb_b = jnp.split(self.encoder(jnp.concatenate([x_a, x_b]), train=train), 2)
    else:
      emb_a = self.embed(x_a, train=train, tower=0)
      emb_b = self.embed(x_b, train=train, tower=1)
      if emb_a.shape[-1] != emb_b.shape[-1]:
        raise ValueError(f"the two towers output {emb_a.shape[-1]} and {emb_b.shape[-1]} "
                         "dimensions; make them equal (e.g. model.features[-1] of an 'mlp' "
                         "model.encoder_b = model.embedding_dim)")
    return self.head(emb_a, emb_b), emb_a, emb_b


class AveragedDown(nn.Module):
  """``encoder`` on its input averaged down to ``size`` x ``size`` first (whole blocks): x
  [B, H, W, C] with H and W multiples of ``size`` -> ``encoder([B, size, size, C])``. A source
  kept at a larger common size beside another (the 8 x 8 UCI digits repeated to 32 x 32 beside
  MNIST) reaches its tower at its own resolution, exactly: the mean of a repeated block is the
  pixel."""
  encoder: nn.Module
  size: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    b, h, w, c = x.shape
    if h % self.size or w % self.size:
      raise ValueError(f"model.input_size_b={self.size} does not divide the {h} x {w} images; "
                       "choose data.image_size as a multiple of it")
    x = x.reshape(b, self.size, h // self.size, self.size, w // self.size, c).mean(axis=(2, 4))
    return self.encoder(x, train=train)


class CosineDense(nn.Module):
  """Cosines between unit embeddings and unit class weights (NormFace, Wang et al. 2017; Chen
  et al. 2019's Baseline++): x [B, D] -> [B, features] in [-1, 1]. No bias. The unit vectors are
  ``x / sqrt(|x|^2 + eps)``, so the gradient stays finite at a zero embedding."""
  features: int
  eps: float = 1e-12

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    unit = lambda v, axis: v * jax.lax.rsqrt(jnp.sum(jnp.square(v), axis, keepdims=True) + self.eps)
    return unit(x, -1) @ unit(kernel, 0)


def shifted_views(x, shift: int):
  """x [B, H, W, C] -> [(2 shift + 1)^2, B, H, W, C]: every shift by -shift..shift pixels along
  each axis, pixels from outside repeating the edge (the background of characters and digits)."""
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
  return jnp.stack([padded[:, shift + dy:shift + dy + h, shift + dx:shift + dx + w]
                    for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)])


def mean_over_shifted_views(module: nn.Module, encode: Callable, x, shift: int):
  """encode(module, x) [B, D], or with ``shift`` > 0 its mean over ``shifted_views``:
  test-time augmentation of support and query images alike. The views go through one
  ``nn.scan`` (the module's variables broadcast), so memory and compiled code are one view's."""
  if not shift:
    return encode(module, x)
  views = shifted_views(x, shift)
  body = lambda mdl, total, view: (total + encode(mdl, view), None)
  scan = nn.scan(body, variable_broadcast=True, split_rngs={"params": False})
  total, _ = scan(module, encode(module, views[0]), views[1:])
  return total / views.shape[0]


class Classifier(nn.Module):
  """Classifier over the training classes: ``(x, train) -> (outputs [B, num_classes], embedding
  [B, D])``; outputs are logits (Dense) or, with ``cosine``, cosines (``CosineDense``) that the
  ``cosine_softmax`` loss scales into logits.

  params["encoder"] is the encoder, params["classifier"] the layer on top (its "kernel" is
  [D, num_classes] either way).
  """
  encoder: nn.Module
  num_classes: int
  cosine: bool = False
  test_time_shift: int = 0  # as SiameseModel's

  def setup(self):
    self.classifier = (CosineDense(self.num_classes) if self.cosine
                       else nn.Dense(self.num_classes))

  def embed(self, x, train: bool = False, tower: int = 0, views: bool = True):
    """x: [B, H, W, C] -> [B, D] (one tower: ``tower`` is accepted for a uniform call); views
    as SiameseModel.embed's."""
    del tower
    encode = lambda mdl, v: mdl.encoder(v, train=train)
    shift = 0 if train or not views else self.test_time_shift
    return mean_over_shifted_views(self, encode, x, shift)

  def __call__(self, x, train: bool):
    embedding = self.embed(x, train=train)
    return self.classifier(embedding), embedding


# --------------------------------------------------------------------------------- factories


def last_dense(encoder_params) -> tuple[str, ...]:
  """The embedding layer of every encoder here: its top-level Dense with the highest index
  (``Dense_2`` of a three-layer MLP, ``Dense_0`` of a ResNet)."""
  dense = [name for name in encoder_params if re.fullmatch(r"Dense_\d+", name)]
  return (max(dense, key=lambda name: int(name.split("_")[1])),) if dense else ()


class Component(NamedTuple):
  """A named choice of the config: ``build(model_config) -> nn.Module`` and the ``model.*`` keys
  it reads (a key it does not read has no effect, which the config check warns about).

  An encoder also says which of its top-level layers make its embedding ``head``
  (``head_layers(encoder params) -> names``: they train at the full rate and are never frozen,
  see ``param_labels``) and may bring its own ``load_weights(path, encoder params) -> encoder
  params`` for ``model.pretrained`` (None: ``siamese_jax.weights.load_encoder``, a file written
  by siamese_jax). Both see the encoder's own params, without the input normalisation around it.
  ``constraints``: what it needs of the config and the data (``siamese_jax.constraints``: an
  encoder's smallest image, a classifier's classes), walked by ``config_checks``.
  ``stage_of(param path, top-level names of its subtree) -> int`` numbers the layers of a
  backbone for ``model.freeze='stageN'`` (None: the encoder has no stages).
  """
  build: Callable
  reads: tuple[str, ...] = ()
  convolutional: bool = False
  head_layers: Callable = last_dense
  load_weights: Callable | None = None
  constraints: tuple = ()
  stage_of: Callable | None = None


def _dim(model_config) -> dict:
  """embedding_dim as a keyword, or none (the encoder's own default) when it is None."""
  dim = model_config.embedding_dim
  return {} if dim is None else {"embedding_dim": dim}


def _mlp(model_config) -> MLPEncoder:
  if not model_config.features:
    raise ValueError("model.encoder='mlp' needs model.features, e.g. (128, 128, 128).")
  return MLPEncoder(features=tuple(model_config.features),
                    dropout_rates=tuple(model_config.dropout_rates),
                    input_dropout=model_config.input_dropout, activation=model_config.activation,
                    final_activation=model_config.final_activation)


def _smallest(name: str, side) -> tuple:
  """The constraint of encoder ``name``: images of at least ``side`` pixels (its kernels and
  pools leave no feature map on smaller ones)."""
  return (constraints.image_at_least("model.encoder", side,
                                     {"model.encoder": name, "data.image_size": 8}),)


def _classes_cover_labels(config, datasets) -> str | None:
  """model.num_classes (when set) must cover every training label."""
  wanted = config.model.num_classes
  if wanted is None:
    return None
  if not (isinstance(wanted, int) and not isinstance(wanted, bool) and wanted >= 2):
    return f"model.num_classes={wanted!r} must be an int >= 2, or None (the data's classes)"
  if datasets is not None and wanted < datasets.train.num_classes:
    return (f"model.num_classes={wanted} is smaller than the {datasets.train.num_classes} "
            f"training classes; set model.num_classes={datasets.train.num_classes} or None")
  return None


CLASSIFIER_CONSTRAINTS = (constraints.Constraint(
    ("model.num_classes",), _classes_cover_labels,
    {"loss.name": "cross_entropy", "model.head": "classifier", "model.num_classes": 3}),)


def _resnet_args(model_config) -> dict:
  return {"filters": model_config.filters, "norm_groups": model_config.norm_groups,
          "conv_impl": model_config.conv_impl, **_dim(model_config)}


ENCODERS: dict[str, Component] = {
    "keras_mlp": Component(lambda m: keras_mnist_mlp(input_dropout=m.input_dropout, **_dim(m)),
                           ("embedding_dim", "input_dropout")),
    "mlp_2d": Component(lambda m: mlp_2d(**_dim(m)), ("embedding_dim",)),
    "mlp": Component(_mlp, ("features", "dropout_rates", "input_dropout", "activation",
                            "final_activation")),
    "embedding_net": Component(lambda m: EmbeddingNet(conv_impl=m.conv_impl, **_dim(m)),
                               ("embedding_dim", "conv_impl"), True,
                               constraints=_smallest("embedding_net", 16)),
    "koch": Component(lambda m: KochConvNet(variant="105", conv_impl=m.conv_impl, **_dim(m)),
                      ("embedding_dim", "conv_impl"), True, constraints=_smallest("koch", 65)),
    "koch28": Component(lambda m: KochConvNet(variant="28", conv_impl=m.conv_impl, **_dim(m)),
                        ("embedding_dim", "conv_impl"), True,
                        constraints=_smallest("koch28", 24)),
    "convnet4": Component(lambda m: ConvNet4(filters=m.filters, norm_groups=m.norm_groups,
                                             final_pool=m.final_pool,
                                             filter_growth=m.filter_growth,
                                             conv_impl=m.conv_impl, **_dim(m)),
                          ("embedding_dim", "filters", "norm_groups", "final_pool",
                           "filter_growth", "conv_impl"), True,
                          constraints=_smallest("convnet4", lambda m: 16 if m.final_pool else 8)),
    "resnet18": Component(lambda m: resnet.resnet18(**_resnet_args(m)),
                          ("embedding_dim", "filters", "norm_groups", "conv_impl"), True),
    "resnet34": Component(lambda m: resnet.resnet34(**_resnet_args(m)),
                          ("embedding_dim", "filters", "norm_groups", "conv_impl"), True),
    "resnet_small": Component(
        lambda m: resnet.ResNet(stage_sizes=tuple(m.resnet_stage_sizes), stem="small",
                                **_resnet_args(m)),
        ("embedding_dim", "filters", "norm_groups", "resnet_stage_sizes", "conv_impl"), True),
}


def _pretrained_component(arch: str) -> Component:
  """The tower of a pretrained backbone (``siamese_jax.pretrained.tower``)."""
  spec = pretrained.ARCHITECTURES[arch]
  reads = ("embedding_dim", "dtype", "backbone_args",
           "pooling" if spec.convolutional else "pos_interpolation")
  return Component(lambda m: tower.build(arch, m), reads, spec.convolutional, tower.head_layers,
                   tower.load_weights(arch), stage_of=tower.stage_of(arch))


# The backbones of timm / torchvision / Hugging Face checkpoints, under their timm names; the
# BatchNorm ResNet-18 and -34 as resnet18_bn, resnet34_bn (resnet18, resnet34: GroupNorm, above).
PRETRAINED_ENCODERS = {(f"{arch}_bn" if arch in ENCODERS else arch): arch
                       for arch in pretrained.ARCHITECTURES}
ENCODERS.update({name: _pretrained_component(arch) for name, arch in PRETRAINED_ENCODERS.items()})


def _distance_head(model_config) -> DistanceHead:
  return DistanceHead(model_config.distance)


# Logit heads score a pair by their output (higher = more alike); the others by model.distance
# between the two embeddings (lower = more alike): see siamese_jax.scoring.
HEADS: dict[str, Component] = {
    "distance": Component(_distance_head, ("distance", "shared_weights")),
    "abs_diff": Component(lambda m: AbsDiffHead(), ("shared_weights",)),
    "concat": Component(lambda m: ConcatHead(), ("shared_weights",)),
    "subtract": Component(lambda m: SubtractHead(), ("shared_weights",)),
    "classifier": Component(None, ("distance", "num_classes"),
                            constraints=CLASSIFIER_CONSTRAINTS),
    "cosine_classifier": Component(None, ("distance", "num_classes"),
                                   constraints=CLASSIFIER_CONSTRAINTS),
}
LOGIT_HEADS = ("abs_diff", "concat", "subtract")
CLASSIFIER_HEADS = ("classifier", "cosine_classifier")  # Classifier models, one tower


def _choice(table: dict, value, key: str):
  """table[value], or a one-line ValueError naming ``key`` and the choices."""
  if value not in table:
    raise ValueError(f"model.{key}={value!r} is not known; choose one of {', '.join(table)}.")
  return table[value]


def is_convolutional(encoder: str) -> bool:
  return ENCODERS[encoder].convolutional


# model.freeze: "backbone" freezes every encoder layer but its head_layers; "stageN" (encoders
# with a Component.stage_of: the pretrained backbones) freezes the stem and stages 1..N.
FREEZE = ("none", "backbone", "stage0", "stage1", "stage2", "stage3", "stage4")
# What param_labels gives each parameter; train.make_optimizer has one transform per label.
PARAM_LABELS = ("head", "backbone", "frozen")


def _tower_encoders(model_config) -> dict[str, str]:
  """{params key of a tower: its encoder's name}: "encoder", and "encoder_b" of separate towers."""
  return {"encoder": model_config.encoder,
          "encoder_b": model_config.encoder_b or model_config.encoder}


def _is_wrapper(tower_params) -> bool:
  """Whether these are a NormalizedEncoder's or AveragedDown's params: one subtree "encoder",
  beside input statistics at most."""
  return set(tower_params) - {normalization.MEAN, normalization.STD} == {"encoder"}


def encoder_path(tower_params) -> tuple[str, ...]:
  """Where the encoder's own params are inside a tower's: () for a bare encoder, ("encoder",)
  inside a NormalizedEncoder or AveragedDown (deeper when nested)."""
  return ("encoder",) + encoder_path(tower_params["encoder"]) if _is_wrapper(tower_params) else ()


def _tower_labels(tower_params, component: Component, freeze: str) -> dict:
  """param_labels of one tower: its head_layers "head", the rest of its encoder "backbone", or
  "frozen" as model.freeze says."""
  if _is_wrapper(tower_params):
    return {name: _tower_labels(subtree, component, freeze) if name == "encoder" else "frozen"
            for name, subtree in tower_params.items()}
  heads = set(component.head_layers(tower_params))
  if freeze.startswith("stage") and component.stage_of is None:
    raise ValueError(f"model.freeze={freeze!r} needs an encoder with stages (a pretrained "
                     "backbone such as resnet50); use 'backbone' or 'none'")
  last = int(freeze[len("stage"):]) if freeze.startswith("stage") else None

  def label(path, _):
    names = [key.key for key in path]
    if names[0] in heads:
      return "head"
    if freeze == "backbone":
      return "frozen"
    if last is not None:
      subtree = tower_params[names[0]]
      if component.stage_of(tuple(names), subtree if isinstance(subtree, dict) else {}) <= last:
        return "frozen"
    return "backbone"

  return jax.tree_util.tree_map_with_path(label, tower_params)


def param_labels(model_config, params) -> dict:
  """``params`` of this model with every leaf replaced by one of PARAM_LABELS: "head" for the
  pair head or classifier and each encoder's ``head_layers``, "backbone" for the rest of the
  encoders ("frozen" where model.freeze='backbone', or up to its stage N where 'stageN'),
  "frozen" for input statistics (they are set from the data, never trained)."""
  _choice(dict.fromkeys(FREEZE), model_config.freeze, "freeze")
  towers = _tower_encoders(model_config)
  return {name: (_tower_labels(subtree, _choice(ENCODERS, towers[name], "encoder"),
                               model_config.freeze)
                 if name in towers else jax.tree.map(lambda _: "head", subtree))
          for name, subtree in params.items()}


def keys_read(model_config) -> set[str]:
  """The ``model.*`` keys that the model of ``model_config`` reads."""
  second = set()
  if model_config.head not in CLASSIFIER_HEADS and not model_config.shared_weights:
    second_encoder = ENCODERS.get(model_config.encoder_b or model_config.encoder)
    second = {"encoder_b", "input_size_b"} | set(second_encoder.reads if second_encoder else ())
  return ({"encoder", "head", "input_normalization", "test_time_shift", "pretrained", "freeze"}
          | second
          | set(_choice(ENCODERS, model_config.encoder, "encoder").reads)
          | set(_choice(HEADS, model_config.head, "head").reads))


def build_encoder(model_config, name: str | None = None) -> nn.Module:
  """The encoder named by model_config.encoder (or ``name``; see ENCODERS for the keys each
  reads), wrapped in a NormalizedEncoder if model_config.input_normalization asks for one."""
  encoder = _choice(ENCODERS, name or model_config.encoder, "encoder").build(model_config)
  mode = model_config.input_normalization
  _choice(dict.fromkeys(normalization.MODES), mode, "input_normalization")
  return encoder if mode == "none" else normalization.NormalizedEncoder(encoder)


def build_model(model_config) -> nn.Module:
  """SiameseModel(encoder, head, shared_weights), or Classifier if model_config.head is one of
  CLASSIFIER_HEADS (needs num_classes). See the module docstring for the call signatures."""
  encoder = build_encoder(model_config)
  head = _choice(HEADS, model_config.head, "head")
  if model_config.head in CLASSIFIER_HEADS:
    if not model_config.num_classes:
      raise ValueError(f"model.head={model_config.head!r} needs model.num_classes (e.g. 10 for "
                       "MNIST).")
    return Classifier(encoder, model_config.num_classes,
                      cosine=model_config.head == "cosine_classifier",
                      test_time_shift=model_config.test_time_shift)
  if model_config.head == "distance":
    _choice(distances.BATCH_DISTANCES, model_config.distance, "distance")
  second = None  # separate towers: model.encoder_b and model.input_size_b shape the second
  if not model_config.shared_weights and (model_config.encoder_b or model_config.input_size_b):
    second = build_encoder(model_config, model_config.encoder_b)
    if model_config.input_size_b:
      second = AveragedDown(second, model_config.input_size_b)
  return SiameseModel(encoder, head.build(model_config), shared_weights=model_config.shared_weights,
                      second_encoder=second, test_time_shift=model_config.test_time_shift)
