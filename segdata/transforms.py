"""Joint image + mask transforms.

Training uses a crop-first pipeline: the random scale and the crop window are
drawn as torchvision's ``RandomScale`` + ``v2.RandomCrop(pad_if_needed=True)``
would draw them, then only the source pixels under the window are resampled
(OpenCV bilinear for the image, PyTorch's nearest indices for the mask), so a
2048x1024 frame is never resized whole and, read from the decoded cache, never
read whole. Flip, colour jitter and normalisation (torchvision.transforms.v2)
then run on the crop. :func:`resize_then_crop_transforms` is the reference it
is tested against: the same distribution, resized before cropping.

Masks travel as ``tv_tensors.Mask`` through v2 steps, which then leave them out
of colour and normalisation steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from segdata.classes import IGNORE_INDEX
from segdata.mmseg_pipeline import keep_ratio_size, redrawn_crop
from segdata.photometric import PhotometricDistortion

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "COLOR_AUGMENTATIONS",
    "Augmentation",
    "CropFirstTrainTransform",
    "DeviceNormalise",
    "RandomScale",
    "ScaleCrop",
    "crop_first",
    "crop_first_mask",
    "draw_crop",
    "draw_scale_crop",
    "eval_transforms",
    "resize_then_crop_transforms",
    "train_transforms",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomScale(v2.Transform):
    """Resize image and mask together by a factor drawn uniformly from ``scale_range``."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        return {"size": list(_scaled_size(height, width, self.scale_range))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], interpolation=v2.InterpolationMode.BILINEAR,
                                 antialias=True)


def _scaled_size(height: int, width: int, scale_range: Sequence[float]) -> tuple[int, int]:
    low, high = scale_range
    scale = low + (high - low) * torch.rand(()).item()
    return max(1, round(height * scale)), max(1, round(width * scale))


def _to_normalised_float() -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def _photometric(flip_probability: float, color_jitter: float) -> list[v2.Transform]:
    return [v2.RandomHorizontalFlip(flip_probability),
            v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter),
            *_to_normalised_float()]


@dataclass(frozen=True)
class ScaleCrop:
    """One draw: the frame scaled to ``scaled`` (H, W), padded by ``pad`` (top, left) where smaller than the crop,
    and the ``crop`` (H, W) window at ``origin`` (top, left) of the padded, scaled frame."""

    scaled: tuple[int, int]
    pad: tuple[int, int]
    origin: tuple[int, int]
    crop: tuple[int, int]


def draw_scale_crop(height: int, width: int, crop: Sequence[int], scale_range: Sequence[float]) -> ScaleCrop:
    """Draw scale and crop window with the same random calls, in the same order, as RandomScale + v2.RandomCrop."""
    return draw_crop(_scaled_size(height, width, scale_range), crop)


def draw_crop(scaled: tuple[int, int], crop: Sequence[int]) -> ScaleCrop:
    """Draw a crop window of a frame scaled to ``scaled`` (H, W), as v2.RandomCrop(pad_if_needed) does."""
    pad = tuple(max(0, size - side) for size, side in zip(crop, scaled))  # v2 pads both sides by the shortfall
    padded = tuple(side + 2 * extra for side, extra in zip(scaled, pad))
    origin = tuple(int(torch.randint(0, full - size + 1, size=())) if full > size else 0
                   for full, size in zip(padded, crop))
    return ScaleCrop(scaled, pad, origin, tuple(crop))


def _window_axis(origin: int, pad: int, crop: int, scaled: int) -> tuple[int, int, int]:
    """Along one axis: (first output index inside the scaled frame, its scaled coordinate, count inside)."""
    start = origin - pad  # scaled coordinate of output index 0
    first = max(0, -start)
    last = min(crop, scaled - start)
    return first, start + first, max(0, last - first)


def _nearest_indices(start: int, count: int, source: int, scaled: int) -> np.ndarray:
    """Source indices of scaled indices start..start+count, as PyTorch's 'nearest' computes them (float32)."""
    scale = np.float32(source) / np.float32(scaled)
    indices = np.floor(np.arange(start, start + count, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(indices, source - 1)


def crop_first(image: np.ndarray, mask: np.ndarray | None, params: ScaleCrop) -> tuple[np.ndarray, np.ndarray | None]:
    """The crop of the scaled, padded frame, computing only the pixels under the window.

    image: (H, W, 3) uint8 (an array or a memory map: only the rows under the
    window are read); mask: (H, W) uint8 or None. Returns the (h, w, 3) image crop
    (padding 0) and the (h, w) mask crop (padding IGNORE_INDEX).
    """
    height, width = image.shape[:2]
    (crop_height, crop_width), (scaled_height, scaled_width) = params.crop, params.scaled
    out_image = np.zeros((crop_height, crop_width, 3), np.uint8)
    row, y0, rows = _window_axis(params.origin[0], params.pad[0], crop_height, scaled_height)
    col, x0, cols = _window_axis(params.origin[1], params.pad[1], crop_width, scaled_width)
    if rows == 0 or cols == 0:
        return out_image, None if mask is None else crop_first_mask(mask, params)
    scale_y, scale_x = height / scaled_height, width / scaled_width
    # bilinear (align_corners=False) reads source rows around (y + 0.5) * scale - 0.5
    top = max(0, math.floor((y0 + 0.5) * scale_y - 0.5) - 1)
    bottom = min(height, math.floor((y0 + rows - 0.5) * scale_y - 0.5) + 3)
    left = max(0, math.floor((x0 + 0.5) * scale_x - 0.5) - 1)
    right = min(width, math.floor((x0 + cols - 0.5) * scale_x - 0.5) + 3)
    source = np.ascontiguousarray(image[top:bottom, left:right])
    inverse = np.array([[scale_x, 0.0, (x0 + 0.5) * scale_x - 0.5 - left],
                        [0.0, scale_y, (y0 + 0.5) * scale_y - 0.5 - top]])
    out_image[row:row + rows, col:col + cols] = cv2.warpAffine(
        source, inverse, (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return out_image, None if mask is None else crop_first_mask(mask, params)


def crop_first_mask(mask: np.ndarray, params: ScaleCrop) -> np.ndarray:
    """The (h, w) mask crop of :func:`crop_first` (padding IGNORE_INDEX), alone: reading only the rows under the
    window (what the crop rule looks at for each window it draws)."""
    height, width = mask.shape[:2]
    (crop_height, crop_width), (scaled_height, scaled_width) = params.crop, params.scaled
    out_mask = np.full((crop_height, crop_width), IGNORE_INDEX, np.uint8)
    row, y0, rows = _window_axis(params.origin[0], params.pad[0], crop_height, scaled_height)
    col, x0, cols = _window_axis(params.origin[1], params.pad[1], crop_width, scaled_width)
    if rows == 0 or cols == 0:
        return out_mask
    source_rows = _nearest_indices(y0, rows, height, scaled_height)
    source_cols = _nearest_indices(x0, cols, width, scaled_width)
    band = np.asarray(mask[source_rows[0]:source_rows[-1] + 1])  # only these rows are read
    # np.take along each axis: 4x faster than fancy indexing of a 768x768 window
    out_mask[row:row + rows, col:col + cols] = np.take(np.take(band, source_rows - source_rows[0], axis=0),
                                                       source_cols, axis=1)
    return out_mask


def _as_arrays(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) and (H, W) arrays from arrays, memory maps or (3, H, W) / (H, W) tensors."""
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy()
    if isinstance(mask, torch.Tensor):
        mask = mask.numpy()
    return image, mask


COLOR_AUGMENTATIONS = ("jitter", "photometric")
"""The colour augmentation of a training crop: torchvision's ColorJitter (brightness, contrast and saturation
+-25%), or mmsegmentation's PhotoMetricDistortion (``segdata.photometric``)."""


@dataclass(frozen=True)
class Augmentation:
    """What the training transform draws besides the crop: the crop rule (a window re-drawn, up to 10 times, while one
    class covers ``max_class_share`` or more of its labelled pixels: mmsegmentation's ``cat_max_ratio``; 1.0: no
    rule), the flip probability, and the colour augmentation (:data:`COLOR_AUGMENTATIONS`) with ColorJitter's
    strength."""

    max_class_share: float = 1.0
    flip_probability: float = 0.5
    color: str = "jitter"
    color_jitter: float = 0.25


class CropFirstTrainTransform:
    """Random scale + crop (crop first; the crop rule of ``augmentation``), then flip, colour augmentation and
    normalisation; see the module docstring.

    Call with an (H, W, 3) uint8 image and (H, W) uint8 trainId mask (arrays,
    memory maps or tensors); returns (3, h, w) float and (h, w) uint8 tensors.

    With ``jitter_on_device`` the colour jitter is drawn here (the same draws) but
    not applied: the call returns the (3, h, w) uint8 crop, the mask and the
    jitter's parameters as a (8,) tensor, and :meth:`finish_on_device` jitters and
    normalises a whole batch where it is trained (on the GPU, off the loader's CPU).
    The photometric distortion is applied here, in the loader (its HSV steps are
    OpenCV's), and leaves the device only the normalisation.
    """

    takes_arrays = True  # the dataset may pass memory maps, read lazily

    def __init__(self, crop_size: Sequence[int], scale_range: tuple[float, float],
                 augmentation: Augmentation = Augmentation(), jitter_on_device: bool = False) -> None:
        self.crop_size = tuple(crop_size)
        self.scale_range = tuple(scale_range)
        self.augmentation = augmentation
        self.flip = v2.RandomHorizontalFlip(augmentation.flip_probability)
        strength = augmentation.color_jitter if augmentation.color == "jitter" else 0.0
        self.jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)
        self.normalise = v2.Compose(_to_normalised_float())
        self.jitter_on_device = jitter_on_device
        self.normalise_on_device = DeviceNormalise(IMAGENET_MEAN, IMAGENET_STD)

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, ...]:
        image, mask = _as_arrays(image, mask)
        scaled = _scaled_size(image.shape[0], image.shape[1], self.scale_range)
        params = redrawn_crop(lambda: draw_crop(scaled, self.crop_size),
                              lambda window: crop_first_mask(mask, window), self.augmentation.max_class_share)
        image, mask = crop_first(image, mask, params)
        image, mask = self.flip(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                                tv_tensors.Mask(torch.from_numpy(mask)))
        if self.augmentation.color == "photometric":
            rng = np.random.RandomState(int(torch.randint(0, 2**32, ())))  # from the sample's seed
            distorted = PhotometricDistortion()(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), rng)
            image = tv_tensors.Image(torch.from_numpy(distorted).permute(2, 0, 1))
        if self.jitter_on_device:
            return image, mask, _encode_jitter(self.jitter.make_params([image]))
        return self.normalise(self.jitter(image), mask)

    def batch_step(self) -> Callable[[torch.Tensor, dict], torch.Tensor]:
        """``step(images, meta)``: :meth:`finish_on_device` of a batch with its ``meta["jitter"]`` (the training loop's
        batch transform)."""
        return lambda images, meta: self.finish_on_device(images, meta["jitter"])

    def finish_on_device(self, images: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) uint8 crops on any device and their (N, 8) jitter parameters -> normalised float crops."""
        jittered = [self.jitter.transform(image, _decode_jitter(row)) for image, row in zip(images, jitter.tolist())]
        return self.normalise_on_device(torch.stack(jittered))


class DeviceNormalise:
    """uint8 images -> float32 in [0, 1] -> ``(x - mean) / std``, as v2.ToDtype(scale=True) + v2.Normalize compute it
    (the same values), with mean and std copied to each device once rather than at every call (torchvision builds
    them anew per call: a blocking host-to-device copy per batch on a GPU)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) uint8 on any device -> float32 on the same device."""
        if images.device not in self._on_device:
            self._on_device[images.device] = (self.mean.to(images.device), self.std.to(images.device))
        mean, std = self._on_device[images.device]
        return images.to(torch.float32).mul_(1.0 / 255).sub(mean).div_(std)


_JITTER_FACTORS = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")


def _encode_jitter(params: dict[str, Any]) -> torch.Tensor:
    """ColorJitter parameters as a (8,) float64 tensor: the order of the 4 steps, then the factors (NaN: none)."""
    factors = [math.nan if params[key] is None else params[key] for key in _JITTER_FACTORS]
    return torch.tensor([*params["fn_idx"].tolist(), *factors], dtype=torch.float64)


def _decode_jitter(row: Sequence[float]) -> dict[str, Any]:
    factors = {key: None if math.isnan(value) else value for key, value in zip(_JITTER_FACTORS, row[4:])}
    return {"fn_idx": [int(index) for index in row[:4]], **factors}


def train_transforms(crop_size: Sequence[int], scale_range: tuple[float, float],
                     augmentation: Augmentation = Augmentation(),
                     jitter_on_device: bool = False) -> CropFirstTrainTransform:
    """Random scale, random crop (padding with 0 / ignore), horizontal flip, colour augmentation, normalisation."""
    return CropFirstTrainTransform(crop_size, scale_range, augmentation, jitter_on_device)


def resize_then_crop_transforms(
    crop_size: Sequence[int],
    scale_range: tuple[float, float],
    flip_probability: float = 0.5,
    color_jitter: float = 0.25,
) -> v2.Compose:
    """The reference pipeline: the whole frame resized (antialiased bilinear / nearest), then cropped, flipped,
    jittered and normalised. Same random draws as :func:`train_transforms`; several times slower on full frames."""
    return v2.Compose([
        RandomScale(scale_range),
        v2.RandomCrop(tuple(crop_size), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        *_photometric(flip_probability, color_jitter),
    ])


def eval_transforms(test_scale: Sequence[int] | None = None) -> Callable:
    """Normalisation only: evaluation runs on full-resolution images; with ``test_scale`` (W, H) each image is first
    rescaled to fit within it keeping its aspect, as mmsegmentation's test ``Resize(scale, keep_ratio=True)`` does
    (OpenCV, bilinear, on the uint8 image), its mask left at the image's own size (scores are computed there)."""
    if test_scale is None:
        return v2.Compose(_to_normalised_float())
    return RescaledEval(tuple(test_scale))


@dataclass(frozen=True)
class RescaledEval:
    """See :func:`eval_transforms`: (H, W, 3) uint8 image and (H, W) mask -> the rescaled, normalised (3, h, w) image
    and the (H, W) mask."""

    test_scale: tuple[int, int]
    takes_arrays = True

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = keep_ratio_size(image.shape[0], image.shape[1], self.test_scale, 1.0)
        rescaled = cv2.resize(np.asarray(image), (width, height), interpolation=cv2.INTER_LINEAR)
        normalised = v2.Compose(_to_normalised_float())(tv_tensors.Image(torch.from_numpy(rescaled).permute(2, 0, 1)))
        return normalised, torch.from_numpy(np.ascontiguousarray(mask))
