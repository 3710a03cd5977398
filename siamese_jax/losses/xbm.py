"""Cross-batch memory (XBM; Wang et al. 2020) around a pair-based loss, as PML's
CrossBatchMemory: the batch's embeddings and labels are written into a ring buffer of the last
``loss.memory_size`` examples, then ``loss.memory_loss`` is computed between the batch (query
rows, with gradient) and the whole filled memory (reference rows, without gradient), skipping
each row's comparison with its own just-written copy. PML enqueues before computing the loss,
so the memory includes the current batch; so does this.

The memory is train state, not a parameter: ``Objective.init_state`` makes it, the train step
carries it in ``train.TrainState.loss_state`` and ``compute`` returns its next value. Padding rows
(mask 0) are written but marked empty. The memory is not checkpointed: a resumed run refills it
in ``memory_size / batch`` steps.
"""

import jax
import jax.numpy as jnp

from siamese_jax.losses import (base, circle, contrastive_batch, lifted_structure, margin,
                                multi_similarity, ntxent, objective, pairwise, supcon)

# loss.memory_loss -> the pair loss computed against the memory (PML's supported list, those
# we have; npairs takes no reference set, in PML too).
PAIR_LOSSES: dict[str, pairwise.PairLoss] = {
    "contrastive_batch": contrastive_batch.PAIR_LOSS,
    "multi_similarity": multi_similarity.PAIR_LOSS,
    "circle": circle.PAIR_LOSS,
    "lifted_structure": lifted_structure.PAIR_LOSS,
    "margin": margin.PAIR_LOSS,
    "supcon": supcon.PAIR_LOSS,
    "ntxent": ntxent.PAIR_LOSS,
}
_RECORDS = (contrastive_batch, multi_similarity, circle, lifted_structure, margin, supcon, ntxent)


def init_memory(spec, dims: objective.ParamDims) -> dict:
  """The empty memory: embeddings [M, D] float32, labels [M] int32, filled [M] bool and the next
  slot to write [] int32 (M = ``loss.memory_size``, D the embedding size)."""
  size = int(spec["memory_size"])
  return {"embeddings": jnp.zeros((size, dims.embedding_dim), jnp.float32),
          "labels": jnp.zeros((size,), jnp.int32), "filled": jnp.zeros((size,), bool),
          "next": jnp.zeros((), jnp.int32)}


def enqueue(memory: dict, embeddings: jax.Array, labels: jax.Array, real: jax.Array):
  """(memory with the batch written at its next B slots, those slots [B] int). The embeddings
  enter without gradient. B must be at most the memory size."""
  size = memory["labels"].shape[0]
  slots = (memory["next"] + jnp.arange(labels.shape[0])) % size
  written = {
      "embeddings": memory["embeddings"].at[slots].set(
          jax.lax.stop_gradient(embeddings).astype(memory["embeddings"].dtype)),
      "labels": memory["labels"].at[slots].set(labels.astype(jnp.int32)),
      "filled": memory["filled"].at[slots].set(real),
      "next": (memory["next"] + labels.shape[0]) % size,
  }
  return written, slots


def memory_pairs(read, embeddings: jax.Array, labels: jax.Array, real: jax.Array, memory: dict,
                 slots: jax.Array) -> pairwise.Pairs:
  """The batch [B, D] against the (already written) memory: positives and negatives [B, M] over
  filled slots, without row i's own slot ``slots[i]``."""
  same = labels[:, None] == memory["labels"][None, :]
  usable = real[:, None] & memory["filled"][None, :]
  own = slots[:, None] == jnp.arange(memory["labels"].shape[0])[None, :]
  return pairwise.Pairs(pairwise.compare(read, embeddings, memory["embeddings"]),
                        same & usable & ~own, ~same & usable, real, read("distance"),
                        embeddings.shape[-1], False)


def loss_against_memory(pair_loss: pairwise.PairLoss, loss_params, embeddings, labels, real,
                        memory: dict, read, key):
  """(loss, metrics, next memory) of one batch: PML's CrossBatchMemory.forward."""
  if labels.shape[0] > memory["labels"].shape[0]:
    raise ValueError(f"loss.memory_size={memory['labels'].shape[0]} must be at least the batch "
                     f"({labels.shape[0]} examples)")
  memory, slots = enqueue(memory, embeddings, labels, real)
  pairs = memory_pairs(read, embeddings, labels, real, memory, slots)
  loss, metrics = pairwise.loss_of_pairs(pair_loss, loss_params, pairs, read, key)
  return loss, metrics, memory


def compute(params, apply_fn, batch: dict, key, spec, train: bool = True, state=None):
  """(loss, metrics, next memory) of a P x K batch; ``state`` None: the batch alone (no memory
  yet, e.g. outside training), memory returned as None."""
  pair_loss = PAIR_LOSSES[spec["memory_loss"]]
  read = pairwise.reader(spec, pair_loss.defaults)
  embeddings = base.embeddings(params, apply_fn, batch, key, train)
  loss_params = params.get(objective.LOSS_PARAMS, {})
  if state is None:
    pairs = pairwise.batch_pairs(read, embeddings, batch["label"], batch.get("mask"))
    loss, metrics = pairwise.loss_of_pairs(pair_loss, loss_params, pairs, read, key)
    return loss, metrics, None
  mask = batch.get("mask")
  real = jnp.ones(batch["label"].shape, bool) if mask is None else mask.astype(bool)
  return loss_against_memory(pair_loss, loss_params, embeddings, batch["label"], real, state,
                             read, key)


def _union(groups) -> tuple[str, ...]:
  return tuple(dict.fromkeys(key for group in groups for key in group))


OBJECTIVE = objective.Objective(
    name="xbm", batch_kind="pk", heads=("distance",),
    reads=("memory_loss", "memory_size") + _union(
        record.OBJECTIVE.reads for record in _RECORDS),
    compute=compute, params=margin.OBJECTIVE.params, init_state=init_memory,
    checks=(objective.one_of("loss.memory_loss", PAIR_LOSSES),
            objective.at_least("loss.memory_size", 1, "(examples kept in the memory)"))
    + tuple(dict.fromkeys(check for record in _RECORDS for check in record.OBJECTIVE.checks
                          if check.path != "loss.distance" or record is not circle)))
