"""PASCAL VOC 2012 segmentation, as it unpacks::

    ROOT/JPEGImages/{id}.jpg
    ROOT/SegmentationClass/{id}.png                 palette PNGs: indices 0-20, object borders 255 (ignored)
    ROOT/ImageSets/Segmentation/{train,val}.txt
    ROOT/SegmentationClassAug/{id}.png              optional: the augmented set (SBD), greyscale 0-20 and 255
    ROOT/ImageSets/Segmentation/aug.txt             its 10,582 training ids (mmsegmentation's name; or train_aug.txt)

``ROOT`` is ``VOC2012`` itself or a folder above it (``VOCdevkit/VOC2012`` is found). The split ``aug`` reads the
augmented set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segdata.classes import VOC_CLASSES
from segdata.dataset import SegmentationDataset

__all__ = ["VOC_SPLITS", "VOCSegmentation", "voc_root"]

VOC_SPLITS = ("train", "val", "aug", "trainval")
_AUG_LISTS = ("aug.txt", "train_aug.txt", "trainaug.txt")


def voc_root(root: Path) -> Path:
    """The folder holding JPEGImages/: ``root`` or its VOC2012 / VOCdevkit/VOC2012."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no JPEGImages/ here or in VOC2012/ or VOCdevkit/VOC2012/; extract "
                            "VOCtrainval_11-May-2012.tar and point --data-root at it")


def _split_file(root: Path, split: str) -> Path:
    folder = root / "ImageSets" / "Segmentation"
    names = _AUG_LISTS if split == "aug" else (f"{split}.txt",)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder / names[0]}: no list of the {split} split; "
                            + ("add the augmented set (SegmentationClassAug/ and its aug.txt)" if split == "aug"
                               else "extract the VOC 2012 trainval archive"))


class VOCSegmentation(SegmentationDataset):
    """The images of a VOC split and their masks (SegmentationClass, or SegmentationClassAug for ``aug``)."""

    kind = "voc"

    def __init__(self, root: Path, split: str, transforms: Callable | None = None,
                 cache_root: Path | None = None) -> None:
        self.root, self.split, self.transforms, self.classes = voc_root(root), split, transforms, VOC_CLASSES
        list_file = _split_file(self.root, split)
        ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise FileNotFoundError(f"{list_file}: lists no images")
        self.images = [self.root / "JPEGImages" / f"{name}.jpg" for name in ids]
        mask_folder = self.root / ("SegmentationClassAug" if split == "aug" else "SegmentationClass")
        self.masks = [mask_folder / f"{name}.png" for name in ids]
        for image, mask in zip(self.images, self.masks):
            if not image.is_file():
                raise FileNotFoundError(f"{image}: listed in {list_file} but missing; re-extract the VOC archive")
            if not mask.is_file():
                raise FileNotFoundError(f"{mask}: the mask of {image.name} (listed in {list_file}) is missing")
        self.has_labels = True
        self.use_cache(cache_root)
