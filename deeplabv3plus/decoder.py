"""The DeepLabV3+ decoder: low-level projection, refinement and classifier; dense, or depthwise-separable as
mmsegmentation's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deeplabv3plus.layers import ConvBNReLU, SeparableConvBNReLU

__all__ = ["Decoder", "SeparableDecoder"]


class Decoder(nn.Module):
    """Fuses stride-4 low-level features with the upsampled ASPP output and classifies each pixel."""

    def __init__(self, low_level_channels: int, aspp_channels: int, num_classes: int,
                 low_level_projection: int = 48, channels: int = 256, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
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
        context = F.interpolate(context, size=low_level.shape[-2:], mode="bilinear",
                                align_corners=self.align_corners)
        return self.classifier(self.refine(torch.cat([context, self.project(low_level)], dim=1)))


class SeparableDecoder(nn.Module):
    """mmsegmentation's ``DepthwiseSeparableASPPHead`` after its bottleneck: the 48-channel 1x1 projection of the
    low-level features, two depthwise-separable 3x3 convs, dropout 0.1 and a 1x1 classifier."""

    def __init__(self, low_level_channels: int, aspp_channels: int, num_classes: int,
                 low_level_projection: int = 48, dropout: float = 0.1, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.c1_bottleneck = ConvBNReLU(low_level_channels, low_level_projection)
        self.sep_bottleneck = nn.Sequential(SeparableConvBNReLU(aspp_channels + low_level_projection, aspp_channels),
                                            SeparableConvBNReLU(aspp_channels, aspp_channels))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, low_level: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """low_level (N, C_low, H/4, W/4), context (N, C_aspp, h, w) -> logits (N, num_classes, H/4, W/4)."""
        context = F.interpolate(context, size=low_level.shape[-2:], mode="bilinear",
                                align_corners=self.align_corners)
        fused = self.sep_bottleneck(torch.cat([context, self.c1_bottleneck(low_level)], dim=1))
        return self.conv_seg(self.dropout(fused))
