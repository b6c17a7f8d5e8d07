"""ResNet-50/101/152 backbones (torchvision) with output stride 8 or 16.

The stride is set by ``replace_stride_with_dilation`` (the last stages use
dilated convolutions instead of striding), never by patching layers afterwards.
"""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from torchvision.models import ResNet101_Weights, ResNet152_Weights, ResNet50_Weights, resnet101, resnet152, resnet50
from torchvision.models._utils import IntermediateLayerGetter

__all__ = ["BACKBONES", "DILATION_BY_OUTPUT_STRIDE", "ResNetBackbone", "load_backbone_state_dict"]

BACKBONES = {
    "resnet50": (resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (resnet101, ResNet101_Weights.IMAGENET1K_V1),
    "resnet152": (resnet152, ResNet152_Weights.IMAGENET1K_V1),
}
DILATION_BY_OUTPUT_STRIDE = {16: [False, False, True], 8: [False, True, True]}
"""``replace_stride_with_dilation`` for layer2..layer4 at each output stride."""


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights = BACKBONES[name][1]
    try:
        return weights.get_state_dict(progress=True)
    except (URLError, OSError) as error:
        raise RuntimeError(
            f"could not download the ImageNet weights of {name} ({weights.url}): {error}. Either pass a local "
            f"state-dict file (pretrained_backbone='path/to/{Path(weights.url).name}', the file torchvision "
            "downloads to ~/.cache/torch/hub/checkpoints/) or start from scratch with pretrained_backbone=None"
        ) from error


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights file not found; pass an existing file, 'imagenet' or none")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path}: not a loadable PyTorch state dict ({error})") from error
    for key in ("state_dict", "model"):  # common wrappers of training checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_backbone_state_dict(resnet: nn.Module, name: str, pretrained: str | Path | None) -> None:
    """Load ImageNet weights into a torchvision ResNet: ``"imagenet"``, a file path, or ``None`` (nothing)."""
    if pretrained is None or str(pretrained).lower() == "none":
        return
    source = "ImageNet download" if str(pretrained) == "imagenet" else str(pretrained)
    state = _imagenet_state_dict(name) if str(pretrained) == "imagenet" else _state_dict_from_file(Path(pretrained))
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}  # the classifier is not used
    missing, unexpected = resnet.load_state_dict(state, strict=False)
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

    def __init__(self, name: str = "resnet50", output_stride: int = 16, pretrained: str | Path | None = None) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        if output_stride not in DILATION_BY_OUTPUT_STRIDE:
            raise ValueError(f"output_stride must be one of {sorted(DILATION_BY_OUTPUT_STRIDE)}, got {output_stride}")
        resnet = BACKBONES[name][0](weights=None, replace_stride_with_dilation=DILATION_BY_OUTPUT_STRIDE[output_stride])
        load_backbone_state_dict(resnet, name, pretrained)
        self.name = name
        self.output_stride = output_stride
        self.low_level_channels = resnet.layer1[-1].conv3.out_channels
        self.aux_channels = resnet.layer3[-1].conv3.out_channels
        self.out_channels = resnet.layer4[-1].conv3.out_channels
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer1": "low_level", "layer3": "aux", "layer4": "out"})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) -> {"low_level": (N, 256, H/4, W/4), "aux": (N, 1024, h, w), "out": (N, 2048, H/os, W/os)}."""
        return dict(self.body(images))
