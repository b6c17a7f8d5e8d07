"""ResNet-50/101/152 backbones (torchvision) with output stride 8 or 16, and a 7x7 or deep (ResNetV1c) stem.

The stride is set by ``replace_stride_with_dilation`` (the last stages use
dilated convolutions instead of striding), never by patching layers afterwards;
it dilates exactly as mmsegmentation's ``contract_dilation=True`` does. The deep
stem is mmsegmentation's ResNetV1c: three 3x3 convs (3->32 stride 2, 32->32,
32->64, each with BN and ReLU) in place of the 7x7 conv.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights, ResNet152_Weights, resnet50, resnet101, resnet152
from torchvision.models._utils import IntermediateLayerGetter

__all__ = ["BACKBONES", "DILATION_BY_OUTPUT_STRIDE", "STEMS", "ResNetBackbone", "deep_stem", "load_backbone_state_dict"]

BACKBONES = {
    "resnet50": (resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (resnet101, ResNet101_Weights.IMAGENET1K_V1),
    "resnet152": (resnet152, ResNet152_Weights.IMAGENET1K_V1),
}
DILATION_BY_OUTPUT_STRIDE = {16: [False, False, True], 8: [False, True, True]}
"""``replace_stride_with_dilation`` for layer2..layer4 at each output stride."""
STEMS = ("7x7", "deep")
"""torchvision's 7x7 convolution, or the ResNetV1c deep stem of mmsegmentation."""


def deep_stem() -> nn.Sequential:
    """conv 3->32 stride 2, BN, ReLU, conv 32->32, BN, ReLU, conv 32->64, BN, ReLU (mmsegmentation's ``stem``)."""
    layers = []
    for in_channels, out_channels, stride in ((3, 32, 2), (32, 32, 1), (32, 64, 1)):
        layers += [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights = BACKBONES[name][1]
    try:
        return weights.get_state_dict(progress=True)
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error.strerror or error
        raise RuntimeError(
            f"could not download the ImageNet weights of {name} ({weights.url}: {reason}); pass a local state-dict "
            f"file with --pretrained-backbone PATH ({Path(weights.url).name}, as torchvision keeps it in "
            "~/.cache/torch/hub/checkpoints/), or start from scratch with --pretrained-backbone none "
            "(build_model: pretrained_backbone=None)"
        ) from None


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights file not found; pass an existing file, 'imagenet' or none")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  torch raises several types for corrupt or foreign files
        raise ValueError(f"{path}: not a loadable PyTorch state dict ({type(error).__name__}); expected a ResNet state "
                         "dict saved with torch.save (e.g. torchvision's resnet50 weights file), or 'imagenet' / "
                         "'none'") from None
    for key in ("state_dict", "model"):  # common wrappers of training checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_backbone_state_dict(layers: nn.Module, name: str, pretrained: str | Path | None, stem: str = "7x7") -> None:
    """Load ImageNet weights into the ResNet layers: ``"imagenet"``, a file path, or ``None`` (nothing).

    The deep stem has no torchvision weights: its ImageNet weights are mmsegmentation's ResNetV1c ones, converted
    to a file by ``python -m deeplabv3plus.convert --from mmseg-backbone``.
    """
    if pretrained is None or str(pretrained).lower() == "none":
        return
    if str(pretrained) == "imagenet" and stem == "deep":
        raise ValueError(
            f"torchvision has no ImageNet weights for the deep-stem {name}; convert mmsegmentation's "
            f"{name}_v1c checkpoint with python -m deeplabv3plus.convert --from mmseg-backbone IN.pth OUT.pth "
            "and pass OUT.pth, or start from scratch with 'none'"
        )
    source = "ImageNet download" if str(pretrained) == "imagenet" else str(pretrained)
    state = _imagenet_state_dict(name) if str(pretrained) == "imagenet" else _state_dict_from_file(Path(pretrained))
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}  # the classifier is not used
    missing, unexpected = layers.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{source}: not a {name} state dict (missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )


class ResNetBackbone(nn.Module):
    """A torchvision ResNet returning ``{"low_level": layer1 (stride 4), "aux": layer3, "out": layer4 (stride 8|16)}``.

    ``low_level_channels``, ``aux_channels`` and ``out_channels`` tell the heads how to size themselves.
    """

    def __init__(self, name: str = "resnet50", output_stride: int = 16, pretrained: str | Path | None = None,
                 stem: str = "7x7") -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        if output_stride not in DILATION_BY_OUTPUT_STRIDE:
            raise ValueError(f"output_stride must be one of {sorted(DILATION_BY_OUTPUT_STRIDE)}, got {output_stride}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
        resnet = BACKBONES[name][0](weights=None, replace_stride_with_dilation=DILATION_BY_OUTPUT_STRIDE[output_stride])
        layers: nn.Module = resnet
        if stem == "deep":  # the stem, then torchvision's max pool and layers
            layers = nn.Sequential(OrderedDict([("stem", deep_stem()), ("maxpool", resnet.maxpool)]
                                               + [(f"layer{i}", getattr(resnet, f"layer{i}")) for i in range(1, 5)]))
        load_backbone_state_dict(layers, name, pretrained, stem)
        self.name = name
        self.output_stride = output_stride
        self.low_level_channels = resnet.layer1[-1].conv3.out_channels
        self.aux_channels = resnet.layer3[-1].conv3.out_channels
        self.out_channels = resnet.layer4[-1].conv3.out_channels
        self.body = IntermediateLayerGetter(
            layers, return_layers={"layer1": "low_level", "layer3": "aux", "layer4": "out"}
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) -> {"low_level": (N, 256, H/4, W/4), "aux": (N, 1024, h, w), "out": (N, 2048, H/os, W/os)}."""
        return dict(self.body(images))
