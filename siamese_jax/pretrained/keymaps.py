"""Explicit maps from PyTorch checkpoint keys to the Flax params of ``pretrained.resnet`` and
``pretrained.vit`` (as jax-ml/bonsai's ``params.py``): one ``Rule`` per kind of parameter.

A rule pairs a Flax param path template (``layer{s}_{b}/conv{c}/kernel``) with the PyTorch keys
it is made from (``layer{s}.{b}.conv{c}.weight``; several keys for a fused tensor, e.g. Hugging
Face's separate query, key and value into timm's ``qkv``) and how their arrays become the Flax
one (a conv's OIHW -> HWIO, a Linear's [out, in] -> [in, out]). ``convert`` walks the module's
params, so every parameter must come from the file: a missing, mis-shaped or unused key (other
than those a layout declares ``IGNORED``: the classifier, BatchNorm's step counter, DINOv2's mask
token) is a one-line ``WeightsError`` naming it and the architecture.

Layouts: ``CONVNEXT`` (timm's: stem.0, stages.N.blocks.M.conv_dw, head.norm, head.fc),
``RESNET`` (timm's ResNet keys, which are torchvision's: conv1, bn1, layer1.0.conv1, ...,
downsample.0/1, fc), ``VIT`` (timm's ViT and DINOv2: patch_embed.proj, cls_token, pos_embed,
blocks.N.attn.qkv, blocks.N.ls1.gamma, norm, head) and ``DINOV2_HF`` (Hugging Face's Dinov2Model
as on the hub: embeddings.cls_token, encoder.layer.N.attention.attention.query,
layer_scale1.lambda1, layernorm; ``DINOV2_HF5``: the same as transformers 5 names it in memory,
attention.q_proj).
"""

import re
from typing import Callable, NamedTuple

import numpy as np


class WeightsError(ValueError):
  """A checkpoint that does not fit the architecture (one line)."""


def _same(a):
  return a


def _conv(w):
  """PyTorch conv weight [O, I, kh, kw] -> Flax [kh, kw, I, O]."""
  return np.transpose(w, (2, 3, 1, 0))


def _linear(w):
  """PyTorch Linear weight [out, in] -> Flax Dense kernel [in, out]."""
  return np.transpose(w)


def _linears(*ws):
  """Several Linear weights [out_i, in] -> one fused kernel [in, sum out_i]."""
  return np.concatenate([np.transpose(w) for w in ws], axis=1)


def _concat(*bs):
  return np.concatenate(bs)


class Rule(NamedTuple):
  """Flax param ``flax`` (a template with ``{name}`` fields of digits) from the PyTorch keys
  ``torch`` (templates with the same fields) through ``convert(*arrays)``."""
  flax: str
  torch: tuple[str, ...]
  convert: Callable = _same


class Layout(NamedTuple):
  """A checkpoint naming scheme: its rules, the keys it leaves out on purpose (regexes) and the
  key whose presence identifies it."""
  name: str
  rules: tuple[Rule, ...]
  ignored: tuple[str, ...]
  marker: str


def _bn(flax: str, torch: str) -> tuple[Rule, ...]:
  return (Rule(f"{flax}/scale", (f"{torch}.weight",)), Rule(f"{flax}/bias", (f"{torch}.bias",)),
          Rule(f"{flax}/mean", (f"{torch}.running_mean",)),
          Rule(f"{flax}/var", (f"{torch}.running_var",)))


RESNET = Layout("timm/torchvision ResNet", (
    Rule("conv1/kernel", ("conv1.weight",), _conv),
    *_bn("bn1", "bn1"),
    Rule("layer{s}_{b}/conv{c}/kernel", ("layer{s}.{b}.conv{c}.weight",), _conv),
    *_bn("layer{s}_{b}/bn{c}", "layer{s}.{b}.bn{c}"),
    Rule("layer{s}_{b}/downsample_conv/kernel", ("layer{s}.{b}.downsample.0.weight",), _conv),
    *_bn("layer{s}_{b}/downsample_bn", "layer{s}.{b}.downsample.1"),
), ignored=(r"fc\..*", r".*num_batches_tracked"), marker="layer1.0.conv1.weight")


def _ln(flax: str, torch: str) -> tuple[Rule, ...]:
  return (Rule(f"{flax}/scale", (f"{torch}.weight",)), Rule(f"{flax}/bias", (f"{torch}.bias",)))


def _dense(flax: str, torch: str) -> tuple[Rule, ...]:
  return (Rule(f"{flax}/kernel", (f"{torch}.weight",), _linear),
          Rule(f"{flax}/bias", (f"{torch}.bias",)))


VIT = Layout("timm ViT/DINOv2", (
    Rule("patch_embed_proj/kernel", ("patch_embed.proj.weight",), _conv),
    Rule("patch_embed_proj/bias", ("patch_embed.proj.bias",)),
    Rule("cls_token", ("cls_token",)),
    Rule("pos_embed", ("pos_embed",)),
    *_ln("blocks_{i}/norm1", "blocks.{i}.norm1"),
    *_dense("blocks_{i}/attn/qkv", "blocks.{i}.attn.qkv"),
    *_dense("blocks_{i}/attn/proj", "blocks.{i}.attn.proj"),
    Rule("blocks_{i}/ls1/gamma", ("blocks.{i}.ls1.gamma",)),
    *_ln("blocks_{i}/norm2", "blocks.{i}.norm2"),
    *_dense("blocks_{i}/mlp/fc1", "blocks.{i}.mlp.fc1"),
    *_dense("blocks_{i}/mlp/fc2", "blocks.{i}.mlp.fc2"),
    Rule("blocks_{i}/ls2/gamma", ("blocks.{i}.ls2.gamma",)),
    *_ln("norm", "norm"),
), ignored=(r"head\..*", r"fc_norm\..*"), marker="patch_embed.proj.weight")

CONVNEXT = Layout("timm ConvNeXt", (
    Rule("stem_0/kernel", ("stem.0.weight",), _conv),
    Rule("stem_0/bias", ("stem.0.bias",)),
    *_ln("stem_1", "stem.1"),
    *_ln("stages_{s}_downsample_0", "stages.{s}.downsample.0"),
    Rule("stages_{s}_downsample_1/kernel", ("stages.{s}.downsample.1.weight",), _conv),
    Rule("stages_{s}_downsample_1/bias", ("stages.{s}.downsample.1.bias",)),
    Rule("stages_{s}_blocks_{b}/conv_dw/kernel", ("stages.{s}.blocks.{b}.conv_dw.weight",), _conv),
    Rule("stages_{s}_blocks_{b}/conv_dw/bias", ("stages.{s}.blocks.{b}.conv_dw.bias",)),
    *_ln("stages_{s}_blocks_{b}/norm", "stages.{s}.blocks.{b}.norm"),
    *_dense("stages_{s}_blocks_{b}/mlp/fc1", "stages.{s}.blocks.{b}.mlp.fc1"),
    *_dense("stages_{s}_blocks_{b}/mlp/fc2", "stages.{s}.blocks.{b}.mlp.fc2"),
    Rule("stages_{s}_blocks_{b}/gamma", ("stages.{s}.blocks.{b}.gamma",)),
    *_ln("head_norm", "head.norm"),
), ignored=(r"head\.fc\..*",), marker="stem.0.weight")

_HF = "encoder.layer.{i}."


def _dinov2_hf(name: str, qkv: tuple[str, str, str], out: str) -> Layout:
  """Hugging Face's Dinov2Model with its attention's query, key, value and output names."""
  qkv = tuple(_HF + "attention." + n for n in qkv)
  return Layout(name, (
      Rule("patch_embed_proj/kernel", ("embeddings.patch_embeddings.projection.weight",), _conv),
      Rule("patch_embed_proj/bias", ("embeddings.patch_embeddings.projection.bias",)),
      Rule("cls_token", ("embeddings.cls_token",)),
      Rule("pos_embed", ("embeddings.position_embeddings",)),
      *_ln("blocks_{i}/norm1", _HF + "norm1"),
      Rule("blocks_{i}/attn/qkv/kernel", tuple(k + ".weight" for k in qkv), _linears),
      Rule("blocks_{i}/attn/qkv/bias", tuple(k + ".bias" for k in qkv), _concat),
      *_dense("blocks_{i}/attn/proj", _HF + "attention." + out),
      Rule("blocks_{i}/ls1/gamma", (_HF + "layer_scale1.lambda1",)),
      *_ln("blocks_{i}/norm2", _HF + "norm2"),
      *_dense("blocks_{i}/mlp/fc1", _HF + "mlp.fc1"),
      *_dense("blocks_{i}/mlp/fc2", _HF + "mlp.fc2"),
      Rule("blocks_{i}/ls2/gamma", (_HF + "layer_scale2.lambda1",)),
      *_ln("norm", "layernorm"),
  ), ignored=(r"embeddings\.mask_token", r"classifier\..*", r"pooler\..*"),
      marker=qkv[0].format(i=0) + ".weight")


# The files on the hub (facebook/dinov2-small, ...) and save_pretrained's: transformers 4 names.
DINOV2_HF = _dinov2_hf("Hugging Face Dinov2Model",
                       ("attention.query", "attention.key", "attention.value"), "output.dense")
# transformers 5's own state_dict() (it renames the hub's keys when loading).
DINOV2_HF5 = _dinov2_hf("Hugging Face Dinov2Model (transformers 5 state_dict)",
                        ("q_proj", "k_proj", "v_proj"), "o_proj")

LAYOUTS = (RESNET, VIT, CONVNEXT, DINOV2_HF, DINOV2_HF5)
# Prefixes a saved wrapper adds around the backbone (DDP's module., HF's Dinov2For... dinov2.).
PREFIXES = ("module.", "dinov2.")


def _pattern(template: str) -> re.Pattern:
  """A template's regex: ``{name}`` fields match digits, the rest literally."""
  parts = re.split(r"\{(\w+)\}", template)
  return re.compile("".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>\d+)"
                            for i, p in enumerate(parts)) + "$")


def strip_prefixes(state: dict) -> dict:
  """``state`` without a wrapper's prefix common to all its keys (see PREFIXES)."""
  for prefix in PREFIXES:
    if state and all(key.startswith(prefix) for key in state):
      state = {key[len(prefix):]: value for key, value in state.items()}
  return state


def detect(state: dict, arch: str) -> Layout:
  """The layout whose marker key ``state`` has, or a WeightsError naming ``arch``."""
  for layout in LAYOUTS:
    if layout.marker in state:
      return layout
  raise WeightsError(f"{arch}: the checkpoint's keys ({', '.join(list(state)[:3])}, ...) are in no "
                     f"known layout ({', '.join(l.name for l in LAYOUTS)}); pass a timm, "
                     "torchvision or Hugging Face state dict of this architecture")


def convert(state: dict, shapes: dict[str, tuple], arch: str, layout: Layout | None = None
            ) -> dict[str, np.ndarray]:
  """``{flax path: array}`` for every path of ``shapes`` (the module's params, "/"-joined, with
  their shapes) from the PyTorch ``state`` ({key: numpy array}), through ``layout``'s rules
  (None: ``detect``). A WeightsError (one line, naming ``arch``) for a parameter no rule
  makes, a key the file lacks, a shape that differs, or a key of the file nothing used."""
  state = strip_prefixes(state)
  layout = layout or detect(state, arch)
  compiled = [(_pattern(rule.flax), rule) for rule in layout.rules]
  out, used = {}, set()
  for path, shape in shapes.items():
    for pattern, rule in compiled:
      match = pattern.match(path)
      if match:
        break
    else:
      raise WeightsError(f"{arch}: the checkpoint's keys are in the {layout.name} layout, which "
                         f"has nothing for parameter {path!r}; is it another architecture's?")
    keys = [key.format(**match.groupdict()) for key in rule.torch]
    for key in keys:
      if key not in state:
        raise WeightsError(f"{arch}: the checkpoint lacks key {key!r} ({layout.name} layout; "
                           f"for parameter {path}); is it this architecture's?")
    arrays = [np.asarray(state[key]) for key in keys]
    try:
      value = rule.convert(*arrays)
    except ValueError:
      value = None
    if value is None or tuple(value.shape) != tuple(shape):
      got = ", ".join(f"{key} {tuple(a.shape)}" for key, a in zip(keys, arrays))
      raise WeightsError(f"{arch}: key {got} does not fit parameter {path} {tuple(shape)} "
                         f"({layout.name} layout); is the checkpoint this architecture's size?")
    out[path] = value
    used.update(keys)
  ignored = re.compile("|".join(f"(?:{p})" for p in layout.ignored))
  extra = [key for key in state if key not in used and not ignored.fullmatch(key)]
  if extra:
    raise WeightsError(f"{arch}: the checkpoint has key {extra[0]!r} that the architecture does "
                       f"not use ({len(extra)} such keys; {layout.name} layout); is it a "
                       "bigger model of this family?")
  return out
