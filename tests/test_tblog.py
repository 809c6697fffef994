"""TensorBoard event files read back with a plain TFRecord reader and tensorboardX's protobufs."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from bntrain.nn.layers import BatchNormLayer, InputLayer
from bntrain.tblog import TensorBoardLog

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def read_events(folder):
    """Every Event in the event files of ``folder`` (TFRecord: length, crc, data, crc)."""
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            record = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event()
            event.ParseFromString(record)
            events.append(event)
    return events


def test_scalars_and_bn_histograms_round_trip(tmp_path):
    bn = BatchNormLayer(InputLayer((None, 3)), name="dense1_bn")
    bn.gamma.set_value(np.array([1.0, 2.0, 3.0], np.float32))
    bn.inv_std.set_value(np.array([0.5, 1.0, 4.0], np.float32))
    log = TensorBoardLog(tmp_path)
    log.epoch({"train_loss": 1.5, "val_loss": float("nan"), "lr": 0.1, "train_acc": 0.5}, step=10)
    log.epoch({"train_loss": 0.5, "val_loss": 0.7, "lr": 0.05}, step=20)
    log.bn_histograms([bn], step=20)
    log.close()
    events = read_events(tmp_path / "tb")
    scalars = {}
    histos = {}
    for e in events:
        for v in e.summary.value:
            if v.HasField("histo"):
                histos[v.tag] = (e.step, v.histo)
            else:
                scalars.setdefault(v.tag, []).append((e.step, round(v.simple_value, 6)))
    assert scalars["loss/train"] == [(10, 1.5), (20, 0.5)]
    assert scalars["loss/val"] == [(20, 0.7)]  # NaN (no validation yet) is not written
    assert scalars["lr"] == [(10, 0.1), (20, 0.05)]
    assert scalars["accuracy/train"] == [(10, 0.5)]
    assert set(histos) == {
        "bn/dense1_bn/gamma",
        "bn/dense1_bn/beta",
        "bn/dense1_bn/mean",
        "bn/dense1_bn/std",
    }
    step, gamma = histos["bn/dense1_bn/gamma"]
    assert step == 20 and (gamma.min, gamma.max, gamma.num, gamma.sum) == (1.0, 3.0, 3, 6.0)
    _, std = histos["bn/dense1_bn/std"]
    assert (std.min, std.max, std.sum) == (0.25, 2.0, 3.25)
