"""DeepLabV3+ (Chen et al., ECCV 2018) and its builder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

from deeplabv3plus.aspp import ASPP, ASPP_RATES_BY_OUTPUT_STRIDE, SeparableASPP
from deeplabv3plus.backbone import ResNetBackbone
from deeplabv3plus.decoder import Decoder, SeparableDecoder

__all__ = ["ARCHITECTURES", "DeepLabV3Plus", "ModelConfig", "build_model", "model_from_config", "without_aux_head"]


AUX_HEAD_PREFIX = "aux_head."
HEADS = ("dense", "separable")
ARCHITECTURES = {
    "deeplabv3plus": {"stem": "7x7", "head": "dense"},
    "mmseg": {"stem": "deep", "head": "separable"},
}
"""Presets of --arch: this project's model (torchvision ResNet, dense ASPP and decoder), and mmsegmentation's
``deeplabv3plus_r{50,101}-d8`` (ResNetV1c deep stem, depthwise-separable ASPP head of 512 channels)."""


@dataclass(frozen=True)
class ModelConfig:
    """What rebuilds a model (a checkpoint's ``model_config``): the ResNet depth, the output stride, the classes, the
    auxiliary head, and the variant: ``stem`` ("7x7" or "deep"), ``head`` ("dense" or "separable"; see
    :data:`ARCHITECTURES`), and whether its bilinear resizes align corners."""

    backbone: str = "resnet50"
    output_stride: int = 16
    num_classes: int = 19
    aux_head: bool = False
    stem: str = "7x7"
    head: str = "dense"
    align_corners: bool = False  # of every bilinear resize after the backbone (mmsegmentation's 769x769 configs)

    def as_dict(self) -> dict:
        """The config as a checkpoint records it (``align_corners`` only when set: a checkpoint of a model without
        it reads as before)."""
        values = dataclasses.asdict(self)
        if not values["align_corners"]:
            del values["align_corners"]
        return values


class DeepLabV3Plus(nn.Module):
    """ResNet backbone + ASPP + decoder; ``forward(images) -> logits (N, num_classes, H, W)``, built from a
    :class:`ModelConfig` (recorded as the dict ``self.config``), its backbone from ImageNet weights when
    ``pretrained_backbone`` is given.

    With ``aux_head`` an FCN head on layer3 (torchvision's ``FCNHead``: 3x3 conv to 256 channels, BN, ReLU, dropout
    0.1, 1x1 classifier) adds a second output in training mode only: ``{"out": logits, "aux": aux_logits}``, both at
    the input size. In eval mode the model returns the logits alone, with or without it.
    """

    def __init__(self, config: ModelConfig = ModelConfig(), pretrained_backbone: str | Path | None = None) -> None:
        super().__init__()
        if config.head not in HEADS:
            raise ValueError(f"unknown head {config.head!r}; choose one of {', '.join(HEADS)}")
        self.backbone = ResNetBackbone(config.backbone, config.output_stride, pretrained_backbone, config.stem)
        rates = ASPP_RATES_BY_OUTPUT_STRIDE[config.output_stride]
        if config.head == "separable":
            self.aspp = SeparableASPP(self.backbone.out_channels, rates)
            self.decoder = SeparableDecoder(self.backbone.low_level_channels, self.aspp.out_channels,
                                            config.num_classes, align_corners=config.align_corners)
        else:
            self.aspp = ASPP(self.backbone.out_channels, rates)
            self.decoder = Decoder(self.backbone.low_level_channels, self.aspp.out_channels, config.num_classes,
                                   align_corners=config.align_corners)
        self.aux_head = FCNHead(self.backbone.aux_channels, config.num_classes) if config.aux_head else None
        self.config = config.as_dict()
        self.align_corners = config.align_corners

    def forward(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """(N, 3, H, W) normalised images -> (N, num_classes, H, W) float logits, for any H and W."""
        size = images.shape[-2:]
        features = self.backbone(images)
        logits = self.decoder(features["low_level"], self.aspp(features["out"]))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)
        if self.aux_head is None or not self.training:
            return logits
        aux_logits = F.interpolate(self.aux_head(features["aux"]), size=size, mode="bilinear",
                                   align_corners=self.align_corners)
        return {"out": logits, "aux": aux_logits}


def build_model(backbone: str = "resnet50", output_stride: int = 16, num_classes: int = 19,
                pretrained_backbone: str | Path | None = None, aux_head: bool = False,
                arch: str = "deeplabv3plus") -> DeepLabV3Plus:
    """A DeepLabV3+ model (timm's ``create_model`` habit: one builder with keyword arguments).

    ``pretrained_backbone``: ``"imagenet"`` (torchvision's weights, downloaded to its
    cache), a path to a local ResNet state dict, or ``None`` to start from scratch.
    ``aux_head``: add the auxiliary FCN head on layer3 used by the training recipe.
    ``arch``: the variant, a preset of :data:`ARCHITECTURES` (``"mmseg"`` is mmsegmentation's).
    """
    return DeepLabV3Plus(ModelConfig(backbone, output_stride, num_classes, aux_head, **ARCHITECTURES[arch]),
                         pretrained_backbone)


def model_from_config(config: dict, output_stride: int | None = None, aux_head: bool = False) -> DeepLabV3Plus:
    """The model a full model config (``checkpoint.model_config``) describes, optionally at another output stride;
    without the auxiliary head unless asked."""
    known = {item.name for item in dataclasses.fields(ModelConfig)}
    return DeepLabV3Plus(ModelConfig(**{**{key: value for key, value in config.items() if key in known},
                                        "output_stride": output_stride or config["output_stride"],
                                        "aux_head": aux_head}))


def without_aux_head(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with the auxiliary head's weights left out (inference never uses them)."""
    return {key: value for key, value in state_dict.items() if not key.startswith(AUX_HEAD_PREFIX)}
