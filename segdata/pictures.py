"""Pictures of any data set: overlays, image | prediction | ground truth frames, GIFs, saving figures.

Figures are built with matplotlib's object API (``Figure``), so nothing here
depends on a display or a pyplot backend.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segdata.files import write_bytes_atomic

if TYPE_CHECKING:  # matplotlib costs 0.6 s at import: every script imports this module, few draw a figure
    from matplotlib.figure import Figure

__all__ = ["new_figure", "overlay", "save_figure", "save_gif", "side_by_side"]


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend an (H, W, 3) uint8 image with a colour mask of the same size."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * color_mask.astype(np.float32)
    return blended.round().astype(np.uint8)


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches, constrained layout (matplotlib is imported here, on the
    first figure, not when a script starts)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(figure: Figure, path: Path, dpi: int = 120) -> Path:
    """Save a figure as PNG, atomically; returns the path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)


def side_by_side(image: np.ndarray, prediction: np.ndarray, ground_truth: np.ndarray | None, palette: np.ndarray,
                 titles: tuple[str, ...] = ("image", "prediction", "ground truth")) -> np.ndarray:
    """One GIF frame: (H, W, 3) image | prediction | ground truth (train ids coloured by ``palette``, a (256, 3)
    table: ``ClassTable.palette()``), with a title bar."""
    import cv2

    panels = [image, palette[prediction]]
    if ground_truth is not None:
        panels.append(palette[ground_truth])
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
