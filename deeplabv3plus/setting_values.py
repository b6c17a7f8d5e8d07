"""A setting's value checked on its own (a crop size, a scale range, a batch per process) and the crop fitted to
the frames: the rules :mod:`deeplabv3plus.config` applies while it resolves and fits a run's configuration."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from segdata.flags import FlagError

__all__ = ["check_batch_size", "crop_for_frames", "crop_size", "scale_range"]

log = logging.getLogger(__name__)


def crop_size(values: Sequence[int], flag: str = "--crop-size") -> tuple[int, int]:
    """``[S]`` (square) or ``[H, W]`` -> (H, W); FlagError for any other count."""
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise FlagError(f"argument {flag}: give one size (square) or two (height width), got {len(values)} values")


def scale_range(values: Sequence[float], flag: str = "--scale-range") -> tuple[float, float]:
    """(MIN, MAX) with 0 < MIN <= MAX; FlagError otherwise (a reversed range is not taken silently)."""
    low, high = values
    if not 0 < low <= high:
        raise FlagError(f"argument {flag}: needs 0 < MIN <= MAX, got {low} {high}")
    return low, high


def check_batch_size(batch_size: int, world_size: int) -> None:
    """FlagError unless the batch splits evenly over the processes, at least 2 images each (batch norm)."""
    if batch_size % world_size:
        raise FlagError(f"argument --batch-size: {batch_size} must divide evenly over {world_size} processes")
    if batch_size // world_size < 2:
        raise FlagError("argument --batch-size: each process needs at least 2 images per batch (batch norm); raise it")


def crop_for_frames(crop: Sequence[int], sizes: Sequence[tuple[int, int]], scale_range: Sequence[float],
                    given: bool) -> tuple[int, int]:
    """The training crop (H, W) for frames of ``sizes``: ``crop`` when some frame, at the largest random scale,
    covers it; otherwise every crop would be mostly padding, and a crop that was ``given`` is refused (FlagError) while
    the default one is fitted to the largest frame with a printed line."""
    height, width = max(size[0] for size in sizes), max(size[1] for size in sizes)
    reach = (int(height * max(scale_range)), int(width * max(scale_range)))
    if crop[0] <= reach[0] and crop[1] <= reach[1]:
        return crop[0], crop[1]
    if given:
        raise FlagError(f"argument --crop-size: {crop[0]}x{crop[1]} is larger than every train frame even at the "
                        f"largest random scale (frames at most {height}x{width}, x{max(scale_range):g}); give a crop "
                        f"of at most {min(crop[0], height)}x{min(crop[1], width)}")
    fitted = (min(crop[0], height), min(crop[1], width))
    log.warning("warning: the recipe's %dx%d crop is larger than every train frame (at most %dx%d): training on "
                "%dx%d crops; --crop-size chooses another", crop[0], crop[1], height, width, *fitted)
    return fitted
