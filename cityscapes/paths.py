"""File names and folders of the Cityscapes layout, in one place.

``{root}/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png``
``{root}/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_polygons.json``
``{root}/generated_gt/{split}/{city}/{stem}_gtFine_{labelIds,labelTrainIds,color}.png``
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "GENERATED_DIR",
    "IMAGE_SUFFIX",
    "MASK_KINDS",
    "POLYGONS_SUFFIX",
    "SPLITS",
    "frame_stem",
    "generated_mask_path",
    "image_path",
    "polygon_files",
    "provided_mask_path",
    "stem_of",
]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"
GENERATED_DIR = "generated_gt"
MASK_KINDS = ("labelIds", "labelTrainIds", "color")


def frame_stem(city: str, sequence: int, frame: int) -> str:
    """``aachen_000012_000019``: the name every file of one frame starts with."""
    return f"{city}_{sequence:06d}_{frame:06d}"


def stem_of(path: Path) -> str:
    """The frame stem of any file of the data set (``{city}_{seq}_{frame}``)."""
    return "_".join(Path(path).name.split("_")[:3])


def city_of(stem: str) -> str:
    """The city of a frame stem (city names hold no underscore)."""
    return stem.split("_")[0]


def image_path(root: Path, split: str, stem: str) -> Path:
    """Path of the camera image of a frame."""
    return Path(root) / "leftImg8bit" / split / city_of(stem) / f"{stem}{IMAGE_SUFFIX}"


def polygons_path(root: Path, split: str, stem: str) -> Path:
    """Path of the polygon annotation of a frame."""
    return Path(root) / "gtFine" / split / city_of(stem) / f"{stem}{POLYGONS_SUFFIX}"


def provided_mask_path(root: Path, split: str, stem: str, kind: str = "labelIds") -> Path:
    """Path of a mask shipped with the data set (``gtFine/..._gtFine_{kind}.png``)."""
    return Path(root) / "gtFine" / split / city_of(stem) / f"{stem}_gtFine_{kind}.png"


def generated_mask_path(out_root: Path, split: str, stem: str, kind: str) -> Path:
    """Path of a mask written by generate_gt (``{out_root}/{split}/{city}/..._gtFine_{kind}.png``)."""
    return Path(out_root) / split / city_of(stem) / f"{stem}_gtFine_{kind}.png"


def polygon_files(root: Path, split: str) -> list[Path]:
    """All polygon annotations of a split, sorted."""
    return sorted((Path(root) / "gtFine" / split).glob(f"*/*{POLYGONS_SUFFIX}"))


def image_files(root: Path, split: str) -> list[Path]:
    """All camera images of a split, sorted."""
    return sorted((Path(root) / "leftImg8bit" / split).glob(f"*/*{IMAGE_SUFFIX}"))
