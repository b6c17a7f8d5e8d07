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
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["TB_DIR", "TrainingLog", "tensorboard_available", "tensorboard_problem"]

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


class TrainingLog:
    """A SummaryWriter with the run's tags; see the module docstring."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step or None)

    def training(self, iteration: int, values: dict[str, float]) -> None:
        """The ``train/*`` scalars at ``iteration``."""
        for key, value in values.items():
            if value is not None and not math.isnan(value):
                self.writer.add_scalar(f"train/{key}", value, iteration)

    def validation(self, iteration: int, row: dict, class_names: Sequence[str]) -> None:
        """The ``val/*`` scalars and per-class IoU of a history row."""
        for key, tag in (("val_loss", "loss"), ("miou", "miou"), ("mean_dice", "mean_dice"),
                         ("pixel_accuracy", "pixel_accuracy")):
            self.writer.add_scalar(f"val/{tag}", row[key], iteration)
        for name, value in zip(class_names, row["iou"]):
            if not math.isnan(value):
                self.writer.add_scalar(f"val_class_iou/{name}", value, iteration)

    def images(self, iteration: int, frames: dict[str, np.ndarray]) -> None:
        """(H, W, 3) uint8 frames, one tag per frame name, shrunk to MAX_IMAGE_WIDTH."""
        import cv2

        for name, frame in frames.items():
            if frame.shape[1] > MAX_IMAGE_WIDTH:
                height = round(frame.shape[0] * MAX_IMAGE_WIDTH / frame.shape[1])
                frame = cv2.resize(frame, (MAX_IMAGE_WIDTH, height), interpolation=cv2.INTER_AREA)
            self.writer.add_image(f"val_images/{name}", frame, iteration, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
