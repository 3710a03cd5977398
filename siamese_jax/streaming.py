"""Training sets larger than the device: the budget that decides, and the same batches drawn on the
host and streamed to the device.

While the training images fit ``data.device_budget_mb`` they are put on every device and each
compiled call draws its batches there (``train.make_train_epoch``). The budget's default (None)
is half of what the first device may allocate (``memory_stats()["bytes_limit"]`` on GPU and TPU)
or, where a device reports no limit (CPU), a quarter of the host's RAM, since the device copy
then sits in host memory beside the NumPy one. Only the training part is weighed: the validation
and test parts stay on the device for the evaluation pairs.

Above the budget the images stay in host memory (``HostData``, decoded once by
``siamese_jax.data``) and ``host_batches`` draws a call's batches there: the *indices* come from
the same samplers with the same keys (``batches.draw_indices`` at ``train.step_keys``), run on the
host's CPU device (threefry gives the same bits on every backend), and the images are gathered
with NumPy. ``train.make_train_call_streamed`` then augments and trains on them as
``make_train_epoch`` would, so the two paths train on identical batches. ``StreamedTrainCall``
draws and places the next calls' batches in a background thread while the device trains.
"""

import collections
import concurrent.futures
import functools
import logging
import os
import weakref
from typing import Callable, Iterable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from siamese_jax import batches, samplers, sharding, train

PREFETCH_CALLS = 2  # calls of batches drawn ahead: one being placed while one waits


def host_memory_bytes() -> int:
  """Physical memory of this host, in bytes."""
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_budget_bytes(budget_mb: float | None = None, device=None) -> int:
  """``budget_mb`` MiB in bytes, or the default (None): half the device's ``bytes_limit``, else a
  quarter of the host's RAM (CPU devices report no limit)."""
  if budget_mb is not None:
    return int(budget_mb * 2 ** 20)
  limit = device_memory_limit(device)
  return limit // 2 if limit else host_memory_bytes() // 4


def device_memory_limit(device=None) -> int | None:
  """The ``bytes_limit`` of ``device`` (None: the first device); None where it reports none
  (CPU devices)."""
  device = jax.devices()[0] if device is None else device
  try:
    stats = device.memory_stats() or {}
  except (NotImplementedError, RuntimeError):
    stats = {}
  return int(stats["bytes_limit"]) if stats.get("bytes_limit") else None


class HostData(NamedTuple):
  """A labelled image set kept in host memory: images [N, H, W, C] uint8 and labels [N] int32
  (NumPy), and its class index on the host's CPU device (for the samplers)."""
  images: np.ndarray
  labels: np.ndarray
  index: samplers.ClassIndex


def host_device():
  """The CPU device that draws the streamed batches' indices."""
  return jax.devices("cpu")[0]


def host_data(images: np.ndarray, labels: np.ndarray, num_classes: int) -> HostData:
  """``images`` and ``labels`` as HostData (no copy of the images)."""
  with jax.default_device(host_device()):
    index = samplers.build_class_index(labels, num_classes)
  return HostData(images, np.asarray(labels, np.int32), jax.device_put(index, host_device()))


@functools.partial(jax.jit, static_argnames=("num_examples", "spec", "steps"))
def _draw_call(key, index, num_examples: int, spec: batches.BatchSpec, steps: int) -> dict:
  """``batches.draw_indices`` of steps 0..steps-1 of a call with ``key``, stacked: [steps, B]."""
  def one(step_index):
    batch_key, _ = train.step_keys(key, step_index)
    return batches.draw_indices(batch_key, index, num_examples, spec)
  return jax.vmap(one)(jnp.arange(steps))


def _take_rows(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
  return np.take(images, idx, axis=0)


def host_batches(key, data: HostData, spec: batches.BatchSpec, steps: int) -> dict:
  """The un-augmented batches of the ``steps`` steps of a call with ``key``, as NumPy arrays:
  pairs {x_a, x_b [steps, B, H, W, C] uint8, same, mask [steps, B]}, or {x, label, mask}.
  They are the batches ``train.make_train_epoch`` would draw with that key, before augmentation."""
  key = jax.device_put(key, host_device())
  drawn = jax.device_get(_draw_call(key, data.index, len(data.labels), spec, steps))
  return batches.gather_batch(data.images, data.labels, drawn, take=_take_rows)


def call_keys(train_key, calls_per_epoch: int, epochs: int, start_epoch: int = 0,
              start_call: int = 0) -> Iterator:
  """The keys of the run's calls in order from (start_epoch, start_call), as
  ``experiment.train_and_evaluate`` makes them: ``fold_in(fold_in(train_key, epoch), call)``
  (computed on the host's CPU device)."""
  train_key = jax.device_put(train_key, host_device())
  for epoch in range(start_epoch, epochs):
    epoch_key = jax.random.fold_in(train_key, epoch)
    for call in range(start_call if epoch == start_epoch else 0, calls_per_epoch):
      yield jax.random.fold_in(epoch_key, call)


def _key_bits(key) -> np.ndarray:
  return np.asarray(jax.device_get(jax.random.key_data(key)))


class StreamedTrainCall:
  """``call(state, data: HostData, key) -> (state, metrics [steps])``: what
  ``train.make_train_epoch``'s call does, for data kept on the host.

  The call's batches are drawn by ``host_batches``, placed on the mesh split along the batch axis
  and trained on by ``train.make_train_call_streamed``. ``expected_keys`` are the keys the calls
  will be made with, in order (``call_keys``): a background thread draws and places the batches
  of the next ``depth`` of them while the device trains. A call made with another key is drawn on
  the spot (the same batches, only not overlapped) and ends the prefetch.
  """

  def __init__(self, loss_spec: train.LossSpec, batch_spec: batches.BatchSpec, steps: int, mesh,
               unroll: bool = False, expected_keys: Iterable = (), depth: int = PREFETCH_CALLS):
    self._train = train.make_train_call_streamed(loss_spec, batch_spec, steps, mesh, unroll)
    self._spec, self._steps, self._mesh, self._depth = batch_spec, steps, mesh, depth
    self._expected = iter(expected_keys)
    self._pending = collections.deque()  # (key bits, future of placed batches)
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="siamese_jax_stream")
    weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)

  def placed_batches(self, data: HostData, key) -> dict:
    """The call's batches for ``key``, drawn on the host and placed on the mesh."""
    drawn = host_batches(key, data, self._spec, self._steps)
    return sharding.put_step_batches(drawn, self._mesh)

  def __call__(self, state, data: HostData, key):
    self._prefetch(data)
    placed = self._take(data, key)
    self._prefetch(data)
    return self._train(state, placed, key)

  def _prefetch(self, data: HostData) -> None:
    while len(self._pending) < self._depth:
      key = next(self._expected, None)
      if key is None:
        return
      self._pending.append((_key_bits(key), self._pool.submit(self.placed_batches, data, key)))

  def _take(self, data: HostData, key) -> dict:
    if self._pending and np.array_equal(self._pending[0][0], _key_bits(key)):
      return self._pending.popleft()[1].result()
    if self._pending:
      logging.warning("siamese_jax.streaming: a call's key is not the expected one; drawing its "
                      "batches on the spot from now on (the same batches, not overlapped)")
    self.close()
    return self.placed_batches(data, key)

  def close(self) -> None:
    """Stops the prefetch (batches drawn ahead are dropped)."""
    for _, future in self._pending:
      future.cancel()
    self._pending.clear()
    self._expected = iter(())


class TrainInput(NamedTuple):
  """What the run loop trains from: ``data`` (DeviceData or HostData) is passed to ``run_call(state,
  data, key)``; ``description`` is one line saying which path was chosen and why."""
  data: object
  run_call: Callable
  description: str


def make_train_input(train_set, loss_spec: train.LossSpec, batch_spec: batches.BatchSpec,
                     schedule, mesh, unroll: bool, train_key, start: tuple[int, int] = (0, 0),
                     budget_mb: float | None = None) -> TrainInput:
  """The training part (a data.LabelledImages) on every device with ``train.make_train_epoch``
  while its images fit ``budget_mb`` (``device_budget_bytes``), else HostData with a
  StreamedTrainCall that prefetches the run's calls from (epoch, call) ``start``.

  ``schedule``: the run's ``steps_per_call``, ``calls_per_epoch`` and ``epochs``.
  """
  budget = device_budget_bytes(budget_mb)
  size = train_set.images.nbytes
  words = (f"training images {size / 2 ** 20:.1f} MiB, device budget {budget / 2 ** 20:.1f} MiB "
           f"(data.device_budget_mb={budget_mb})")
  if size <= budget:
    data = sharding.device_data(train_set.images, train_set.labels, train_set.num_classes, mesh)
    run_call = train.make_train_epoch(loss_spec, batch_spec, schedule.steps_per_call, mesh, unroll)
    return TrainInput(data, run_call, f"{words}: held on every device")
  keys = call_keys(train_key, schedule.calls_per_epoch, schedule.epochs, *start)
  run_call = StreamedTrainCall(loss_spec, batch_spec, schedule.steps_per_call, mesh, unroll, keys)
  data = host_data(train_set.images, train_set.labels, train_set.num_classes)
  return TrainInput(data, run_call, f"{words}: streamed from host memory, {PREFETCH_CALLS} calls "
                    "of batches drawn ahead")
