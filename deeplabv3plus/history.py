"""The training log of a run: ``history.csv`` (one row per validation) and ``per_class_iou.json`` (per-class IoU and
the confusion matrix, ground truth x prediction pixel counts, of each validation)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from segdata.files import write_csv, write_json

__all__ = ["HISTORY_COLUMNS", "history_row", "read_history", "read_per_class_iou", "write_history"]

HISTORY_COLUMNS = ["epoch", "iteration", "lr", "train_loss", "val_loss", "miou", "mean_dice", "pixel_accuracy",
                   "mean_class_accuracy", "seconds", "data_time", "compute_time", "peak_memory_mib"]
"""``seconds``: wall time of the period (training and validation); ``data_time`` / ``compute_time``: mean seconds
per iteration waiting for the loader / computing; ``peak_memory_mib``: peak GPU memory allocated (CUDA) or the
process's peak RSS (CPU) while training."""


def history_row(period, lr: float, result, seconds: float) -> dict:
    """The row of one validation, in :data:`HISTORY_COLUMNS`' terms plus the per-class IoU and the confusion matrix:
    the training ``period``'s sums since the last validation (a ``trainer.TrainState``), the ``lr`` at its end,
    the validation ``result`` (an ``engine.EvaluationResult``) and the ``seconds`` it took."""
    scores, steps = result.scores(), max(1, period.steps)
    return {
        "epoch": period.epoch, "iteration": period.iteration, "lr": lr,
        "train_loss": period.loss_sum / max(1, period.loss_epochs), "val_loss": result.loss,
        "miou": scores["mean_iou"], "mean_dice": scores["mean_dice"], "pixel_accuracy": scores["pixel_accuracy"],
        "mean_class_accuracy": scores["mean_class_accuracy"], "seconds": period.seconds + seconds,
        "data_time": period.data_seconds / steps, "compute_time": period.compute_seconds / steps,
        "peak_memory_mib": period.peak_memory_mb, "iou": scores["iou"],
        "confusion_matrix": result.confusion.matrix.cpu().tolist(),
    }


def write_history(run_dir: Path, history: Sequence[dict], class_names: Sequence[str]) -> None:
    """Rewrite both files from the whole history (atomically, so a crash leaves the previous version)."""
    write_csv(Path(run_dir) / "history.csv", ({key: row.get(key, "") for key in HISTORY_COLUMNS} for row in history),
              HISTORY_COLUMNS)
    write_json(Path(run_dir) / "per_class_iou.json", [
        {"epoch": row["epoch"], "iteration": row["iteration"],
         "iou": {name: (None if math.isnan(value) else value) for name, value in zip(class_names, row["iou"])},
         **({"confusion_matrix": row["confusion_matrix"]} if "confusion_matrix" in row else {})}
        for row in history
    ])


def read_history(run_dir: Path) -> list[dict]:
    """The rows of ``history.csv`` with numbers parsed (ints for epoch/iteration, floats otherwise)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training history; train with train_dlv3p.py first")
    with open(path, newline="") as stream:
        return [
            {
                key: (int(value) if key in ("epoch", "iteration") else float(value or "nan"))
                for key, value in row.items()
            }
            for row in csv.DictReader(stream)
        ]


def read_per_class_iou(run_dir: Path) -> list[dict]:
    """The entries of ``per_class_iou.json`` (``None`` for classes absent from the split)."""
    path = Path(run_dir) / "per_class_iou.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-class IoU; train with train_dlv3p.py first")
    return json.loads(path.read_text())
