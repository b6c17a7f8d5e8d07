"""mmsegmentation's Cityscapes training pipeline, exactly, as a training transform of this project:
``RandomResize(scale, ratio_range, keep_ratio=True)`` -> ``RandomCrop(crop_size, cat_max_ratio)`` ->
``RandomFlip(0.5)`` -> ``PhotoMetricDistortion`` -> its ``SegDataPreProcessor`` (normalisation, then padding to the
crop at the bottom and right with 0, and 255 in the mask).

The same random draws in the same order (numpy's, from a random state seeded per sample, so a run resumes
exactly), the same arithmetic: OpenCV's whole-frame resize (bilinear for the image, nearest for the mask, no
antialiasing) to mmcv's ``rescale_size``, the crop re-drawn up to 10 times while one class covers
``cat_max_ratio`` or more of its labelled pixels (or it holds one class only), the flip drawn as mmcv draws it. The
result differs from this project's own crop-first transform (``segdata.transforms``) in its resize arithmetic and
where the padding goes: that one resizes only the crop's pixels and pads before normalising.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from segdata.classes import IGNORE_INDEX
from segdata.photometric import PhotometricDistortion

__all__ = ["MEAN_255", "STD_255", "MmsegTrainTransform", "class_share_allows", "keep_ratio_size"]

MEAN_255 = (123.675, 116.28, 103.53)
STD_255 = (58.395, 57.12, 57.375)
"""mmsegmentation's normalisation, on 0-255 pixels: ImageNet's mean and std x 255."""


def keep_ratio_size(height: int, width: int, scale: Sequence[int], ratio: float) -> tuple[int, int]:
    """The (H, W) mmcv's ``RandomResize(scale (W, H), keep_ratio=True)`` resizes a frame to for a drawn ``ratio``: the
    largest size within ``int(scale x ratio)`` that keeps the frame's aspect (``mmcv.rescale_size``)."""
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    factor = min(max(target) / max(height, width), min(target) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def class_share_allows(mask: np.ndarray, max_share: float, ignore_index: int = IGNORE_INDEX) -> bool:
    """mmsegmentation's ``cat_max_ratio`` rule: a crop is taken when it holds more than one class and none covers
    ``max_share`` or more of its labelled pixels (ignored pixels count for no class)."""
    labels, counts = np.unique(mask, return_counts=True)
    counts = counts[labels != ignore_index]
    return len(counts) > 1 and np.max(counts) / np.sum(counts) < max_share


def redrawn_crop(draw: Callable[[], tuple], mask_of: Callable[[tuple], np.ndarray], max_share: float,
                 retries: int = 10) -> tuple:
    """A crop window from ``draw()``, re-drawn up to ``retries`` times while :func:`class_share_allows` refuses the
    mask ``mask_of(window)`` gives (the last draw is kept): mmsegmentation's ``RandomCrop.crop_bbox``."""
    window = draw()
    if max_share < 1.0:
        for _ in range(retries):
            if class_share_allows(mask_of(window), max_share):
                break
            window = draw()
    return window


@dataclass(frozen=True)
class MmsegTrainTransform:
    """The pipeline of the module docstring. Call with an (H, W, 3) uint8 RGB image and an (H, W) uint8 train-id mask;
    returns the (3, h, w) float32 normalised crop, padded to ``crop_size`` (h, w), and its (h, w) uint8 mask."""

    crop_size: tuple[int, int]
    ratio_range: tuple[float, float] = (0.5, 2.0)
    scale: tuple[int, int] = (2048, 1024)
    cat_max_ratio: float = 0.75
    flip_probability: float = 0.5
    photometric: bool = True
    takes_arrays = True  # the dataset passes arrays (or memory maps of the decoded cache)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.RandomState(int(torch.randint(0, 2**32, ())))  # from the sample's seed (exact resume)
        image, mask = self.augment(np.asarray(image), np.asarray(mask), rng)
        return self.normalise_and_pad(image, mask)

    def augment(self, image: np.ndarray, mask: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, ...]:
        """Resize, crop, flip and distort with the draws of ``rng`` (made in mmsegmentation's order): the (h, w, 3)
        uint8 crop and its (h, w) mask, before normalisation and padding (what mmsegmentation's transforms give)."""
        ratio = rng.random_sample() * (self.ratio_range[1] - self.ratio_range[0]) + self.ratio_range[0]
        height, width = keep_ratio_size(image.shape[0], image.shape[1], self.scale, ratio)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        margins = (max(height - self.crop_size[0], 0), max(width - self.crop_size[1], 0))

        def draw() -> tuple[int, int]:
            return rng.randint(0, margins[0] + 1), rng.randint(0, margins[1] + 1)

        def window(origin: tuple[int, int], array: np.ndarray) -> np.ndarray:
            return array[origin[0]:origin[0] + self.crop_size[0], origin[1]:origin[1] + self.crop_size[1], ...]

        origin = redrawn_crop(draw, lambda candidate: window(candidate, mask), self.cat_max_ratio)
        image, mask = window(origin, image), window(origin, mask)
        if rng.choice(2, p=[self.flip_probability, 1.0 - self.flip_probability]) == 0:  # mmcv's ["horizontal", None]
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.photometric:
            image = PhotometricDistortion()(np.ascontiguousarray(image), rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def normalise_and_pad(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """mmsegmentation's ``SegDataPreProcessor``: ``(x - mean) / std`` on 0-255 pixels, then padding to the crop at
        the bottom and right (0 in the normalised image, IGNORE_INDEX in the mask)."""
        pixels = torch.from_numpy(image).permute(2, 0, 1).float()
        normalised = (pixels - torch.tensor(MEAN_255).view(-1, 1, 1)) / torch.tensor(STD_255).view(-1, 1, 1)
        padded = torch.zeros((3, *self.crop_size), dtype=torch.float32)
        padded_mask = torch.full(self.crop_size, IGNORE_INDEX, dtype=torch.uint8)
        height, width = mask.shape
        padded[:, :height, :width] = normalised
        padded_mask[:height, :width] = torch.from_numpy(mask)
        return padded, padded_mask

    def batch_step(self) -> None:
        """No part of this pipeline is left for the training device: the loader's crops are finished."""
        return None
