"""Prediction files for the Cityscapes evaluation server: labelIds PNGs and the zip to upload.

The server matches each PNG to its image by the ``{city}_{seq}_{frame}`` part of
its name and reads labelIds (not trainIds) at full resolution.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cityscapes.files import read_png, write_bytes_atomic, write_png
from cityscapes.labels import NUM_CLASSES, TRAIN_ID_TO_COLOR, TRAIN_ID_TO_LABEL_ID
from cityscapes.visualize import overlay

__all__ = ["PredictionWriter", "make_submission_zip", "prediction_path", "train_ids_to_label_ids"]

def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds 0..18 -> uint8 labelIds; a trainId outside 0..18 is an error."""
    train_ids = np.asarray(train_ids)
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= NUM_CLASSES):
        raise ValueError(f"predictions must be trainIds 0..{NUM_CLASSES - 1}, got values up to {train_ids.max()}")
    return TRAIN_ID_TO_LABEL_ID[train_ids.astype(np.uint8)]

def prediction_path(out_dir: Path, stem: str, kind: str = "labelIds") -> Path:
    """``{out_dir}/{kind}/{stem}_{kind}.png`` (kind: labelIds, color or overlay)."""
    return Path(out_dir) / kind / f"{stem}_{kind}.png"

class PredictionWriter:
    """Writes predicted trainIds as labelIds PNGs (and optionally colour and overlay PNGs) in threads.

    Call it with ``(predictions (N, H, W) trainIds tensor, meta)`` as evaluate's
    ``on_prediction``; ``close()`` waits for every file and returns the labelIds paths.
    """

    def __init__(self, out_dir: Path, save_color: bool = False, threads: int = 4) -> None:
        self.out_dir = Path(out_dir)
        self.save_color = save_color
        self.executor = ThreadPoolExecutor(threads)
        self.pending: list[Future] = []
        self.written: list[Path] = []

    def __call__(self, predictions, meta: dict) -> None:
        train_ids = predictions.to("cpu", non_blocking=False).numpy().astype(np.uint8)
        for index, stem in enumerate(meta["stem"]):
            path = prediction_path(self.out_dir, stem)
            self.written.append(path)
            self.pending.append(self.executor.submit(self._write, train_ids[index], stem, meta["image_path"][index]))

    def _write(self, train_ids: np.ndarray, stem: str, image_path: str) -> None:
        write_png(prediction_path(self.out_dir, stem), train_ids_to_label_ids(train_ids))
        if self.save_color:
            color = TRAIN_ID_TO_COLOR[train_ids]
            write_png(prediction_path(self.out_dir, stem, "color"), color)
            write_png(prediction_path(self.out_dir, stem, "overlay"), overlay(read_png(Path(image_path)), color))

    def close(self) -> list[Path]:
        """Wait for all writes (re-raising the first error); the labelIds paths, sorted."""
        try:
            for future in self.pending:
                future.result()
        finally:
            self.executor.shutdown()
        return sorted(self.written)

def make_submission_zip(prediction_files: Sequence[Path], zip_path: Path) -> Path:
    """Zip the labelIds PNGs, flat and sorted with fixed timestamps (a reproducible archive), atomically."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for path in sorted(prediction_files, key=lambda p: Path(p).name):
            archive.writestr(zipfile.ZipInfo(Path(path).name, date_time=(2020, 1, 1, 0, 0, 0)), Path(path).read_bytes())
    write_bytes_atomic(Path(zip_path), buffer.getvalue())
    return Path(zip_path)
