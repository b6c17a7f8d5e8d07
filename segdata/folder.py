"""Your own data as folders of images and masks, in the layouts data sets ship in.

``--data-root ROOT`` holds, for each split, one of (looked for in this order)::

    ROOT/splits/{split}.txt                  a split list: one frame per line (see below)
    ROOT/{split}.txt                         a split list at the root, as SegNet's CamVid ships (train.txt, ...)
    ROOT/images/{split}/**/NAME.{png,jpg}    images, and their masks in ROOT/masks/{split}/**/NAME.png
    ROOT/{split}/**/NAME.{png,jpg}           images, and their masks in ROOT/{split}annot/**/NAME.png (SegNet-style)

A list line names a frame by its path under ``images/`` and ``masks/`` without suffix, or an ``IMAGE MASK`` pair of
paths (VOC- and SegNet-style lists; a tab or spaces between them, spaces inside a path allowed). A path that exists
as written is that file; any other is looked up relative to the list's folder or to ROOT, its leading ``/`` and the
folders of another machine's root dropped until it exists. A split without masks (no mask folder) is unlabelled:
it is predicted, not scored. What the mask values mean comes from a class table (``segdata.classes``). Masks are
lossless PNGs: a JPEG mask is refused by name, and so are two images of one frame (NAME.png beside NAME.jpg), a
frame listed twice, and a list line naming a missing file (with the file of that name elsewhere under ROOT, if any).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segdata.classes import ClassTable
from segdata.dataset import SegmentationDataset
from segdata.masks import IMAGE_SUFFIXES

__all__ = ["FolderSegmentation", "SplitFiles", "find_pairs", "find_split", "likely_root"]

LOSSY_SUFFIXES = (".jpg", ".jpeg")
ANNOTATION_SUFFIX = "annot"
"""SegNet's mask folders: ``train`` and ``trainannot``."""


@dataclass
class SplitFiles:
    """A split's frames (sorted, or in the list's order), their images and masks by stem, what does not pair, and
    where the split was found, in words."""

    stems: list[str] = field(default_factory=list)
    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    source: str = ""


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
    """The file a list names: the path as written where it exists; otherwise relative to one of ``bases``, a leading
    ``/`` and leading folders dropped until it exists (a list written on another machine names its own root)."""
    written = Path(token)
    if written.is_absolute() and written.is_file():
        return written
    parts = Path(token.lstrip("/")).parts
    for start in range(len(parts)):
        for base in bases:
            candidate = Path(os.path.normpath(base.joinpath(*parts[start:])))
            if candidate.is_file():
                return candidate
    return None


class _NameIndex:
    """The files under a root by name, built on the first question: where a file a list names may really be."""

    def __init__(self, root: Path) -> None:
        self.root, self._by_name = root, None

    def candidate(self, token: str, is_mask: bool, split: str) -> Path | None:
        """The file under the root with the name of ``token`` that is most likely the one meant: the longest shared
        tail of its path, then one in a folder of its kind (masks/ or ``*annot``/ for a mask) and of the ``split``."""
        if self._by_name is None:
            self._by_name = {}
            for folder, subfolders, files in os.walk(self.root):
                subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
                for name in files:
                    self._by_name.setdefault(name, []).append(Path(folder) / name)
        wanted = Path(token).parts

        def likelihood(path: Path) -> tuple[int, bool, bool]:
            shared = 0
            for ours, theirs in zip(reversed(path.parts), reversed(wanted)):
                if ours != theirs:
                    break
                shared += 1
            folders = path.relative_to(self.root).parts[:-1]
            of_masks = any(folder in ("masks", "labels") or folder.endswith(ANNOTATION_SUFFIX) for folder in folders)
            return shared, of_masks == is_mask, any(split in folder for folder in folders)

        return max(self._by_name.get(Path(token).name, []), key=likelihood, default=None)


def _tokens(line: str) -> list[str]:
    """The items of a list line: separated by tabs where it has one, else by spaces."""
    return [token.strip() for token in (line.split("\t") if "\t" in line else line.split()) if token.strip()]


def _pair(tokens: list[str], bases: tuple[Path, ...]) -> tuple[Path, Path] | None:
    """The image and mask a line names, trying each split of its items in two (paths may hold spaces)."""
    for cut in range(1, len(tokens)):
        image, mask = _resolve(" ".join(tokens[:cut]), bases), _resolve(" ".join(tokens[cut:]), bases)
        if image is not None and mask is not None:
            return image, mask
    return None


def _frame_image(image_folder: Path, name: str) -> list[Path]:
    """The image files of a frame a list names (its path under images/, with or without suffix)."""
    stem = name.rsplit(".", 1)[0] if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
    paths = (image_folder / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES)
    return [path for path in paths if path.is_file()]


def _read_list(root: Path, list_file: Path) -> tuple[SplitFiles, bool]:
    """The frames of a split list file (see the module docstring), and whether the split is labelled."""
    image_folder, mask_folder = root / "images", root / "masks"
    bases, names = (list_file.parent, root), _NameIndex(root)
    lines = [(number, _tokens(line)) for number, line in enumerate(list_file.read_text().splitlines(), 1)
             if line.strip()]
    if not lines:
        raise FileNotFoundError(f"{list_file}: lists no frames; write one frame per line (a name under images/, or "
                                "an 'image mask' pair of paths; see docs/own-data.md)")
    found, first_line = SplitFiles(source=f"the list {list_file}"), {}

    def add(number: int, stem: str, image: Path, mask: Path | None) -> None:
        if stem in first_line:
            found.problems.append(f"{list_file}: line {number} lists {stem} again (line {first_line[stem]} has it); "
                                  "remove one: a frame listed twice is trained on twice as often")
            return
        first_line[stem] = number
        found.stems.append(stem)
        found.images[stem] = image
        if mask is not None:
            found.masks[stem] = mask

    for number, tokens in lines:
        pair = _pair(tokens, bases) if len(tokens) > 1 else None
        named = _frame_image(image_folder, " ".join(tokens))
        if pair is not None:
            image, mask = pair
            if mask.suffix.lower() in LOSSY_SUFFIXES:
                found.problems.append(f"{mask}: a mask saved as JPEG; masks must be lossless PNGs: save it as PNG")
                continue
            stem = (image.relative_to(root) if image.is_relative_to(root) else Path(image.name)).with_suffix("")
            add(number, stem.as_posix(), image, mask)
        elif len(named) == 1:
            stem = named[0].relative_to(image_folder).with_suffix("").as_posix()
            mask = mask_folder / f"{stem}.png"
            if not mask.is_file() and mask_folder.is_dir():
                found.problems.append(_jpeg_mask_problem(mask_folder, stem, named[0]))
                continue
            add(number, stem, named[0], mask if mask.is_file() else None)
        elif len(named) > 1:
            found.problems.append(f"{named[0]}: and {named[1].name} beside it are two files of one frame; keep one")
        elif len(tokens) == 2:
            for token, is_mask in zip(tokens, (False, True)):
                if _resolve(token, bases) is None:
                    candidate = names.candidate(token, is_mask, list_file.stem)
                    hint = (f"; did you mean {candidate.relative_to(root)}? (fix the path)" if candidate else
                            "; fix the path (image mask pairs are relative to the list's folder or to --data-root)")
                    found.problems.append(f"{list_file}: line {number} names {token}, which is neither under "
                                          f"{list_file.parent} nor under {root}{hint}")
        elif len(tokens) == 1:
            found.problems.append(f"{list_file}: line {number} lists {tokens[0]}, but "
                                  f"{image_folder / tokens[0]}.png/.jpg does not exist; fix the name")
        else:
            found.problems.append(f"{list_file}: line {number} holds {len(tokens)} items, and no split of them names "
                                  "an image and its mask; write a frame name, or an image and its mask separated by a "
                                  "tab or a space")
    return found, bool(found.masks) or mask_folder.is_dir()


def _pair_folders(image_folder: Path, mask_folder: Path, source: str) -> SplitFiles:
    """The frames of an image folder paired by relative path and name with a mask folder (absent: unlabelled)."""
    found = SplitFiles(source=source)
    found.images = _images_under(image_folder, found.problems)
    labelled = mask_folder.is_dir()
    if labelled:
        found.masks = {stem: path for stem, path in _images_under(mask_folder, found.problems).items()
                       if path.suffix.lower() == ".png"}
    found.problems += [f"{path}: a mask without an image (expected {image_folder / stem}.png or .jpg)"
                       for stem, path in found.masks.items() if stem not in found.images]
    found.stems = sorted(found.images)
    if labelled:
        found.problems += [_jpeg_mask_problem(mask_folder, stem, found.images[stem]) for stem in found.stems
                           if stem not in found.masks]
    else:
        found.masks = {}
    return found


def _segnet_folders(root: Path, split: str) -> tuple[Path, Path] | None:
    """``ROOT/{split}/`` and ``ROOT/{split}annot/`` where the root is laid out as SegNet's CamVid."""
    images, masks = root / split, root / f"{split}{ANNOTATION_SUFFIX}"
    if images.is_dir() and (masks.is_dir() or any(root.glob(f"*{ANNOTATION_SUFFIX}"))):
        return images, masks
    return None


def likely_root(root: Path, split: str) -> Path | None:
    """The folder a mistaken --data-root most likely meant: its parent (``ROOT/images`` given) or one of its
    subfolders (the folder above given) that holds the ``split`` in a layout of this module."""

    def holds_split(folder: Path) -> bool:
        return ((folder / "splits" / f"{split}.txt").is_file() or (folder / f"{split}.txt").is_file()
                or (folder / "images" / split).is_dir() or _segnet_folders(folder, split) is not None)

    root = Path(root)
    if root.name in ("images", "masks", "splits") and holds_split(root.parent):
        return root.parent
    if root.is_dir():
        return next((child for child in sorted(root.iterdir()) if child.is_dir() and holds_split(child)), None)
    return None


def find_split(root: Path, split: str) -> SplitFiles:
    """The files of a split in the first layout of the module docstring that ``root`` holds; FileNotFoundError
    naming the likely root where it holds none."""
    root = Path(root)
    for list_file in (root / "splits" / f"{split}.txt", root / f"{split}.txt"):
        if list_file.is_file():
            found, labelled = _read_list(root, list_file)
            found.stems = [stem for stem in found.stems if stem in found.images]
            if not labelled:
                found.masks = {}
            return found
    if (root / "images" / split).is_dir():
        return _pair_folders(root / "images" / split, root / "masks" / split,
                             f"{root / 'images' / split}/ and {root / 'masks' / split}/")
    segnet = _segnet_folders(root, split)
    if segnet is not None:
        return _pair_folders(*segnet, f"{segnet[0]}/ and {segnet[1]}/ (SegNet layout)")
    likely = likely_root(root, split)
    hint = f"; did you mean --data-root {likely}?" if likely is not None else ""
    raise FileNotFoundError(f"{root / 'images' / split}: no such folder; a folder data set holds images/{split}/ and "
                            f"masks/{split}/, {split}/ and {split}{ANNOTATION_SUFFIX}/, or a list splits/{split}.txt "
                            f"or {split}.txt under --data-root{hint}")


def find_pairs(root: Path, split: str) -> tuple[list[str], dict[str, Path], dict[str, Path], list[str]]:
    """``(stems, images, masks, problems)`` of a split (see :func:`find_split`)."""
    found = find_split(root, split)
    return found.stems, found.images, found.masks, found.problems


class FolderSegmentation(SegmentationDataset):
    """The frames of a split of ``root`` (see the module docstring) and their masks, mapped to train ids by
    ``classes``; ``source`` says where the split was found. A split with a problem (a frame without its mask, a
    list line naming no file) is refused, naming the first; ``good_frames`` opens the frames that pair instead (the
    check counts those)."""

    kind = "folder"

    def __init__(self, root: Path, split: str, classes: ClassTable, transforms: Callable | None = None,
                 cache_root: Path | None = None, good_frames: bool = False) -> None:
        self.root, self.split, self.classes, self.transforms = Path(root), split, classes, transforms
        found = find_split(self.root, split)
        if found.problems and not good_frames:
            more = (f" (and {len(found.problems) - 1} more: python -m segdata.check lists them)"
                    if len(found.problems) > 1 else "")
            raise FileNotFoundError(found.problems[0] + more)
        if good_frames and found.masks:
            found.stems = [stem for stem in found.stems if stem in found.masks]
        if not found.stems:
            raise FileNotFoundError(f"{found.source}: no .png/.jpg images in the {split} split")
        self.stems, self.source = found.stems, found.source
        self.images = [found.images[stem] for stem in self.stems]
        self.has_labels = bool(found.masks)
        self.masks = [found.masks[stem] for stem in self.stems] if self.has_labels else []
        self.use_cache(cache_root)

    def stem(self, index: int) -> str:
        return self.stems[index]
