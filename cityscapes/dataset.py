"""The Cityscapes semantic segmentation data set: camera images with generated trainId masks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from cityscapes.files import read_png
from cityscapes.labels import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID
from cityscapes.paths import GENERATED_DIR, generated_mask_path, image_files, provided_mask_path, stem_of

__all__ = ["GROUND_TRUTHS", "CityscapesSegmentation", "missing_provided_masks"]

GROUND_TRUTHS = {
    "generated": "generated from polygons",
    "provided": "gtFine labelIds (as the server)",
}
"""The two ground truths a labelled split can be scored against, and how a report names each."""


def missing_provided_masks(root: Path, split: str) -> tuple[list[Path], int]:
    """The shipped ``gtFine/{split}/*/*_gtFine_labelIds.png`` that the split's images lack, and the image count."""
    stems = [stem_of(path) for path in image_files(root, split)]
    return [path for path in (provided_mask_path(root, split, stem) for stem in stems) if not path.exists()], len(stems)


class CityscapesSegmentation(Dataset):
    """``(image, mask, meta)`` for every image of ``{root}/leftImg8bit/{split}``, sorted by name.

    image: (3, H, W) (uint8 ``tv_tensors.Image`` untransformed, float after the v2
    transforms); mask: (H, W) int64 trainIds with 255 = ignore (all 255 on the
    test split, which has no labels); meta: ``{"stem", "image_path"}``.
    ``ground_truth="generated"`` reads the trainIds that generate_gt drew from the
    polygons (``{mask_root}/{split}``, default ``{root}/generated_gt``), what training
    uses; ``"provided"`` reads the ``gtFine/*_gtFine_labelIds.png`` the data set
    ships, mapped to trainIds with the label table, what the benchmark scores against.
    """

    def __init__(self, root: Path, split: str, transforms: Callable | None = None, mask_root: Path | None = None,
                 ground_truth: str = "generated") -> None:
        if ground_truth not in GROUND_TRUTHS:
            raise ValueError(f"ground_truth must be one of {', '.join(GROUND_TRUTHS)}, got {ground_truth!r}")
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.ground_truth = ground_truth
        self.has_labels = split != "test"
        self.images = image_files(self.root, split)
        if not self.images:
            raise FileNotFoundError(
                f"{self.root / 'leftImg8bit' / split}: no *_leftImg8bit.png images; extract leftImg8bit_trainvaltest.zip "
                f"into {self.root} or point --data-root at the folder holding leftImg8bit/ and gtFine/"
            )
        if ground_truth == "provided":
            self.masks = [provided_mask_path(self.root, split, stem_of(path)) for path in self.images]
            fix = f"extract gtFine_trainvaltest.zip into {self.root}, or score against the generated masks"
        else:
            mask_root = Path(mask_root) if mask_root is not None else self.root / GENERATED_DIR
            self.masks = [generated_mask_path(mask_root, split, stem_of(path), "labelTrainIds") for path in self.images]
            fix = f"generate them with python -m cityscapes.generate_gt --data-root {self.root}"
        if self.has_labels:
            missing = [path for path in self.masks if not path.exists()]
            if missing:
                raise FileNotFoundError(f"{missing[0]}: {len(missing)} of {len(self.masks)} {split} masks are missing; {fix}")

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The untransformed image and mask of one frame."""
        image = read_png(self.images[index])
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{self.images[index]}: expected an RGB image, got shape {image.shape}")
        if self.has_labels:
            mask = read_png(self.masks[index])
            if mask.shape != image.shape[:2]:
                raise ValueError(f"{self.masks[index]}: mask is {mask.shape[0]}x{mask.shape[1]} but "
                                 f"{self.images[index].name} is {image.shape[0]}x{image.shape[1]}; regenerate the masks "
                                 "with python -m cityscapes.generate_gt --overwrite")
            if self.ground_truth == "provided":
                mask = LABEL_ID_TO_TRAIN_ID[mask]
            mask = torch.from_numpy(mask)
        else:
            mask = torch.full(image.shape[:2], IGNORE_INDEX, dtype=torch.uint8)
        return tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)), tv_tensors.Mask(mask)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        image, mask = self.load(index)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        meta = {"stem": stem_of(self.images[index]), "image_path": str(self.images[index])}
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long(), meta
