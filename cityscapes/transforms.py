"""Joint image + mask transforms with torchvision.transforms.v2.

Masks travel as ``tv_tensors.Mask``: v2 then resizes them with nearest
interpolation, pads them with the ignore index and leaves them out of colour
and normalisation steps. (A plain tensor would pass through geometric
transforms untouched and end up misaligned with its image.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cityscapes.labels import IGNORE_INDEX

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RandomScale", "eval_transforms", "train_transforms"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomScale(v2.Transform):
    """Resize image and mask together by a factor drawn uniformly from ``scale_range``."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand(()).item()
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], interpolation=v2.InterpolationMode.BILINEAR,
                                 antialias=True)


def _to_normalised_float() -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transforms(crop_size: Sequence[int] = (768, 768), scale_range: tuple[float, float] = (0.5, 2.0),
                     flip_probability: float = 0.5, color_jitter: float = 0.25) -> v2.Compose:
    """Random scale, random crop (padding with 0 / ignore), horizontal flip, colour jitter, normalisation."""
    return v2.Compose([
        RandomScale(scale_range),
        v2.RandomCrop(tuple(crop_size), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        v2.RandomHorizontalFlip(flip_probability),
        v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter),
        *_to_normalised_float(),
    ])


def eval_transforms() -> v2.Compose:
    """Normalisation only: evaluation runs on full-resolution images."""
    return v2.Compose(_to_normalised_float())
