"""Prediction files for the Cityscapes evaluation server: labelIds PNGs and the zip to upload.

The server matches each PNG to its image by the ``{city}_{seq}_{frame}`` part of
its name and reads labelIds (not trainIds) at full resolution.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cityscapes.labels import NUM_CLASSES, TRAIN_ID_TO_LABEL_ID
from segdata.files import write_bytes_atomic

__all__ = ["make_submission_zip", "train_ids_to_label_ids"]

def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds 0..18 -> uint8 labelIds; a trainId outside 0..18 is an error."""
    train_ids = np.asarray(train_ids)
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= NUM_CLASSES):
        raise ValueError(f"predictions must be trainIds 0..{NUM_CLASSES - 1}, got values up to {train_ids.max()}")
    return TRAIN_ID_TO_LABEL_ID[train_ids.astype(np.uint8)]

def make_submission_zip(prediction_files: Sequence[Path], zip_path: Path) -> Path:
    """Zip the labelIds PNGs, flat and sorted with fixed timestamps (a reproducible archive), atomically."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for path in sorted(prediction_files, key=lambda p: Path(p).name):
            archive.writestr(zipfile.ZipInfo(Path(path).name, date_time=(2020, 1, 1, 0, 0, 0)), Path(path).read_bytes())
    write_bytes_atomic(Path(zip_path), buffer.getvalue())
    return Path(zip_path)
