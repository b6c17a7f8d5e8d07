"""Checkpoints: written atomically, loadable with ``torch.load(..., weights_only=True)``.

A checkpoint holds the rebuild arguments of the model (``model_config``), the
state dict of the unwrapped model (no ``module.`` / ``_orig_mod.`` prefixes)
and, for training checkpoints, everything needed to resume exactly: optimizer,
LR scheduler, AMP scaler, epoch, iteration, best mIoU and history.
"""

from __future__ import annotations

import hashlib
import threading
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from segdata.classes import ClassTable, indexed_palette
from segdata.files import write_atomic

__all__ = [
    "CheckpointError",
    "CheckpointWriter",
    "checkpoint_classes",
    "checkpoint_payload",
    "load_checkpoint",
    "model_config",
    "on_the_host",
    "run_name_of",
    "save_checkpoint",
    "unwrap_model",
    "weights_digest",
    "write_checkpoint",
]

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "model_config")
LEGACY_MODEL_CONFIG = {"aux_head": False, "stem": "7x7", "head": "dense"}
"""What checkpoints written before the auxiliary head and the model variants existed were: the default model (one
written before align_corners was a setting did not align them: ModelConfig's default)."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not one of ours; the message names the file."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def on_the_host(value: object) -> object:
    """``value`` (nested dicts, lists, tuples) with every tensor copied to the CPU: a snapshot that later in-place
    changes of the originals (the next optimizer step) do not reach. Device tensors are copied without waiting,
    then awaited once (one synchronisation, not one per tensor)."""
    on_device = []
    copied = _host_copies(value, on_device)
    if on_device:
        torch.cuda.synchronize()
    return copied


def _host_copies(value: object, on_device: list) -> object:
    if isinstance(value, torch.Tensor):
        if value.device.type == "cpu":
            return value.detach().clone()
        on_device.append(value.device)
        return value.detach().to("cpu", non_blocking=True)
    if isinstance(value, dict):
        return {key: _host_copies(item, on_device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_host_copies(item, on_device) for item in value)
    return value


def checkpoint_payload(model: nn.Module, **state: object) -> dict:
    """What a checkpoint holds, copied to the host: the unwrapped model's config and state dict, and ``state``."""
    plain = unwrap_model(model)
    return on_the_host({"format_version": FORMAT_VERSION, "model_config": dict(plain.config),
                        "model": plain.state_dict(), **state})


class _WriteErrors:
    """A binary stream that remembers the first OSError of a write: torch.save reports a failed write (a full disk)
    as a RuntimeError that no longer says why."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.error = stream, None

    def write(self, data: bytes) -> int:
        try:
            return self.stream.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.stream.flush()


def write_checkpoint(path: Path, payload: dict) -> Path:
    """Serialise a :func:`checkpoint_payload` straight into a temporary file and rename it (atomic): twice as fast
    as serialising in memory first, and without a second copy of the checkpoint in memory."""

    def save(stream: BinaryIO) -> None:
        watched = _WriteErrors(stream)
        try:
            torch.save(payload, watched)
        except RuntimeError:
            if watched.error is not None:
                raise watched.error from None
            raise

    write_atomic(Path(path), save)
    return Path(path)


def save_checkpoint(path: Path, model: nn.Module, **state: object) -> Path:
    """Save the unwrapped model, its ``config`` and ``state`` (plain values and state dicts) atomically.

    Every tensor is saved from the CPU, so a checkpoint trained on a GPU loads anywhere, with or without
    ``map_location``."""
    return write_checkpoint(path, checkpoint_payload(model, **state))


class CheckpointWriter:
    """Writes checkpoints in a background thread while training goes on.

    :meth:`save` copies the state to the host at once (the training changes it
    next) and returns; serialising and writing (atomically) happen in the
    background, one file after the other in the order asked: the pause at an
    epoch end is the copy, not the write. The error of a write (a full disk) is
    raised by :meth:`wait`, which the caller runs before it reports, and by the
    next :meth:`save`.
    """

    def __init__(self) -> None:
        self._last: threading.Thread | None = None
        self._errors: list[BaseException] = []

    def save(self, path: Path, model: nn.Module, **state: object) -> None:
        """Snapshot ``model`` and ``state`` now; write them to ``path`` after the writes asked before."""
        self._raise_error()
        payload = checkpoint_payload(model, **state)
        self._last = threading.Thread(target=self._write, args=(self._last, Path(path), payload),
                                      name="checkpoint-writer")
        self._last.start()

    def _write(self, previous: threading.Thread | None, path: Path, payload: dict) -> None:
        if previous is not None:
            previous.join()
        try:
            write_checkpoint(path, payload)
        except BaseException as error:  # noqa: BLE001  handed to the training thread, raised there
            self._errors.append(error)

    def wait(self, raise_error: bool = True) -> None:
        """Wait for every write asked for; raise the first error (unless ``raise_error`` is False: a run already
        stopping for another reason reports that one)."""
        if self._last is not None:
            self._last.join()
            self._last = None
        if raise_error:
            self._raise_error()
        self._errors.clear()

    def _raise_error(self) -> None:
        if self._errors:
            error = self._errors[0]
            self._errors.clear()
            raise error


def verify_integrity(path: Path) -> None:
    """CheckpointError unless ``path`` is a PyTorch zip file whose every member matches its CRC-32.

    torch.save writes a zip that records a CRC-32 per member; torch.load does not
    check them, so a file with flipped bytes would load and score lower in silence.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise CheckpointError(f"{path}: not a checkpoint (not a PyTorch file, or truncated); pass the .pth written by "
                              "train_dlv3p.py or deeplabv3plus.convert") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: damaged ({damaged} fails its CRC-32 check); use another copy (best.pth / "
                              "last.pth of the run) or train again")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` after checking its integrity; CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass the .pth written by train_dlv3p.py "
                              "(saved/{run}/best.pth or last.pth)")
    verify_integrity(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001  torch raises many types for foreign files
        raise CheckpointError(f"{path}: not a checkpoint of this project ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a DeepLabV3+ checkpoint of this project (no {' / '.join(REQUIRED_KEYS)})")
    return checkpoint


def run_name_of(checkpoint: Path) -> str:
    """The run a checkpoint belongs to: its folder's name (outputs of the checkpoint are named after it)."""
    return Path(checkpoint).resolve().parent.name


def model_config(checkpoint: dict) -> dict:
    """The rebuild arguments of a checkpoint's model, with what older checkpoints lack filled in (once, here)."""
    return {**LEGACY_MODEL_CONFIG, **checkpoint["model_config"]}


def checkpoint_classes(checkpoint: dict) -> ClassTable:
    """The class table a checkpoint was trained with; Cityscapes' for 19-class checkpoints written before tables
    travelled in checkpoints (and for converted Cityscapes weights)."""
    if "classes" in checkpoint:
        return ClassTable.from_dict(checkpoint["classes"], source="the checkpoint's class table")
    from cityscapes.labels import CITYSCAPES_CLASSES

    count = model_config(checkpoint)["num_classes"]
    if count == CITYSCAPES_CLASSES.num_classes:
        return CITYSCAPES_CLASSES
    return ClassTable("unnamed", tuple(f"class {index}" for index in range(count)), indexed_palette(count),
                      tuple((index,) for index in range(count)))


def weights_digest(state_dict: dict[str, torch.Tensor], length: int = 12) -> str:
    """A short SHA-256 of the weights (names, shapes, dtypes and values, in name order): equal digests, equal models."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(state_dict[name].shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:length]
