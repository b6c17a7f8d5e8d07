"""Your own data as folders of images and masks, paired by relative path and name::

    ROOT/images/{split}/**/NAME.{png,jpg,jpeg}
    ROOT/masks/{split}/**/NAME.png          index PNGs (values -> classes) or colour PNGs (colours -> classes)

or, with split list files, ``ROOT/splits/{split}.txt`` naming one frame per line (its path under ``images/`` and
``masks/``, without suffix). A split without masks (no ``masks/{split}``) is unlabelled: it is predicted, not
scored. What the mask values mean comes from a class table (``segdata.classes``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segdata.classes import ClassTable
from segdata.dataset import SegmentationDataset
from segdata.masks import IMAGE_SUFFIXES

__all__ = ["FolderSegmentation", "find_pairs"]


def _images_under(folder: Path) -> dict[str, Path]:
    """{relative stem: image path} of the images under ``folder``."""
    return {path.relative_to(folder).with_suffix("").as_posix(): path for path in sorted(folder.rglob("*"))
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()}


def find_pairs(root: Path, split: str) -> tuple[list[str], dict[str, Path], dict[str, Path], list[str]]:
    """``(stems, images, masks, problems)`` of a split: the frames (sorted), their images and masks by stem, and
    what does not pair (an image without a mask, a mask without an image, a listed frame without files)."""
    root = Path(root)
    image_folder, mask_folder = root / "images" / split, root / "masks" / split
    list_file = root / "splits" / f"{split}.txt"
    if list_file.is_file():
        stems = [line.strip().rsplit(".", 1)[0] if Path(line.strip()).suffix.lower() in IMAGE_SUFFIXES
                 else line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        image_folder, mask_folder = root / "images", root / "masks"
        images = {stem: next((image_folder / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES
                              if (image_folder / f"{stem}{suffix}").is_file()), None) for stem in stems}
        masks = {stem: mask_folder / f"{stem}.png" for stem in stems if (mask_folder / f"{stem}.png").is_file()}
        problems = [f"{list_file}: lists {stem}, but {image_folder / stem}.png/.jpg does not exist"
                    for stem, path in images.items() if path is None]
        images = {stem: path for stem, path in images.items() if path is not None}
        labelled = mask_folder.is_dir()
    else:
        if not image_folder.is_dir():
            raise FileNotFoundError(f"{image_folder}: no such folder; a folder data set holds images/{split}/ and "
                                    f"masks/{split}/ (or splits/{split}.txt) under --data-root")
        images, masks = _images_under(image_folder), {}
        labelled = mask_folder.is_dir()
        if labelled:
            masks = {stem: path for stem, path in _images_under(mask_folder).items() if path.suffix.lower() == ".png"}
        problems = [f"{path}: a mask without an image (expected {image_folder / stem}.png or .jpg)"
                    for stem, path in masks.items() if stem not in images]
        stems = sorted(images)
    if labelled:
        problems += [f"{images[stem]}: has no mask (expected {mask_folder / stem}.png)"
                     for stem in stems if stem in images and stem not in masks]
    return [stem for stem in stems if stem in images], images, masks if labelled else {}, problems


class FolderSegmentation(SegmentationDataset):
    """The frames of ``{root}/images/{split}`` and their masks, mapped to train ids by ``classes``."""

    kind = "folder"

    def __init__(self, root: Path, split: str, classes: ClassTable, transforms: Callable | None = None,
                 cache_root: Path | None = None) -> None:
        self.root, self.split, self.classes, self.transforms = Path(root), split, classes, transforms
        self.stems, images, masks, problems = find_pairs(self.root, split)
        if problems:
            more = f" (and {len(problems) - 1} more: python -m segdata.check lists them)" if len(problems) > 1 else ""
            raise FileNotFoundError(problems[0] + more)
        if not self.stems:
            raise FileNotFoundError(f"{self.root / 'images' / split}: no .png/.jpg images in the {split} split")
        self.images = [images[stem] for stem in self.stems]
        self.has_labels = bool(masks)
        self.masks = [masks[stem] for stem in self.stems] if self.has_labels else []
        self.use_cache(cache_root)

    def stem(self, index: int) -> str:
        return self.stems[index]
