"""Your own data as folders of images and masks, paired by relative path and name::

    ROOT/images/{split}/**/NAME.{png,jpg,jpeg}
    ROOT/masks/{split}/**/NAME.png          index PNGs (values -> classes) or colour PNGs (colours -> classes)

or, with split list files, ``ROOT/splits/{split}.txt`` naming one frame per line: its path under ``images/`` and
``masks/`` without suffix, or an ``IMAGE MASK`` pair of paths (the VOC- and SegNet-style lists), each relative to
the list's folder or to ROOT (a leading ``/`` and the folders of another machine's root are dropped until the path
exists). A split without masks (no ``masks/{split}``) is unlabelled: it is predicted, not scored. What the mask
values mean comes from a class table (``segdata.classes``). Masks are lossless PNGs: a JPEG mask is refused by
name, and so are two images of one frame (NAME.png beside NAME.jpg).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from segdata.classes import ClassTable
from segdata.dataset import SegmentationDataset
from segdata.masks import IMAGE_SUFFIXES

__all__ = ["FolderSegmentation", "find_pairs"]

LOSSY_SUFFIXES = (".jpg", ".jpeg")


def _images_under(folder: Path, problems: list[str]) -> dict[str, Path]:
    """{relative stem: image path} of the images under ``folder``; two images of one stem are a problem."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            stem = path.relative_to(folder).with_suffix("").as_posix()
            if stem in found:
                problems.append(f"{found[stem]}: and {path.name} beside it are two files of one frame; keep one")
                continue
            found[stem] = path
    return found


def _jpeg_mask_problem(mask_folder: Path, stem: str, image: Path) -> str:
    """Why an image has no mask: a JPEG where the PNG should be, or no mask at all."""
    for suffix in LOSSY_SUFFIXES:
        lossy = mask_folder / f"{stem}{suffix}"
        if lossy.is_file():
            return (f"{lossy}: a mask saved as JPEG; masks must be lossless PNGs (JPEG changes the values at every "
                    "edge): save it as PNG")
    return f"{image}: has no mask (expected {mask_folder / stem}.png)"


def _resolve(token: str, bases: tuple[Path, ...]) -> Path | None:
    """The file a list names: relative to one of ``bases``, a leading ``/`` and leading folders dropped until it
    exists (a list written on another machine names its own root)."""
    parts = Path(token.lstrip("/")).parts
    for start in range(len(parts)):
        for base in bases:
            candidate = Path(os.path.normpath(base.joinpath(*parts[start:])))
            if candidate.is_file():
                return candidate
    return None


def _read_list(root: Path, list_file: Path) -> tuple[list[str], dict[str, Path], dict[str, Path], list[str], bool]:
    """``(stems, images, masks, problems, labelled)`` of a split list file (see the module docstring)."""
    image_folder, mask_folder = root / "images", root / "masks"
    lines = [(number, line.split()) for number, line in enumerate(list_file.read_text().splitlines(), 1)
             if line.strip()]
    if not lines:
        raise FileNotFoundError(f"{list_file}: lists no frames; write one frame per line (a name under images/, or "
                                "an 'image mask' pair of paths; see docs/own-data.md)")
    stems, images, masks, problems = [], {}, {}, []
    for number, tokens in lines:
        if len(tokens) == 2:  # an "image mask" pair
            image, mask = (_resolve(token, (list_file.parent, root)) for token in tokens)
            for token, path in zip(tokens, (image, mask)):
                if path is None:
                    problems.append(f"{list_file}: line {number} names {token}, which is neither under "
                                    f"{list_file.parent} nor under {root}; fix the path (image mask pairs are "
                                    "relative to the list's folder or to --data-root)")
            if image is None or mask is None:
                continue
            if mask.suffix.lower() in LOSSY_SUFFIXES:
                problems.append(f"{mask}: a mask saved as JPEG; masks must be lossless PNGs: save it as PNG")
                continue
            stem = (image.relative_to(root) if image.is_relative_to(root) else Path(image.name)).with_suffix("")
            stems.append(stem.as_posix())
            images[stem.as_posix()], masks[stem.as_posix()] = image, mask
            continue
        if len(tokens) != 1:
            problems.append(f"{list_file}: line {number} holds {len(tokens)} items; write a frame name, or an image "
                            "and its mask separated by a space")
            continue
        stem = tokens[0].rsplit(".", 1)[0] if Path(tokens[0]).suffix.lower() in IMAGE_SUFFIXES else tokens[0]
        candidates = [image_folder / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES
                      if (image_folder / f"{stem}{suffix}").is_file()]
        if not candidates:
            problems.append(f"{list_file}: line {number} lists {stem}, but {image_folder / stem}.png/.jpg does not "
                            "exist")
            continue
        if len(candidates) > 1:
            problems.append(f"{candidates[0]}: and {candidates[1].name} beside it are two files of one frame; keep one")
            continue
        stems.append(stem)
        images[stem] = candidates[0]
        if (mask_folder / f"{stem}.png").is_file():
            masks[stem] = mask_folder / f"{stem}.png"
        elif mask_folder.is_dir():
            problems.append(_jpeg_mask_problem(mask_folder, stem, candidates[0]))
    return stems, images, masks, problems, bool(masks) or mask_folder.is_dir()


def find_pairs(root: Path, split: str) -> tuple[list[str], dict[str, Path], dict[str, Path], list[str]]:
    """``(stems, images, masks, problems)`` of a split: the frames (sorted, or in the list's order), their images and
    masks by stem, and what does not pair (an image without a mask, a mask without an image, a JPEG mask, two images
    of one frame, a listed frame without files)."""
    root = Path(root)
    image_folder, mask_folder = root / "images" / split, root / "masks" / split
    list_file = root / "splits" / f"{split}.txt"
    if list_file.is_file():
        stems, images, masks, problems, labelled = _read_list(root, list_file)
        return [stem for stem in stems if stem in images], images, masks if labelled else {}, problems
    if not image_folder.is_dir():
        raise FileNotFoundError(f"{image_folder}: no such folder; a folder data set holds images/{split}/ and "
                                f"masks/{split}/ (or splits/{split}.txt) under --data-root")
    problems: list[str] = []
    images, masks = _images_under(image_folder, problems), {}
    labelled = mask_folder.is_dir()
    if labelled:
        masks = {stem: path for stem, path in _images_under(mask_folder, problems).items()
                 if path.suffix.lower() == ".png"}
    problems += [f"{path}: a mask without an image (expected {image_folder / stem}.png or .jpg)"
                 for stem, path in masks.items() if stem not in images]
    stems = sorted(images)
    if labelled:
        problems += [_jpeg_mask_problem(mask_folder, stem, images[stem]) for stem in stems if stem not in masks]
    return stems, images, masks if labelled else {}, problems


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
