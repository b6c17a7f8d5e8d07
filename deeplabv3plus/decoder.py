"""The DeepLabV3+ decoder: low-level projection, refinement and classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Fuses stride-4 low-level features with the upsampled ASPP output and classifies each pixel."""

    def __init__(self, low_level_channels: int, aspp_channels: int, num_classes: int,
                 low_level_projection: int = 48, channels: int = 256) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(low_level_channels, low_level_projection, 1, bias=False),
                                     nn.BatchNorm2d(low_level_projection), nn.ReLU(inplace=True))
        self.refine = nn.Sequential(
            nn.Conv2d(aspp_channels + low_level_projection, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low_level: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """low_level (N, C_low, H/4, W/4), context (N, C_aspp, h, w) -> logits (N, num_classes, H/4, W/4)."""
        context = F.interpolate(context, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.refine(torch.cat([context, self.project(low_level)], dim=1)))
