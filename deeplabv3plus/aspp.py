"""Atrous spatial pyramid pooling (Chen et al., DeepLabV3/V3+): dense, or depthwise-separable as mmsegmentation's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deeplabv3plus.layers import ConvBNReLU, SeparableConvBNReLU

__all__ = ["ASPP", "ASPP_RATES_BY_OUTPUT_STRIDE", "SeparableASPP"]

ASPP_RATES_BY_OUTPUT_STRIDE = {16: (6, 12, 18), 8: (12, 24, 36)}
"""Dilation rates of the three 3x3 branches: doubled when the output stride halves."""


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> list[nn.Module]:
    padding = dilation * (kernel_size // 2)
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class ASPPConv(nn.Sequential):
    """3x3 atrous convolution branch."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__(*_conv_bn_relu(in_channels, out_channels, 3, dilation))


class ASPPPooling(nn.Module):
    """Image-level branch: global average pooling, 1x1 conv, upsampled back to the feature size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, out_channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.branch(features), size=features.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """1x1 conv, three 3x3 atrous convs and image pooling, concatenated and projected to ``out_channels``."""

    def __init__(self, in_channels: int, rates: tuple[int, int, int], out_channels: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            [nn.Sequential(*_conv_bn_relu(in_channels, out_channels))]
            + [ASPPConv(in_channels, out_channels, rate) for rate in self.rates]
            + [ASPPPooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(
            *_conv_bn_relu(len(self.branches) * out_channels, out_channels), nn.Dropout(dropout)
        )
        self.out_channels = out_channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C_in, h, w) -> (N, out_channels, h, w)."""
        return self.project(torch.cat([branch(features) for branch in self.branches], dim=1))


class SeparableASPP(nn.Module):
    """mmsegmentation's ``DepthwiseSeparableASPPHead`` up to its bottleneck: image pooling, a 1x1 branch and
    depthwise-separable 3x3 atrous branches (BN after the depthwise and the pointwise conv), concatenated in that
    order and fused by a dense 3x3 conv; 512 channels, no dropout (the head's dropout is before the classifier)."""

    def __init__(self, in_channels: int, rates: tuple[int, int, int], out_channels: int = 512) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, out_channels))
        self.aspp_modules = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels)]
            + [SeparableConvBNReLU(in_channels, out_channels, rate) for rate in self.rates]
        )
        self.bottleneck = ConvBNReLU((len(self.rates) + 2) * out_channels, out_channels, 3)
        self.out_channels = out_channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C_in, h, w) -> (N, out_channels, h, w)."""
        pooled = F.interpolate(
            self.image_pool(features), size=features.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.bottleneck(torch.cat([pooled] + [branch(features) for branch in self.aspp_modules], dim=1))
