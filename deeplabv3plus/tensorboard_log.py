"""TensorBoard event files of a training run, in ``saved/{run}/tb/``.

Written by rank 0 only, and only where the optional ``tensorboard`` package is
installed (``requirements-tensorboard.txt``). Tags:

- ``train/loss``, ``train/loss_main``, ``train/loss_aux``, ``train/lr``,
  ``train/data_time``, ``train/compute_time`` (seconds per iteration since the
  previous point), ``train/peak_memory_mib``: every ``--log-every`` iterations,
  from the values the step reads there anyway (no extra host sync);
- ``val/loss``, ``val/miou``, ``val/mean_dice``, ``val/pixel_accuracy``,
  ``val_class_iou/{class}``: at each validation;
- ``val_images/{stem}``: image | prediction | ground truth of a few fixed val
  frames at each validation.

A resumed run opens the same folder with ``purge_step`` just past its
checkpoint's iteration: TensorBoard drops what a killed run logged after the
checkpoint (that part is trained again), so no step appears twice.

The logs are a view of a run, not its record (history.csv is): a ``tb`` that
cannot be written at the start is refused in one line, and one that fails
later (a full disk, a folder replaced) stops the logging with one warning while
the training goes on.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from segdata.files import OutputError, check_output_folder
from segdata.flags import FlagError

__all__ = ["TB_DIR", "TrainingLog", "check_tensorboard", "open_training_log", "show_validation",
           "tensorboard_available", "tensorboard_problem"]

log = logging.getLogger(__name__)

TB_DIR = "tb"
MAX_IMAGE_WIDTH = 1536
"""Wider preview frames (three 2048-pixel panels of real Cityscapes) are shrunk to this width."""


def tensorboard_problem() -> str | None:
    """Why TensorBoard logs cannot be written here, in words (None: they can): the ``tensorboard`` package is not
    installed, or it is but ``torch.utils.tensorboard`` fails to import (a broken or mismatched install)."""
    if importlib.util.find_spec("tensorboard") is None:
        return "the tensorboard package is not installed"
    try:
        importlib.import_module("torch.utils.tensorboard")
    except Exception as error:  # noqa: BLE001  any failure of an optional package's import is reported, not raised
        return f"the tensorboard package is installed but fails to import ({type(error).__name__}: {error})"
    return None


def tensorboard_available() -> bool:
    """Whether TensorBoard logs can be written here (see :func:`tensorboard_problem`)."""
    return tensorboard_problem() is None


def check_tensorboard(wanted: bool | None) -> None:
    """FlagError when --tensorboard is asked for and cannot be written (checked before any work)."""
    problem = tensorboard_problem() if wanted else None
    if problem:
        raise FlagError(f"argument --tensorboard: {problem}; pip install -r requirements-tensorboard.txt (again), "
                        "or drop the flag")


def open_training_log(run_dir: Path, wanted: bool | None, iteration: int) -> TrainingLog | None:
    """TensorBoard logs in {run}/tb, unless off (``wanted`` False) or not installed. A run resumed at ``iteration``
    appends, and what a killed run logged past that iteration is dropped (it is trained again)."""
    if wanted is False:
        return None
    problem = tensorboard_problem()
    if problem:
        log.info("TensorBoard logging is off: %s (pip install -r requirements-tensorboard.txt turns it on)", problem)
        return None
    training_log = TrainingLog(run_dir / TB_DIR, purge_step=iteration + 1 if iteration else None)
    log.info("TensorBoard logs in %s; view them with: tensorboard --logdir %s", run_dir / TB_DIR, run_dir.parent)
    return training_log


def show_validation(training_log: TrainingLog, val_set, preview_frames: int, palette: np.ndarray,
                    device: torch.device, amp_dtype: torch.dtype | None) -> Callable:
    """``show(model, history row)`` after each validation: its scores, and image | prediction | ground truth of the
    first ``preview_frames`` val frames in the class table's ``palette``."""
    from deeplabv3plus.figures import prediction_frames

    indices = range(min(preview_frames, len(val_set)))
    names = val_set.classes.names

    def show(model, row: dict) -> None:
        training_log.validation(row["iteration"], row, names)
        if indices:
            training_log.images(row["iteration"], prediction_frames(model, val_set, indices, palette, device,
                                                                    amp_dtype))
        training_log.flush()

    return show


def _file_name(error: OSError) -> str:
    name = error.filename
    return os.fsdecode(name) if name is not None else ""


class TrainingLog:
    """A SummaryWriter with the run's tags; see the module docstring."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        try:
            check_output_folder(self.log_dir, "--tensorboard")
        except OutputError as error:
            written = re.search(r"cannot write in .* \((.*)\);", str(error))
            reason = written.group(1) if written else "a file is in its place"
            raise FlagError(f"{self.log_dir}: TensorBoard logs cannot be written there ({reason}); move it away or "
                            "fix its permissions, or train with --no-tensorboard") from None
        from torch.utils.tensorboard import SummaryWriter

        self._hook = threading.excepthook
        threading.excepthook = self._quiet_writer_thread
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step or None)

    def _quiet_writer_thread(self, arguments: threading.ExceptHookArgs) -> None:
        """TensorBoard's writer thread re-raises a failed write, which Python prints as a traceback: the failure
        is reported once by :meth:`_guarded` instead; any other thread's exception is printed as before."""
        if type(arguments.thread).__name__ != "_AsyncWriterThread":
            self._hook(arguments)

    def _guarded(self, write: Callable[[], object]) -> None:
        """Run a write of the writer; a failure stops the logging with one warning (the training goes on)."""
        if self.writer is None:
            return
        try:
            write()
        except OSError as error:
            self.writer = None
            log.warning("warning: TensorBoard logging stopped: cannot write %s (%s); the training goes on and "
                        "history.csv keeps its scores", _file_name(error) or self.log_dir,
                        error.strerror or type(error).__name__)

    def training(self, iteration: int, values: dict[str, float]) -> None:
        """The ``train/*`` scalars at ``iteration``."""
        for key, value in values.items():
            if value is not None and not math.isnan(value):
                self._guarded(lambda key=key, value=value: self.writer.add_scalar(f"train/{key}", value, iteration))

    def validation(self, iteration: int, row: dict, class_names: Sequence[str]) -> None:
        """The ``val/*`` scalars and per-class IoU of a history row."""
        for key, tag in (("val_loss", "loss"), ("miou", "miou"), ("mean_dice", "mean_dice"),
                         ("pixel_accuracy", "pixel_accuracy")):
            self._guarded(lambda key=key, tag=tag: self.writer.add_scalar(f"val/{tag}", row[key], iteration))
        for name, value in zip(class_names, row["iou"]):
            if not math.isnan(value):
                self._guarded(lambda name=name, value=value: self.writer.add_scalar(f"val_class_iou/{name}", value,
                                                                                    iteration))

    def images(self, iteration: int, frames: dict[str, np.ndarray]) -> None:
        """(H, W, 3) uint8 frames, one tag per frame name, shrunk to MAX_IMAGE_WIDTH."""
        import cv2

        for name, frame in frames.items():
            if frame.shape[1] > MAX_IMAGE_WIDTH:
                height = round(frame.shape[0] * MAX_IMAGE_WIDTH / frame.shape[1])
                frame = cv2.resize(frame, (MAX_IMAGE_WIDTH, height), interpolation=cv2.INTER_AREA)
            self._guarded(lambda name=name, frame=frame: self.writer.add_image(f"val_images/{name}", frame, iteration,
                                                                               dataformats="HWC"))

    def flush(self) -> None:
        self._guarded(lambda: self.writer.flush())

    def close(self) -> None:
        """Close the files (a failure is the one warning, as for any write) and give the thread hook back."""
        if self.writer is not None:
            writer = self.writer
            self._guarded(writer.close)
            self.writer = None
        if threading.excepthook == self._quiet_writer_thread:
            threading.excepthook = self._hook
