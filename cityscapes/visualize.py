"""Pictures of the Cityscapes format: colourised masks, overlays, GIFs, side-by-side frames, mask agreement.

Figures are built with matplotlib's object API (``Figure``), so nothing here
depends on a display or a pyplot backend.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from cityscapes.files import write_bytes_atomic
from cityscapes.labels import TRAIN_ID_TO_COLOR

if TYPE_CHECKING:
    from cityscapes.compare_gt import MaskComparison

__all__ = ["colorize_train_ids", "overlay", "plot_mask_agreement", "save_figure"]


def colorize_train_ids(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds -> (H, W, 3) uint8 RGB in the official palette (255 -> black)."""
    return TRAIN_ID_TO_COLOR[train_ids]


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend an (H, W, 3) uint8 image with a colour mask of the same size."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * color_mask.astype(np.float32)
    return blended.round().astype(np.uint8)


def save_figure(figure: Figure, path: Path, dpi: int = 120) -> Path:
    """Save a figure as PNG, atomically; returns the path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)


def plot_mask_agreement(comparison: MaskComparison) -> Figure:
    """Generated vs provided masks: per-class IoU bars and per-image agreement."""
    rows = comparison.per_class()
    figure = Figure(figsize=(13, 4.5), layout="constrained")
    classes, images = figure.subplots(1, 2, width_ratios=[3, 1])
    names = [row["name"] for row in rows]
    classes.bar(range(len(rows)), [100 * row["iou"] for row in rows], color="tab:blue")
    classes.set_xticks(range(len(rows)), names, rotation=70, ha="right", fontsize=8)
    classes.set_ylim(min(90.0, min(100 * row["iou"] for row in rows) - 1), 100.2)
    classes.set_ylabel("IoU of generated vs provided (%)")
    classes.set_title(f"Per-class agreement ({comparison.split}, overall pixel agreement "
                      f"{100 * comparison.pixel_agreement:.2f}%)")
    agreement = sorted(100 * row["agreement"] for row in comparison.per_image)
    images.plot(range(1, len(agreement) + 1), agreement, marker="o")
    images.set_xlabel("image (sorted)")
    images.set_ylabel("pixel agreement (%)")
    images.set_title("Per-image agreement")
    return figure


def side_by_side(image: np.ndarray, prediction: np.ndarray, ground_truth: np.ndarray | None,
                 titles: tuple[str, ...] = ("image", "prediction", "ground truth")) -> np.ndarray:
    """One GIF frame: (H, W, 3) image | colourised prediction | colourised ground truth, with a title bar."""
    import cv2

    panels = [image, colorize_train_ids(prediction)]
    if ground_truth is not None:
        panels.append(colorize_train_ids(ground_truth))
    bar_height = max(16, image.shape[0] // 12)
    framed = []
    for panel, title in zip(panels, titles):
        bar = np.full((bar_height, panel.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, title, (6, int(bar_height * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, bar_height / 32, (0, 0, 0), 1,
                    cv2.LINE_AA)
        framed.append(np.vstack([bar, panel]))
    return np.hstack(framed)


def save_gif(frames: list[np.ndarray], path: Path, frame_ms: int = 800) -> Path:
    """Write (H, W, 3) uint8 frames as a looping GIF, atomically."""
    from PIL import Image

    if not frames:
        raise ValueError(f"{path}: no frames to write")
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)
