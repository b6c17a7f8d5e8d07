"""A split's predictions as files: PNGs of the data set's own mask values (Cityscapes: labelIds), colour and overlay
PNGs, written in threads while the model predicts the next batch."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from segdata.classes import ClassTable
from segdata.files import write_png
from segdata.masks import read_image
from segdata.pictures import overlay

__all__ = ["PredictionWriter", "prediction_path"]


def prediction_path(out_dir: Path, stem: str, kind: str = "labelIds") -> Path:
    """``{out_dir}/{kind}/{stem}_{kind}.png`` (kind: labelIds or ids, color or overlay)."""
    return Path(out_dir) / kind / f"{stem}_{kind}.png"


class PredictionWriter:
    """Writes predicted train ids as PNGs of the data set's own mask values (the first value of each class in
    ``classes``, in ``{ids_name}/`` files: labelIds for Cityscapes), and optionally colour and overlay PNGs, in
    threads.

    Call it with ``(predictions (N, H, W) train-id tensor, meta)`` as evaluate's
    ``on_prediction``; ``close()`` waits for every file and returns the id PNGs' paths.
    """

    def __init__(self, out_dir: Path, classes: ClassTable, ids_name: str = "ids", save_color: bool = False,
                 threads: int = 4) -> None:
        self.out_dir = Path(out_dir)
        self.kind, self.values, self.palette = ids_name, classes.mask_values(), classes.palette()
        self.num_classes = classes.num_classes
        self.save_color = save_color
        self.executor = ThreadPoolExecutor(threads)
        self.pending: list[Future] = []
        self.written: list[Path] = []

    def __call__(self, predictions, meta: dict) -> None:
        train_ids = predictions.to("cpu", non_blocking=False).numpy().astype(np.uint8)
        for index, stem in enumerate(meta["stem"]):
            path = prediction_path(self.out_dir, stem, self.kind)
            self.written.append(path)
            self.pending.append(self.executor.submit(self._write, train_ids[index], stem, meta["image_path"][index]))

    def _write(self, train_ids: np.ndarray, stem: str, image_path: str) -> None:
        if train_ids.size and train_ids.max() >= self.num_classes:
            raise ValueError(f"predictions must be train ids 0..{self.num_classes - 1}, got up to {train_ids.max()}")
        write_png(prediction_path(self.out_dir, stem, self.kind), self.values[train_ids])
        if self.save_color:
            color = self.palette[train_ids]
            write_png(prediction_path(self.out_dir, stem, "color"), color)
            write_png(prediction_path(self.out_dir, stem, "overlay"), overlay(read_image(Path(image_path)), color))

    def close(self) -> list[Path]:
        """Wait for all writes (re-raising the first error); the id PNGs' paths, sorted."""
        try:
            for future in self.pending:
                future.result()
        finally:
            self.executor.shutdown()
        return sorted(self.written)
