"""Preemption: a SIGTERM (spot VM, TPU preemption, ``kill``) asks a run to stop at the next
compiled-call boundary, where ``experiment.train_and_evaluate`` checkpoints and raises
``Preempted``; rerunning the command resumes."""

import contextlib
import signal
import threading


class Preempted(RuntimeError):
  """A SIGTERM arrived; the run was checkpointed and can be resumed by rerunning it."""


@contextlib.contextmanager
def sigterm_requests_stop():
  """Yields an Event set by SIGTERM while the block runs (the old handler back afterwards); off
  the main thread, where signals cannot be caught, the Event is never set."""
  requested = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
  try:
    yield requested
  finally:
    signal.signal(signal.SIGTERM, previous)
