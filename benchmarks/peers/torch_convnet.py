"""The Omniglot default's training step (and ResNet-18 at 64 x 64) as a plain PyTorch loop: the
peer of siamese_jax's step in benchmarks/convnet_vs_torch.py, which runs this file in an
interpreter with CPU torch (torch is not a project dependency).

Written as a careful PyTorch user would, the same model and step as ``experiments/omniglot.py``:
random uint8 images held in memory (the data's content does not change a step's cost), a batch
of 64 drawn uniformly, each image rotated by up to 15 degrees, shifted by up to 2 pixels and
warped by a smooth random field of up to 2.5 pixels (a 4 x 4 lattice of offsets, bilinearly
upsampled) through one ``affine_grid`` + ``grid_sample`` (border padding, as siamese_jax's nearest
edge), rounded back to uint8 values; per-channel standardised; convnet4 (Conv 3x3 SAME, GroupNorm
8 groups, ReLU, max pool 2; widths 32-64-128-256; no pool after the last block; Linear 2304 -> 64);
CosFace over 976 classes (scale 16, margin 0.1) on unit embeddings and unit class weights; Adam
at 1e-3. ``--model resnet18``: siamese_jax.resnet's ResNet-18 (GroupNorm, zero-initialised last
scale, 7x7/2 stem and 3x3/2 max pool, embedding 128) on 64 x 64 x 3 images without the warp.

    /work/refenv/bin/python benchmarks/peers/torch_convnet.py [--model convnet4] [--steps 30]

It prints one JSON line: ms per step and images per second over ``--steps`` steps after
``--warmup`` steps, the first step's seconds, the threads and the process's peak RSS.
"""

import argparse
import json
import math
import resource
import time

import torch
from torch import nn
from torch.nn import functional as F


class ConvNet4(nn.Module):
  def __init__(self, filters=32, growth=2, groups=8, embedding_dim=64, channels=1, size=28):
    super().__init__()
    layers, width_in = [], channels
    for block in range(4):
      width = filters * growth ** block
      layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.GroupNorm(groups, width), nn.ReLU()]
      if block < 3:
        layers.append(nn.MaxPool2d(2))
        size //= 2
      width_in = width
    self.features = nn.Sequential(*layers)
    self.dense = nn.Linear(width_in * size * size, embedding_dim)

  def forward(self, x):
    return self.dense(torch.flatten(self.features(x), 1))


class Block(nn.Module):
  def __init__(self, width_in, width, stride, groups=8):
    super().__init__()
    self.conv1 = nn.Conv2d(width_in, width, 3, stride, 1, bias=False)
    self.norm1 = nn.GroupNorm(groups, width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.norm2 = nn.GroupNorm(groups, width)
    nn.init.zeros_(self.norm2.weight)
    self.shortcut = None
    if stride != 1 or width_in != width:
      self.shortcut = nn.Sequential(nn.Conv2d(width_in, width, 1, stride, bias=False),
                                    nn.GroupNorm(groups, width))

  def forward(self, x):
    y = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
    return F.relu((x if self.shortcut is None else self.shortcut(x)) + y)


class ResNet18(nn.Module):
  def __init__(self, filters=64, groups=8, embedding_dim=128, channels=3):
    super().__init__()
    # siamese_jax's 7x7/2 SAME conv pads (2, 3) at 64 px, torch pads 3 each side; the cost is one.
    self.stem = nn.Sequential(nn.Conv2d(channels, filters, 7, 2, 3, bias=False),
                              nn.GroupNorm(groups, filters), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    blocks, width_in = [], filters
    for stage in range(4):
      for block in range(2):
        width = filters * 2 ** stage
        blocks.append(Block(width_in, width, 2 if stage > 0 and block == 0 else 1, groups))
        width_in = width
    self.blocks = nn.Sequential(*blocks)
    self.dense = nn.Linear(width_in, embedding_dim)

  def forward(self, x):
    return self.dense(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def augment(images, max_degrees=15.0, max_shift=2.0, elastic=2.5, grid=4):
  """uint8-valued float images [B, C, H, W] -> a random view of each, rounded to integers."""
  b, _, h, w = images.shape
  angle = torch.empty(b).uniform_(-max_degrees, max_degrees) * math.pi / 180
  shift = torch.empty(b, 2).uniform_(-max_shift, max_shift)
  cos, sin = torch.cos(angle), torch.sin(angle)
  # Output pixel -> source pixel in align_corners=True normalised coordinates.
  theta = torch.stack([torch.stack([cos, sin * (h - 1) / (w - 1),
                                    -2 * (cos * shift[:, 1] + sin * shift[:, 0]) / (w - 1)], 1),
                       torch.stack([-sin * (w - 1) / (h - 1), cos,
                                    -2 * (cos * shift[:, 0] - sin * shift[:, 1]) / (h - 1)], 1)], 1)
  coords = F.affine_grid(theta, (b, 1, h, w), align_corners=True)
  if elastic:
    lattice = torch.empty(b, 2, grid, grid).uniform_(-elastic, elastic)
    offsets = F.interpolate(lattice, (h, w), mode="bilinear", align_corners=True)  # px (dx, dy)
    scale = torch.tensor([2 / (w - 1), 2 / (h - 1)]).view(1, 2, 1, 1)
    coords = coords + (offsets * scale).permute(0, 2, 3, 1)
  out = F.grid_sample(images, coords, mode="bilinear", padding_mode="border", align_corners=True)
  return out.round().clamp(0, 255)


def cosface(embedding, weight, labels, scale=16.0, margin=0.1):
  cosines = F.normalize(embedding, dim=1) @ F.normalize(weight, dim=0)
  logits = scale * (cosines - margin * F.one_hot(labels, cosines.shape[1]))
  return F.cross_entropy(logits, labels)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("convnet4", "resnet18"), default="convnet4")
  parser.add_argument("--steps", type=int, default=30, help="timed steps")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--batch", type=int, default=64, help="images a step")
  parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
  parser.add_argument("--smoke", action="store_true", help="2 timed steps of batch 8: that it runs")
  args = parser.parse_args()
  if args.smoke:
    args.steps, args.warmup, args.batch = 2, 1, 8
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  classes = 976
  if args.model == "convnet4":
    model, shape, warp = ConvNet4(), (1, 28, 28), True
    embedding_dim = 64
  else:
    model, shape, warp = ResNet18(), (3, 64, 64), False
    embedding_dim = 128
  images = torch.randint(0, 256, (2720, *shape), dtype=torch.uint8)
  labels = torch.randint(0, classes, (2720,))
  mean, std = images.float().div(255).mean((0, 2, 3)), images.float().div(255).std((0, 2, 3))
  class_weight = nn.Parameter(torch.randn(embedding_dim, classes) / math.sqrt(embedding_dim))
  optimizer = torch.optim.Adam([*model.parameters(), class_weight], lr=1e-3)

  def step():
    idx = torch.randint(0, images.shape[0], (args.batch,))
    x = images[idx].float()
    if warp:
      x = augment(x)
    x = (x / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    loss = cosface(model(x), class_weight, labels[idx])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  for _ in range(args.warmup - 1):
    step()
  start = time.perf_counter()
  for _ in range(args.steps):
    loss = step()
  seconds = time.perf_counter() - start
  print(json.dumps({
      "framework": "torch " + torch.__version__, "model": args.model, "batch": args.batch,
      "threads": torch.get_num_threads(), "first_step_s": round(first, 3),
      "ms_per_step": round(seconds / args.steps * 1e3, 2),
      "images_per_s": round(args.batch * args.steps / seconds, 1),
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
      "final_loss": round(loss.item(), 4)}))


if __name__ == "__main__":
  main()
