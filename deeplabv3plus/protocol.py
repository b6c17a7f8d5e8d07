"""How a score was obtained, stated with every score: split, images, whole or sliding windows, TTA, strides, precision,
ground truth, and which weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from deeplabv3plus.recipes import PROJECT_RECIPE, as_flags

__all__ = ["EvaluationProtocol", "image_size_of", "recipe_in_words", "validation_protocol"]


@dataclass(frozen=True)
class EvaluationProtocol:
    """Everything that changes a score besides the weights themselves (and a digest of those)."""

    split: str
    images: int
    image_size: str  # "1024x2048", or "mixed" when the split holds several sizes
    mode: str = "whole"  # or "slide"
    window: tuple[int, int] | None = None  # slide: crop (H, W) and stride (H, W)
    stride: tuple[int, int] | None = None
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    train_output_stride: int | None = None
    test_output_stride: int | None = None
    amp_dtype: str | None = None  # None: float32
    channels_last: bool = False  # the memory format the model ran in (the same scores, within rounding)
    ground_truth: str = ""  # e.g. "gtFine labelIds (as the server)"
    checkpoint_iteration: int | None = None
    weights: str = ""  # short digest of the state dict
    of_images: int | None = None  # a fixed subset of a split of this many images (validation during training)
    test_scale: tuple[int, int] | None = None  # (W, H): each image rescaled within it (keeping its aspect) first
    recipe: str = ""  # the training recipe, and the flags that overrode it


    def describe(self) -> str:
        """One line in words, e.g. ``val, 500 images, whole 1024x2048, OS8 (trained OS16), flip, scales 0.75 1.0
        1.25``."""
        image_size = self.image_size + (f" rescaled within {self.test_scale[0]}x{self.test_scale[1]} (WxH)"
                                        if self.test_scale else "")
        if self.mode == "slide":
            inference = (f"slide {self.window[0]}x{self.window[1]} windows every {self.stride[0]}x{self.stride[1]} "
                         f"over {image_size}")
        else:
            inference = f"whole {image_size}"
        images = f"{self.images} of {self.of_images} images (a fixed subset)" if self.of_images else \
            f"{self.images} images"
        parts = [f"{self.split}, {images}, {inference}", self._strides()]
        if self.flip:
            parts.append("flip")
        if tuple(self.scales) != (1.0,):
            parts.append("scales " + " ".join(str(float(scale)) for scale in self.scales))
        parts.append(self.amp_dtype or "float32")
        if self.channels_last:
            parts.append("channels_last")
        if self.ground_truth:
            parts.append(f"ground truth: {self.ground_truth}")
        if self.checkpoint_iteration is not None:
            parts.append(f"checkpoint iteration {self.checkpoint_iteration}")
        if self.weights:
            parts.append(f"weights {self.weights}")
        if self.recipe:
            parts.append(f"recipe {self.recipe}")
        return ", ".join(part for part in parts if part)

    def _strides(self) -> str:
        if self.test_output_stride is None:
            return ""
        if self.train_output_stride in (None, self.test_output_stride):
            return f"OS{self.test_output_stride}"
        return f"OS{self.test_output_stride} (trained OS{self.train_output_stride})"

    def as_dict(self) -> dict:
        """Plain values for metrics.json, with the line in words first."""
        values = asdict(self)
        for key in ("window", "stride", "scales", "test_scale"):
            values[key] = None if values[key] is None else list(values[key])
        return {"description": self.describe(), **values}


def image_size_of(sizes: Sequence[tuple[int, int]]) -> str:
    """``"HxW"`` when every (height, width) is the same, else ``"mixed"``."""
    distinct = set(sizes)
    if len(distinct) == 1:
        height, width = distinct.pop()
        return f"{height}x{width}"
    return "mixed"


def recipe_in_words(settings: dict) -> str:
    """A run's recipe and the flags that overrode it (``mmseg-r50-d8-512x1024-80k with --iters 40000``); "" for this
    project's own recipe as it is, and for runs older than recipes."""
    recipe, overrides = settings.get("recipe", PROJECT_RECIPE), settings.get("recipe_overrides") or {}
    changed = as_flags(overrides, ", ")
    if recipe == PROJECT_RECIPE and not changed:
        return ""
    return recipe + (f" with {changed}" if changed else "")


def validation_protocol(val_set, settings: dict, ground_truth: str) -> EvaluationProtocol:
    """How validation during training scores: whole val images (of a split that holds more when --val-frames takes a
    fixed subset: ``val_set.of_frames``), the training's output stride, precision, memory format and recipe
    (``settings``: the run's record)."""
    stride = settings["output_stride"]
    return EvaluationProtocol(split="val", images=len(val_set), image_size=image_size_of(val_set.image_sizes()),
                              train_output_stride=stride, test_output_stride=stride, amp_dtype=settings["amp_dtype"],
                              channels_last=settings["channels_last"],
                              ground_truth=ground_truth, of_images=getattr(val_set, "of_frames", None),
                              recipe=recipe_in_words(settings))
