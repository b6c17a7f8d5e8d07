"""The Cityscapes semantic segmentation data set: camera images with generated trainId masks."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cityscapes.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID
from cityscapes.paths import GENERATED_DIR, generated_mask_path, image_files, polygons_path, provided_mask_path, stem_of
from segdata.dataset import SegmentationDataset
from segdata.files import read_png

__all__ = ["GROUND_TRUTHS", "CityscapesSegmentation", "choose_ground_truth", "missing_provided_masks"]

GROUND_TRUTHS = {
    "generated": "generated from polygons",
    "provided": "gtFine labelIds (as the server)",
}
"""The two ground truths a labelled split can be scored against, and how a report names each."""


def missing_provided_masks(root: Path, split: str) -> tuple[list[Path], int]:
    """The shipped ``gtFine/{split}/*/*_gtFine_labelIds.png`` that the split's images lack, and the image count."""
    stems = [stem_of(path) for path in image_files(root, split)]
    return [path for path in (provided_mask_path(root, split, stem) for stem in stems) if not path.exists()], len(stems)


def choose_ground_truth(root: Path, split: str, requested: str | None) -> str:
    """``requested`` (``provided`` / ``generated``), or by default ``provided`` when every frame of the split has its
    shipped labelIds; falls back to ``generated`` with a one-line notice naming how many are missing."""
    if split == "test" or requested == "generated":
        return "generated"
    missing, total = missing_provided_masks(root, split)
    if requested == "provided" or not missing:
        return "provided"  # an explicit request with missing files fails in the dataset, naming the first
    print(f"notice: {len(missing)} of {total} {split} frames have no shipped gtFine labelIds (first: {missing[0]}); "
          "scoring against the masks generated from the polygons", file=sys.stderr)
    return "generated"


class CityscapesSegmentation(SegmentationDataset):
    """``(image, mask, meta)`` for every image of ``{root}/leftImg8bit/{split}``, sorted by name.

    image: (3, H, W) (uint8 ``tv_tensors.Image`` untransformed, float after the v2
    transforms); mask: (H, W) uint8 trainIds with 255 = ignore (all 255 on the
    test split, which has no labels; the loops make it int64 on the device);
    meta: ``{"stem", "image_path"}``.
    ``ground_truth="generated"`` reads the trainIds that generate_gt drew from the
    polygons (``{mask_root}/{split}``, default ``{root}/generated_gt``), what training
    uses; ``"provided"`` reads the ``gtFine/*_gtFine_labelIds.png`` the data set
    ships, mapped to trainIds with the label table, what the benchmark scores against.

    With ``cache_root`` (see ``segdata.cache``) frames are read from the decoded
    cache as memory maps instead of PNGs; a transform with ``takes_arrays`` (the
    crop-first training transform) then reads only the rows it crops.

    An index may be ``(index, seed)`` (see :class:`SeededSampler`): the sample's
    random augmentation then depends on that seed alone, whichever worker loads it.
    """

    def __init__(self, root: Path, split: str, transforms: Callable | None = None, mask_root: Path | None = None,
                 ground_truth: str = "generated", cache_root: Path | None = None) -> None:
        if ground_truth not in GROUND_TRUTHS:
            raise ValueError(f"ground_truth must be one of {', '.join(GROUND_TRUTHS)}, got {ground_truth!r}")
        self.root = Path(root)
        self.split = split
        self.kind, self.classes = "cityscapes", CITYSCAPES_CLASSES
        self.transforms = transforms
        self.ground_truth = ground_truth
        self.has_labels = split != "test"
        self.images = image_files(self.root, split)
        if not self.images:
            raise FileNotFoundError(
                f"{self.root / 'leftImg8bit' / split}: no *_leftImg8bit.png images; extract "
                "leftImg8bit_trainvaltest.zip "
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
                raise FileNotFoundError(
                    f"{missing[0]}: {len(missing)} of {len(self.masks)} {split} masks are missing; {fix}"
                )
        self.use_cache(cache_root)

    def cache_command(self) -> str:
        """The command that (re)builds this split's decoded cache."""
        return f"python -m cityscapes.cache --data-root {self.root} --splits {self.split}"

    def stem(self, index: int) -> str:
        """``{city}_{seq}_{frame}``: the name the server matches predictions by."""
        return stem_of(self.images[index])

    def label_id_files(self) -> list[Path]:
        """The labelIds PNGs the scores are computed against (shipped or generated), one per frame in order: the
        official evaluation's ground truth."""
        if self.ground_truth == "provided":
            return list(self.masks)
        return [generated_mask_path(self.root / GENERATED_DIR, self.split, stem_of(path), "labelIds")
                for path in self.images]

    def read_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (H, W, 3) uint8 image and (H, W) uint8 trainId mask decoded from their PNGs."""
        image = read_png(self.images[index])
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{self.images[index]}: expected an RGB image, got shape {image.shape}")
        if not self.has_labels:
            self._check_size_against_annotation(index, image.shape[:2])
            return image, np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        mask = read_png(self.masks[index])
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{self.images[index]}: is {image.shape[0]}x{image.shape[1]} but its mask {self.masks[index]} "
                f"is {mask.shape[0]}x{mask.shape[1]}; the image does not match its annotation: re-extract "
                f"leftImg8bit_trainvaltest.zip (python -m cityscapes.check --data-root {self.root} finds "
                "every such file)"
            )
        return image, LABEL_ID_TO_TRAIN_ID[mask] if self.ground_truth == "provided" else mask

    def read_train_ids(self, index: int) -> np.ndarray:
        """A frame's (H, W) uint8 trainIds alone (its image is not read)."""
        if self.cache is not None:
            return np.asarray(self.cache.load(self.stem(index))[1])
        mask = read_png(self.masks[index])
        return LABEL_ID_TO_TRAIN_ID[mask] if self.ground_truth == "provided" else mask

    def _check_size_against_annotation(self, index: int, size: tuple[int, int]) -> None:
        """An unlabelled (test) image must have its annotation's size, or its submission PNG would too."""
        annotation = polygons_path(self.root, self.split, stem_of(self.images[index]))
        if not annotation.exists():
            return
        try:
            data = json.loads(annotation.read_text())
            annotated = (int(data["imgHeight"]), int(data["imgWidth"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"{annotation}: not a readable polygons JSON; re-extract gtFine_trainvaltest.zip"
            ) from None
        if annotated != tuple(size):
            raise ValueError(f"{self.images[index]}: is {size[0]}x{size[1]} but its annotation says {annotated[0]}x"
                             f"{annotated[1]}; the image does not match its annotation: re-extract "
                             "leftImg8bit_trainvaltest.zip")

