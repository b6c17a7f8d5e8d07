"""Using a trained model: the run its checkpoint records (:class:`TrainedRun`), the model rebuilt from it, and
prediction (whole image or sliding windows, flip, scales)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deeplabv3plus.checkpoint import (
    CheckpointError,
    checkpoint_classes,
    load_checkpoint,
    model_config,
    run_name_of,
    unwrap_model,
    weights_digest,
)
from deeplabv3plus.model import DeepLabV3Plus, model_from_config, without_aux_head
from deeplabv3plus.precision import autocast
from segdata.classes import ClassTable

__all__ = ["MIN_SCALED_SIDE", "InferenceOptions", "TrainedRun", "check_inference_options", "load_trained_model",
           "predict", "sliding_window_logits", "window_origins"]


@dataclass(frozen=True)
class InferenceOptions:
    """How a model predicts: whole images or ``crop`` windows every ``stride`` pixels, flip, scales, the autocast
    dtype (None: float32) and the memory format. Checked when made (stride <= crop)."""

    mode: str = "whole"
    crop: tuple[int, int] = (769, 769)
    stride: tuple[int, int] = (513, 513)
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_inference_options(self.mode, self.crop, self.stride, self.scales)


@dataclass(frozen=True)
class TrainedRun:
    """A trained run as its checkpoint records it: its settings (what checkpoints written before a setting existed
    lack is filled in here, once), class table, data set, data root, run name, iteration and weights digest; and its
    model, rebuilt on a device (:meth:`model`). What test, predict, export, the notebooks and --init-weights start
    from: ``TrainedRun.load(path)``."""

    path: Path
    checkpoint: dict

    @classmethod
    def load(cls, path: Path, checkpoint: dict | None = None) -> TrainedRun:
        """The run of the checkpoint at ``path`` (its contents when already loaded); CheckpointError naming the file
        when it is missing, damaged or not one of this project's."""
        return cls(Path(path), load_checkpoint(path) if checkpoint is None else checkpoint)

    @property
    def settings(self) -> dict:
        """The flags the run was trained with (args.json's record; a converted checkpoint has none)."""
        return self.checkpoint.get("args", {})

    @property
    def dataset(self) -> str:
        """The --dataset kind it was trained on (checkpoints written before other data sets: Cityscapes)."""
        return self.settings.get("dataset", "cityscapes")

    @functools.cached_property
    def classes(self) -> ClassTable:
        return checkpoint_classes(self.checkpoint)

    @property
    def model_config(self) -> dict:
        return model_config(self.checkpoint)

    @property
    def run_name(self) -> str:
        """The run's name: its folder's (outputs of the checkpoint are named after it)."""
        return run_name_of(self.path)

    @property
    def iteration(self) -> int | None:
        return self.checkpoint.get("iteration")

    @functools.cached_property
    def weights(self) -> str:
        """A short digest of the weights: equal digests, equal models."""
        return weights_digest(self.checkpoint["model"])

    def data_root(self) -> Path | None:
        """The data root the run was trained on, where it still exists."""
        trained_on = self.settings.get("data_root")
        return Path(trained_on) if trained_on and Path(trained_on).is_dir() else None

    def model(self, device: torch.device | str = "cpu", eval_output_stride: int | None = None,
              channels_last: bool = False, backbone: str | None = None,
              output_stride: int | None = None) -> DeepLabV3Plus:
        """The model, with its weights, in eval mode on ``device`` (in channels_last if asked). ``backbone`` /
        ``output_stride``, when given, must match the checkpoint (CheckpointError otherwise: never random weights in
        silence); ``eval_output_stride`` runs the same weights at another output stride (the DeepLabV3+ paper's
        protocol: train at OS16, test at OS8): the dilations and ASPP rates change, the parameters do not."""
        config = self.model_config
        for flag, key, wanted in (("--backbone", "backbone", backbone), ("--output-stride", "output_stride",
                                                                         output_stride)):
            if wanted is not None and wanted != config[key]:
                raise CheckpointError(f"{self.path}: was trained with {key}={config[key]} but {flag} is {wanted}; "
                                      "drop the flag or pass the matching checkpoint")
        model = model_from_config(config, eval_output_stride)
        try:  # trained with the auxiliary head or not, inference runs without it
            model.load_state_dict(without_aux_head(self.checkpoint["model"]))
        except RuntimeError as error:
            raise CheckpointError(f"{self.path}: the weights do not fit {config} ({error})") from None
        model = model.to(device).eval()
        return model.to(memory_format=torch.channels_last) if channels_last else model


def load_trained_model(path: Path, device: torch.device | str = "cpu", eval_output_stride: int | None = None
                       ) -> DeepLabV3Plus:
    """The model of the checkpoint at ``path`` with its weights, in eval mode (see :meth:`TrainedRun.model`)."""
    return TrainedRun.load(path).model(device, eval_output_stride)


def window_origins(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of sliding windows along one axis, as mmsegmentation places them.

    Windows start every ``stride`` pixels; the last is moved back to end at the
    border, so every window lies inside the image (one window when it is smaller
    than ``crop``).
    """
    count = max(size - crop + stride - 1, 0) // stride + 1
    return sorted({max(min(index * stride + crop, size) - crop, 0) for index in range(count)})


def sliding_window_logits(model: nn.Module, images: torch.Tensor, crop: Sequence[int],
                          stride: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) float logits of overlapping ``crop`` windows, summed and divided by the windows per pixel.

    mmsegmentation's "slide" mode: the model sees one window at a time, so memory
    depends on the window, not the image.
    """
    (height, width), (crop_height, crop_width) = images.shape[-2:], crop
    logits = None
    counts = images.new_zeros((1, 1, height, width), dtype=torch.float32)
    for top in window_origins(height, crop_height, stride[0]):
        for left in window_origins(width, crop_width, stride[1]):
            bottom, right = min(top + crop_height, height), min(left + crop_width, width)
            window = model(images[:, :, top:bottom, left:right]).float()
            if logits is None:
                logits = window.new_zeros((*window.shape[:2], height, width))
            logits[:, :, top:bottom, left:right] += window
            counts[:, :, top:bottom, left:right] += 1
    return logits / counts


MIN_SCALED_SIDE = 32
"""The smallest image side (pixels) the network is run on: its coarsest features are 1/16 or 1/8 of the input."""


def check_inference_options(mode: str, crop: Sequence[int] | None, stride: Sequence[int] | None,
                            scales: Sequence[float] = (1.0,), image_size: Sequence[int] | None = None) -> None:
    """ValueError naming the flag when sliding windows would leave pixels no window covers, or when ``scales``
    shrink an image of ``image_size`` (H, W) below MIN_SCALED_SIDE pixels a side."""
    if image_size is not None and min(scales) < 1 and min(image_size) * min(scales) < MIN_SCALED_SIDE:
        raise ValueError(f"argument --scales: {min(scales)} shrinks a {image_size[0]}x{image_size[1]} image below "
                         f"{MIN_SCALED_SIDE} pixels a side, too small for the network; use a larger scale")
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and (crop is None or stride is None):
        raise ValueError("mode='slide' needs crop=(H, W) and stride=(H, W)")
    if mode == "slide" and any(step > side for step, side in zip(stride, crop)):
        raise ValueError(f"argument --stride: {list(stride)} leaves gaps between --crop {list(crop)} windows; use a "
                         "stride no larger than the window")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, options: InferenceOptions = InferenceOptions(),
            size: Sequence[int] | None = None) -> torch.Tensor:
    """Class probabilities (N, C, H, W) of (N, 3, H, W) normalised images, averaged over the ``options``' scales and
    (optionally) horizontal flips, under their autocast dtype; at ``size`` (H, W) when given (images rescaled for
    the test: the logits resized back, corners aligned as the model aligns them), else at the images' size.

    Mode ``"slide"`` runs each scaled (and flipped) image as ``crop`` windows every ``stride`` pixels (see
    :func:`sliding_window_logits`); ``"whole"`` in one pass.
    """
    height, width = size or images.shape[-2:]
    align_corners = bool(getattr(unwrap_model(model), "align_corners", False))
    scales = options.scales
    if round(min(height, width) * min(scales)) < 1:
        raise ValueError(f"argument --scales: {min(scales)} shrinks a {height}x{width} image to nothing; use a larger "
                         "scale")
    total = None
    for scale in scales:
        scaled = images if scale == 1.0 else F.interpolate(
            images, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)
        variants = [(scaled, False), (scaled.flip(-1), True)] if options.flip else [(scaled, False)]
        for variant, flipped in variants:
            with autocast(images.device, options.amp_dtype):
                logits = (sliding_window_logits(model, variant, options.crop, options.stride)
                          if options.mode == "slide" else model(variant))
            logits = logits.float()
            if flipped:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=align_corners)
            probabilities = logits.softmax(dim=1)
            total = probabilities if total is None else total + probabilities
    return total / (len(scales) * (2 if options.flip else 1))
