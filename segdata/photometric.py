"""mmsegmentation's ``PhotoMetricDistortion``, exactly: the same draws in the same order from a numpy random state,
the same uint8 arithmetic, the same HSV conversions (OpenCV's), on RGB images.

Each step happens with probability 0.5: brightness (+-32), then contrast (x 0.5-1.5) either second or last (a coin
decides), saturation (x 0.5-1.5 in HSV) and hue (+-18 of OpenCV's 180 in HSV). ``convert`` is mmsegmentation's
``img.astype(float32) * alpha + beta``, clipped to 0-255 and cast back to uint8. mmsegmentation works on BGR images;
OpenCV's RGB<->HSV conversions of RGB pixels give the same HSV values as its BGR ones of BGR pixels, so the result is
the same image with its channels in RGB order.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["PhotometricDistortion", "PhotometricDraws"]


@dataclass(frozen=True)
class PhotometricDraws:
    """One draw of the distortion: each step's factor (None: the step is skipped) and whether contrast comes second."""

    brightness: float | None
    contrast_first: bool
    contrast: float | None
    saturation: float | None
    hue: int | None


@dataclass(frozen=True)
class PhotometricDistortion:
    """mmsegmentation's defaults: brightness delta 32, contrast and saturation 0.5-1.5, hue delta 18."""

    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def draw(self, rng: np.random.RandomState) -> PhotometricDraws:
        """The draws mmsegmentation's transform makes, in its order (``numpy.random``'s functions on ``rng``)."""
        brightness = rng.uniform(-self.brightness_delta, self.brightness_delta) if rng.randint(2) else None
        contrast_first = rng.randint(2) == 1
        contrast = None
        if contrast_first and rng.randint(2):
            contrast = rng.uniform(*self.contrast_range)
        saturation = rng.uniform(*self.saturation_range) if rng.randint(2) else None
        hue = int(rng.randint(-self.hue_delta, self.hue_delta)) if rng.randint(2) else None
        if not contrast_first and rng.randint(2):
            contrast = rng.uniform(*self.contrast_range)
        return PhotometricDraws(brightness, contrast_first, contrast, saturation, hue)

    def apply(self, image: np.ndarray, draws: PhotometricDraws) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> the distorted (H, W, 3) uint8 RGB image."""
        if draws.brightness is not None:
            image = _convert(image, beta=draws.brightness)
        if draws.contrast_first and draws.contrast is not None:
            image = _convert(image, alpha=draws.contrast)
        if draws.saturation is not None:
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=draws.saturation)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if draws.hue is not None:
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + draws.hue) % 180
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not draws.contrast_first and draws.contrast is not None:
            image = _convert(image, alpha=draws.contrast)
        return image

    def __call__(self, image: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        return self.apply(image, self.draw(rng))


def _convert(image: np.ndarray, alpha: float = 1, beta: float = 0) -> np.ndarray:
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
