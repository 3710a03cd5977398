"""TensorBoard scalars without TensorFlow: the part of clu's ``MetricWriter`` a run uses.

clu's writers are what a flax example uses, but clu 0.0.12's ``clu.metric_writers`` package
imports its TensorFlow summary writer in its ``__init__``, so any of them (even ``LoggingWriter``,
or ``periodic_actions``, which imports the package) costs a run the TensorFlow import: 3-7 s and
about 0.8 GB of resident memory on a CPU machine, more than the rest of a default run. This
writes the same records with the ``tensorboard`` package's own pieces, which need no TensorFlow:
``summary_v2.scalar_pb`` (the Summary that ``tf.summary.scalar`` writes: a float32 scalar tensor
for the ``scalars`` plugin) in an ``Event``, framed by ``RecordWriter`` into
``events.out.tfevents.<time>.<host>.<pid>.<n>.v2`` as TensorFlow names it.
"""

import itertools
import os
import socket
import time
from typing import Mapping

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.scalar import summary_v2
from tensorboard.summary.writer.record_writer import RecordWriter

_files_made = itertools.count()


class SummaryWriter:
  """``write_scalars(step, {tag: value})``, ``flush()``, ``close()`` as clu's ``MetricWriter``;
  one event file in ``logdir``, written at once (a record is a few dozen bytes). With
  ``logdir=None`` it writes nothing (the processes other than 0 of a multi-process run)."""

  def __init__(self, logdir: str | os.PathLike | None):
    self._records = None
    if logdir is None:
      return
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
            f"{next(_files_made)}.v2")
    self.path = os.path.join(os.fspath(logdir), name)
    self._records = RecordWriter(open(self.path, "wb"))
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """One event per tag at ``step`` (values as float32, as ``tf.summary.scalar`` keeps them)."""
    if self._records is None:
      return
    for tag, value in scalars.items():
      self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                  summary=summary_v2.scalar_pb(tag, value)))

  def flush(self) -> None:
    if self._records is not None:
      self._records.flush()

  def close(self) -> None:
    if self._records is not None and not self._records.closed:
      self._records.close()


class ReportProgress:
  """``report(step)`` at the end of each epoch writes what ``clu.periodic_actions.ReportProgress``
  writes (clu's imports TensorFlow, see the module docstring): from the second report on,
  ``steps_per_sec`` since the last report and ``uptime`` (seconds since this was made)."""

  def __init__(self, writer: SummaryWriter):
    self._writer = writer
    self._t0 = time.monotonic()
    self._previous = None  # (step, time) of the last report

  def __call__(self, step: int) -> None:
    now = time.monotonic()
    if self._previous is not None and step != self._previous[0]:
      steps_per_sec = (step - self._previous[0]) / (now - self._previous[1])
      self._writer.write_scalars(step, {"steps_per_sec": steps_per_sec})
      self._writer.write_scalars(step, {"uptime": now - self._t0})
    self._previous = (step, now)
