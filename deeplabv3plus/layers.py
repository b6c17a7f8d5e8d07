"""Convolution blocks shared by the heads, laid out like mmcv's (``conv`` / ``bn`` / ``activate``) so that
mmsegmentation's weights map onto them name for name."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["ConvBNReLU", "SeparableConvBNReLU"]


class ConvBNReLU(nn.Sequential):
    """Convolution without bias, batch norm, ReLU (mmcv's ``ConvModule``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
                 groups: int = 1) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, groups=groups,
                           bias=False),
            bn=nn.BatchNorm2d(out_channels),
            activate=nn.ReLU(inplace=True),
        ))


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 (BN, ReLU) then pointwise 1x1 (BN, ReLU) convolution (mmcv's ``DepthwiseSeparableConvModule``)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__(OrderedDict(
            depthwise_conv=ConvBNReLU(in_channels, in_channels, 3, dilation, groups=in_channels),
            pointwise_conv=ConvBNReLU(in_channels, out_channels, 1),
        ))
