"""Run as a script: trains a few steps on synthetic data and saves the params to an .npz file.

``python tests/multidevice_worker.py OUT.npz MODE`` with MODE "step" (one jit step) or "epoch"
(a fused 3-step epoch). The parent test sets XLA_FLAGS to choose the number of fake CPU devices
and compares the files, so the same code is checked on 1 and on 8 devices.
"""

import sys

import jax
import numpy as np

from experiments import default
from siamese_jax import batches, models, sharding, train


def main(out_path: str, mode: str) -> None:
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
  labels = np.repeat(np.arange(8), 8).astype(np.int32)
  mesh = sharding.make_mesh()
  config = default.override(default.get_config(), {"optimizer.name": "momentum",
                                                   "optimizer.learning_rate": 0.1})
  model = models.build_model(config.model)
  tx = train.make_optimizer(config.optimizer, 3)
  state = train.create_train_state(jax.random.key(0), model, (28, 28, 1), tx)
  state = sharding.put_replicated(state, mesh)
  data = sharding.device_data(images, labels, 8, mesh)
  spec = train.loss_spec_from_config(config)
  batch_spec = batches.BatchSpec(kind="pairs", batch_size=32)
  if mode == "step":
    batch = batches.sample_batch(jax.random.key(1), data, batch_spec)
    state, _ = train.make_train_step(spec, mesh)(state, batch, jax.random.key(2))
  else:
    state, _ = train.make_train_epoch(spec, batch_spec, 3, mesh)(state, data, jax.random.key(1))
  flat = {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
  np.savez(out_path, num_devices=len(jax.devices()), **flat)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
