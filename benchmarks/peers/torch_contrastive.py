"""The 3-epoch Fashion-MNIST contrastive job as a plain PyTorch loop: the peer of
``python main.py --config experiments/contrastive.py --config.data.name=fashion_mnist
--config.train.epochs=3`` in benchmarks/peers/compare_fashion_mnist.py (which runs this file in its
own virtualenv with CPU torch; torch is not a project dependency).

Keras' mnist_siamese example, written as a careful PyTorch user would: the MLP tower (Dense 128,
ReLU, dropout 0.1, Dense 128, ReLU, dropout 0.1, Dense 128), Euclidean distance, contrastive loss
with margin 1, RMSprop (lr 1e-3, rho 0.9, eps 1e-7: Keras' defaults), batch 128, and fixed pairs:
drawn once (half same-class, half different-class) from the training split less 10 % held out for
validation, as many pairs per epoch as siamese_jax trains (training images // 128 batches of 128),
reshuffled every epoch. Images stay uint8 in memory and are scaled per batch. After each epoch:
validation pair accuracy (distance < 0.5) and ROC AUC over 2,000 fixed validation pairs, and a
``torch.save`` of the model and optimiser; at the end the same on 2,000 test pairs.

    benchmarks/peers/.venv/bin/python benchmarks/peers/torch_contrastive.py --data /usr/share/datasets/fashion-mnist
    benchmarks/peers/.venv/bin/python benchmarks/peers/torch_contrastive.py --smoke   # seconds

``--smoke``: one epoch of 4 steps on siamese_jax's embedded MNIST sample (its first 8,000 images
as the training split, the last 2,000 as the test split) and 200 evaluation pairs: that it runs.
"""

import argparse
import gzip
import pathlib
import time

import numpy as np
import torch
from torch import nn

SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "siamese_jax" / "sample_data"
SAMPLE_TRAIN_SIZE = 8000  # as siamese_jax.data.files splits the sample


def read_idx(path: pathlib.Path) -> np.ndarray:
  raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
  ndim = raw[3]
  shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(folder: pathlib.Path, prefix: str):
  images = read_idx(next(folder.glob(f"{prefix}-images-idx3-ubyte*")))
  labels = read_idx(next(folder.glob(f"{prefix}-labels-idx1-ubyte*")))
  return torch.from_numpy(images.reshape(len(images), -1).copy()), torch.from_numpy(labels.astype(np.int64))


def balanced_pairs(labels: torch.Tensor, count: int, generator: torch.Generator):
  """count index pairs (a, b) and same [count]: even positions same class, odd different."""
  num_classes = int(labels.max()) + 1
  by_class = torch.argsort(labels, stable=True)  # indices grouped by class
  sizes = torch.bincount(labels, minlength=num_classes)
  starts = torch.cumsum(sizes, 0) - sizes
  a = torch.randint(len(labels), (count,), generator=generator)
  same = torch.arange(count) % 2 == 0
  shift = torch.randint(1, num_classes, (count,), generator=generator)
  cls_b = torch.where(same, labels[a], (labels[a] + shift) % num_classes)
  offset = (torch.rand(count, generator=generator) * sizes[cls_b]).long()
  return a, by_class[starts[cls_b] + offset], same.float()


class Tower(nn.Module):
  def __init__(self):
    super().__init__()
    self.layers = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.1),
                                nn.Linear(128, 128), nn.ReLU(), nn.Dropout(0.1),
                                nn.Linear(128, 128))

  def forward(self, x):
    return self.layers(x)


def distance(u, v):
  return torch.sqrt(torch.clamp(torch.sum((u - v) ** 2, dim=1), min=1e-12))


def contrastive_loss(d, same, margin=1.0):
  return torch.mean(same * d ** 2 + (1 - same) * torch.clamp(margin - d, min=0) ** 2)


def to_float(images):
  return images.float() / 255.0


@torch.no_grad()
def evaluate(model, images, a, b, same):
  model.eval()
  d = distance(model(to_float(images[a])), model(to_float(images[b])))
  accuracy = float(((d < 0.5).float() == same).float().mean())
  # ROC AUC by ranks (Mann-Whitney U): similarity = -distance.
  order = torch.argsort(-d)
  ranks = torch.empty_like(d)
  ranks[order] = torch.arange(1, len(d) + 1, dtype=d.dtype)
  positives = same.bool()
  n_pos, n_neg = int(positives.sum()), int((~positives).sum())
  auc = float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
  model.train()
  return accuracy, auc


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--workdir", default="/tmp/torch_contrastive")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=None,
                      help="torch.set_num_threads (default: torch's, one per core)")
  parser.add_argument("--smoke", action="store_true",
                      help="1 epoch of 4 steps on the embedded MNIST sample: that it runs")
  args = parser.parse_args()
  if args.smoke:
    args.epochs = 1
  started = time.time()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  generator = torch.Generator().manual_seed(args.seed)
  if args.smoke:
    images, labels = load(SAMPLE, "t10k")
    train_images, train_labels = images[:SAMPLE_TRAIN_SIZE], labels[:SAMPLE_TRAIN_SIZE]
    test_images, test_labels = images[SAMPLE_TRAIN_SIZE:], labels[SAMPLE_TRAIN_SIZE:]
  else:
    folder = pathlib.Path(args.data)
    train_images, train_labels = load(folder, "train")
    test_images, test_labels = load(folder, "t10k")
  order = torch.randperm(len(train_labels), generator=generator)
  held = order[:len(order) // 10]
  kept = order[len(order) // 10:]
  val_images, val_labels = train_images[held], train_labels[held]
  train_images, train_labels = train_images[kept], train_labels[kept]
  steps = 4 if args.smoke else len(train_labels) // args.batch_size
  evaluation_pairs = 200 if args.smoke else 2000
  pairs = balanced_pairs(train_labels, steps * args.batch_size, generator)
  val_pairs = balanced_pairs(val_labels, evaluation_pairs, generator)
  test_pairs = balanced_pairs(test_labels, evaluation_pairs, generator)

  model = Tower()
  optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  train_seconds = 0.0
  for epoch in range(args.epochs):
    epoch_start = time.time()
    shuffle = torch.randperm(len(pairs[0]), generator=generator)
    total = 0.0
    for step in range(steps):
      at = shuffle[step * args.batch_size:(step + 1) * args.batch_size]
      a, b, same = pairs[0][at], pairs[1][at], pairs[2][at]
      loss = contrastive_loss(distance(model(to_float(train_images[a])),
                                       model(to_float(train_images[b]))), same)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      total += loss.item()
    seconds = time.time() - epoch_start
    train_seconds += seconds
    accuracy, auc = evaluate(model, val_images, *val_pairs)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1},
               workdir / "checkpoint.pt")
    print(f"epoch {epoch + 1}: train loss {total / steps:.4f}, validation pair accuracy "
          f"{accuracy:.4f}, ROC AUC {auc:.4f}, {steps * args.batch_size / seconds:.0f} pairs/s",
          flush=True)
  accuracy, auc = evaluate(model, test_images, *test_pairs)
  print(f"test pair accuracy {accuracy:.4f}, ROC AUC {auc:.4f}; training {train_seconds:.2f} s "
        f"({args.epochs * steps * args.batch_size / train_seconds:.0f} pairs/s), "
        f"wall {time.time() - started:.2f} s")


if __name__ == "__main__":
  main()
