"""Class weights for rare classes, from the training masks: median-frequency balancing (Eigen and Fergus, as SegNet
trains), inverse frequency, or one weight per class from a file (mmsegmentation's ``class_weight``).

median-frequency: for class c, ``freq(c)`` = pixels of c / labelled pixels of the training images in which c
appears, and ``weight(c) = median over classes of freq / freq(c)``; inverse-frequency: ``weight(c)`` = (1 / number
of classes present) / (share of c in all labelled pixels), so that evenly spread classes weigh 1. Ignored values
count for no class. A class absent from every training mask gets weight 1 (no pixel of it is ever weighed).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from segdata.classes import IGNORE_INDEX, ClassTable
from segdata.flags import FlagError

__all__ = ["WEIGHTINGS", "ClassCounts", "class_pixels", "count_classes", "inverse_frequency", "median_frequency",
           "read_weights", "weights_for"]

log = logging.getLogger(__name__)

WEIGHTINGS = ("none", "median-frequency", "inverse-frequency")
"""The rules of --class-weights (or a file of one weight per class)."""


def class_pixels(train_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) int64 pixels of each train id in a mask (IGNORE_INDEX and ids past the table count for none)."""
    return np.bincount(train_ids.ravel(), minlength=256)[:num_classes].astype(np.int64)


@dataclass
class ClassCounts:
    """Per class: its pixels, and the labelled pixels of the frames it appears in; and the frames counted."""

    pixels: np.ndarray
    pixels_of_frames_with: np.ndarray
    frames: int

    @classmethod
    def of_frames(cls, per_frame: list[np.ndarray]) -> ClassCounts:
        """The counts of frames given as their :func:`class_pixels`."""
        pixels = np.sum(per_frame, axis=0)
        with_class = np.sum([np.where(counts > 0, counts.sum(), 0) for counts in per_frame], axis=0)
        return cls(pixels, with_class, len(per_frame))


class _FramePixels(Dataset):
    """A split's frames as their class pixel counts (the mask alone is read)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> np.ndarray:
        return class_pixels(self.dataset.read_train_ids(index), self.dataset.classes.num_classes)


def _as_they_are(counts: np.ndarray) -> np.ndarray:
    return counts


def count_classes(dataset, workers: int = 0) -> ClassCounts:
    """The :class:`ClassCounts` of a split's masks, read in ``workers`` processes."""
    loader = DataLoader(_FramePixels(dataset), batch_size=None, num_workers=workers, collate_fn=_as_they_are)
    return ClassCounts.of_frames([np.asarray(counts) for counts in loader])


def _present(counts: ClassCounts) -> np.ndarray:
    return counts.pixels > 0


def median_frequency(counts: ClassCounts) -> list[float]:
    """Median-frequency balancing (see the module docstring); 1 for absent classes."""
    present = _present(counts)
    frequency = np.divide(counts.pixels, counts.pixels_of_frames_with, out=np.zeros(len(present)), where=present)
    median = float(np.median(frequency[present])) if present.any() else 1.0
    return [median / value if is_present else 1.0 for value, is_present in zip(frequency.tolist(), present)]


def inverse_frequency(counts: ClassCounts) -> list[float]:
    """Inverse frequency, evenly spread classes weighing 1 (see the module docstring); 1 for absent classes."""
    present = _present(counts)
    share = counts.pixels / max(1, int(counts.pixels.sum()))
    even = 1.0 / max(1, int(present.sum()))
    return [even / value if is_present else 1.0 for value, is_present in zip(share.tolist(), present)]


def read_weights(path: Path, classes: ClassTable) -> list[float]:
    """One positive weight per class from a file: a JSON list, or numbers separated by commas, spaces or lines;
    FlagError naming the file and what is wrong."""
    path = Path(path)
    where = f"argument --class-weights: {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FlagError(f"{where}: no such file; give {', '.join(WEIGHTINGS)} or a file of one weight per "
                        "class") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FlagError(f"{where}: cannot be read ({error})") from None
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [
            float(token) for token in re.split(r"[\s,;]+", text.strip()) if token]
        weights = [float(value) for value in values]
    except (ValueError, TypeError):
        raise FlagError(f"{where}: not a list of numbers; write one weight per class, in the class table's order "
                        "(a JSON list, or numbers separated by commas or spaces)") from None
    if len(weights) != classes.num_classes:
        raise FlagError(f"{where}: holds {len(weights)} weights for the {classes.num_classes} classes of the class "
                        f"table {classes.name}; give one per class, in its order")
    if any(not math.isfinite(weight) or weight <= 0 for weight in weights):
        raise FlagError(f"{where}: weights must be positive numbers")
    return weights


def weights_for(rule: str, dataset, workers: int = 0) -> list[float] | None:
    """The class weights ``rule`` (--class-weights) gives for a training split: None for none, computed from its
    masks, or read from a file."""
    if rule == "none":
        return None
    if rule not in WEIGHTINGS:
        weights = read_weights(Path(rule), dataset.classes)
        log.info("class weights (a file, from %s): %s", rule, ", ".join(f"{name} {weight:.3g}" for name, weight in
                                                                         zip(dataset.classes.names, weights)))
        return weights
    counts = count_classes(dataset, workers)
    if not counts.pixels.any():
        raise FlagError(f"argument --class-weights: the {dataset.split} masks hold no labelled pixel to count "
                        f"(every pixel is {IGNORE_INDEX})")
    weights = median_frequency(counts) if rule == "median-frequency" else inverse_frequency(counts)
    log.info("class weights (%s, counted on the %d %s masks): %s", rule, counts.frames, dataset.split,
             ", ".join(f"{name} {weight:.3g}" for name, weight in zip(dataset.classes.names, weights)))
    return weights
