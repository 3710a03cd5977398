"""siamese_jax.summary_writer: TensorBoard reads back what it writes (tags, steps, float32
values), and the progress scalars follow clu's ReportProgress."""

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import types_pb2
from tensorboard.util import tensor_util

from siamese_jax import summary_writer


def _read(logdir):
  """{tag: [(step, value)]} as TensorBoard loads them (scalars as float32 tensor summaries of the
  scalars plugin, as tf.summary.scalar writes them)."""
  reader = event_accumulator.EventAccumulator(str(logdir))
  reader.Reload()
  found = {}
  for tag in reader.Tags()["tensors"]:
    assert reader.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    events = reader.Tensors(tag)
    assert all(e.tensor_proto.dtype == types_pb2.DT_FLOAT for e in events)
    found[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events]
  return found


def test_scalars_read_back_by_tensorboard(tmp_path):
  writer = summary_writer.SummaryWriter(tmp_path)
  writer.write_scalars(56, {"train_loss": 0.25, "val_roc_auc": np.float64(0.9)})
  writer.write_scalars(112, {"train_loss": 0.125, "val_roc_auc": 0.95})
  writer.flush()
  writer.close()
  writer.close()  # twice is fine
  files = list(tmp_path.glob("events.out.tfevents.*.v2"))
  assert len(files) == 1
  got = _read(tmp_path)
  assert got["train_loss"] == [(56, 0.25), (112, 0.125)]
  assert [s for s, _ in got["val_roc_auc"]] == [56, 112]
  np.testing.assert_allclose([v for _, v in got["val_roc_auc"]], np.float32([0.9, 0.95]))


def test_no_logdir_writes_nothing(tmp_path):
  writer = summary_writer.SummaryWriter(None)
  writer.write_scalars(1, {"a": 1.0})
  writer.flush()
  writer.close()
  assert not list(tmp_path.iterdir())


def test_report_progress_writes_from_the_second_report(tmp_path):
  writer = summary_writer.SummaryWriter(tmp_path)
  report = summary_writer.ReportProgress(writer)
  report(56)
  report(112)
  report(168)
  writer.close()
  got = _read(tmp_path)
  assert [s for s, _ in got["steps_per_sec"]] == [112, 168]
  assert all(v > 0 for _, v in got["steps_per_sec"])
  assert [s for s, _ in got["uptime"]] == [112, 168]
