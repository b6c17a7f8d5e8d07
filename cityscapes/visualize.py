"""Pictures of the Cityscapes format: masks in the official palette, the agreement of generated and provided masks.
The generic pictures (overlays, side-by-side frames, GIFs, saving figures) are in ``segdata.pictures``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cityscapes.labels import TRAIN_ID_TO_COLOR
from segdata.pictures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cityscapes.compare_gt import MaskComparison

__all__ = ["colorize_train_ids", "plot_mask_agreement"]


def colorize_train_ids(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds -> (H, W, 3) uint8 RGB in the official palette (255 -> black)."""
    return TRAIN_ID_TO_COLOR[train_ids]




def plot_mask_agreement(comparison: MaskComparison) -> Figure:
    """Generated vs provided masks: per-class IoU bars and per-image agreement."""
    rows = comparison.per_class()
    figure = new_figure(13, 4.5)
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
