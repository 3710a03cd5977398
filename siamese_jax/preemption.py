"""Stopping a run cleanly: SIGTERM (spot VM, TPU preemption, ``kill``) and SIGINT (Ctrl-C)
anywhere in ``experiment.train_and_evaluate`` end it with ``Preempted`` (main.py: one line,
exit 0) and rerunning the command resumes.

Inside the training loop (``StopRequests.deferred``) the first signal only asks the loop to stop
at the next compiled-call boundary, where it checkpoints; anywhere else (data preparation, the
final evaluation), or at a second signal, it raises at once: the checkpoints already finished
are complete (orbax renames a checkpoint into place only when it is whole), so nothing is lost
but the work since the last one."""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(RuntimeError):
  """A SIGTERM or SIGINT arrived; the finished checkpoints are kept and rerunning resumes."""


class StopRequests:
  """What the handlers of ``SIGNALS`` do: ``requested`` (an Event) is set while ``deferred``,
  else ``Preempted`` is raised with ``phase`` and ``where`` in its message."""

  def __init__(self, where: str):
    self.requested = threading.Event()
    self.signal_name = "SIGTERM"
    self.phase = "data preparation"
    self.where = where
    self._deferring = False

  @contextlib.contextmanager
  def deferred(self):
    """Signals only set ``requested`` inside this block (the first one of them)."""
    self._deferring = True
    try:
      yield self.requested
    finally:
      self._deferring = False

  def handle(self, signum, unused_frame) -> None:
    name = signal.Signals(signum).name
    if self._deferring and not self.requested.is_set():
      self.signal_name = name
      self.requested.set()
      return
    self._deferring = False
    raise Preempted(f"stopped by {name} during {self.phase}; the finished checkpoints are kept "
                    f"in {self.where}; rerun the same command to resume")


@contextlib.contextmanager
def stop_requests(where: str):
  """Yields a StopRequests whose handler takes SIGTERM and SIGINT while the block runs (the old
  handlers back afterwards); off the main thread, where signals cannot be caught, it is never
  triggered. ``where``: the checkpoint folder, for the message."""
  stops = StopRequests(where)
  if threading.current_thread() is not threading.main_thread():
    yield stops
    return
  previous = {signum: signal.signal(signum, stops.handle) for signum in SIGNALS}
  try:
    yield stops
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
