import errno
import os
import struct
import zipfile

import pytest
import torch
from torch import nn

from deeplabv3plus.checkpoint import CheckpointError, load_checkpoint, model_config, save_checkpoint, unwrap_model


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.config = {"backbone": "resnet50", "output_stride": 16, "num_classes": 2}

    def forward(self, images):
        return self.conv(images)


def test_round_trip_with_weights_only(tmp_path):
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 3, 2, 2)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "run" / "last.pth", model, optimizer=optimizer.state_dict(), epoch=3,
                           best_miou=0.5, history=[{"epoch": 1, "iou": [0.1, float("nan")]}], args={"lr": 0.1})
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["model_config"] == model.config and checkpoint["epoch"] == 3
    assert torch.equal(checkpoint["model"]["conv.weight"], model.conv.weight)
    assert "momentum_buffer" in checkpoint["optimizer"]["state"][0]
    assert load_checkpoint(path)["history"][0]["epoch"] == 1


def test_wrappers_leave_no_prefix(tmp_path):
    model = Tiny()
    compiled = torch.compile(model, backend="eager")
    assert unwrap_model(compiled) is model
    save_checkpoint(tmp_path / "c.pth", compiled)
    assert set(load_checkpoint(tmp_path / "c.pth")["model"]) == {"conv.weight", "conv.bias"}


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = Tiny()
    path = save_checkpoint(tmp_path / "last.pth", model, epoch=1)
    before = path.read_bytes()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("segdata.files.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [path]


class FillsUp:
    """A file on a disk that is full after ``room`` bytes."""

    def __init__(self, stream, room):
        self.stream, self.room = stream, room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


def test_a_full_disk_while_saving_is_said_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = Tiny()
    model.big = nn.Parameter(torch.zeros(1 << 20))  # 4 MiB: the disk fills up inside torch.save, not before it
    path = save_checkpoint(tmp_path / "last.pth", model, epoch=1)
    before = path.read_bytes()
    fdopen = os.fdopen
    monkeypatch.setattr("segdata.files.os.fdopen", lambda *args: FillsUp(fdopen(*args), room=1 << 20))
    with pytest.raises(OSError) as raised:  # torch.save alone would say RuntimeError "unexpected pos ..."
        save_checkpoint(path, model, epoch=2)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pth: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "broken.pth").write_bytes(b"\x80\x02 truncated")
    with pytest.raises(CheckpointError, match="broken.pth: not a checkpoint \\(not a PyTorch file, or truncated\\)"):
        load_checkpoint(tmp_path / "broken.pth")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="foreign.pth: not a DeepLabV3\\+ checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")


def test_damaged_checkpoints_are_found_by_their_checksums(tmp_path):
    """A few flipped bytes inside the weights: torch.load would take them; the CRC-32 of the zip member does not."""
    path = save_checkpoint(tmp_path / "last.pth", Tiny(), epoch=1)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if info.filename.endswith("data/0"))
    name_length, extra_length = struct.unpack("<HH", data[member.header_offset + 26:member.header_offset + 30])
    start = member.header_offset + 30 + name_length + extra_length  # the member's stored bytes (local header)
    data[start:start + 4] = bytes(255 - value for value in data[start:start + 4])
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(bytes(data))
    torch.load(damaged, weights_only=True)  # torch itself loads it silently
    with pytest.raises(CheckpointError, match="damaged.pth: damaged .*data/0 fails its CRC-32 check"):
        load_checkpoint(damaged)
    (tmp_path / "random.pth").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(CheckpointError, match="random.pth: not a checkpoint") as error:
        load_checkpoint(tmp_path / "random.pth")
    assert "weights_only" not in str(error.value)  # not torch's advice to load it unsafely


def test_model_config_fills_what_older_checkpoints_lack():
    """Checkpoints written before the auxiliary head and the model variants: the default model, filled in one place."""
    old = {"model": {}, "model_config": {"backbone": "resnet50", "output_stride": 16, "num_classes": 19}}
    assert model_config(old) == {"backbone": "resnet50", "output_stride": 16, "num_classes": 19, "aux_head": False,
                                 "stem": "7x7", "head": "dense"}
    new = {"model": {}, "model_config": {"backbone": "resnet101", "output_stride": 8, "num_classes": 5,
                                         "aux_head": True, "stem": "deep", "head": "separable"}}
    assert model_config(new) == new["model_config"]
