"""Reading a data set's images and masks, and mapping mask values (index masks) or colours (colour masks) to train
ids with a class table. A value or colour the table lacks is an error that names the file, the values with their
pixel counts, and the likely cause."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from segdata.classes import IGNORE_INDEX, ClassTable
from segdata.files import decode_png

__all__ = ["IMAGE_SUFFIXES", "MaskValueError", "likely_cause", "read_image", "read_mask", "read_train_ids",
           "size_mismatch", "to_train_ids", "unlabelled_mask"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class MaskValueError(ValueError):
    """A mask with values (or colours) its class table does not list; the message names the file and the cause."""


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PNG or JPEG; ValueError naming the file when it cannot be decoded."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    if path.suffix.lower() == ".png":
        image = decode_png(data, path)
    else:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: cannot be decoded as an image (damaged or not a JPEG); replace the file")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # a greyscale photograph
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit RGB image, got shape {image.shape} {image.dtype}")
    return np.ascontiguousarray(image[:, :, :3])


def read_mask(path: Path) -> np.ndarray:
    """A mask PNG as stored: (H, W) values of an index or palette PNG (the palette's indices, as PASCAL VOC's), or
    (H, W, 3) RGB of a colour mask. ValueError naming the file otherwise."""
    return _read_mask_and_palette(path)[0]


def _read_mask_and_palette(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`read_mask`, and the (256, 3) uint8 palette of a palette PNG (None for any other)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I", "F"):
                raise ValueError(f"{path}: a {image.mode} mask (16-bit or float); save masks as 8-bit PNGs")
            if image.mode in ("RGBA", "LA"):
                image = image.convert(image.mode[:-1])
            palette = None
            if image.mode == "P":
                colours = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)[:256]
                palette = np.zeros((256, 3), np.uint8)
                palette[: len(colours)] = colours
            return np.asarray(image if image.mode in ("L", "P", "RGB") else image.convert("RGB")), palette
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: mask not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot be decoded as a PNG mask ({error}); replace the file") from None


def read_train_ids(path: Path, table: ClassTable) -> np.ndarray:
    """A mask file's (H, W) uint8 train ids (see :func:`to_train_ids`). A palette PNG is mapped by its colours where
    every colour it uses is in the table (a colour mask saved with a palette), else by its indices (as PASCAL VOC's
    masks): the error of a value the table lacks then says so."""
    mask, palette = _read_mask_and_palette(path)
    if palette is None:
        return to_train_ids(mask, table, path)
    used = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    known = {(r << 16) | (g << 8) | b for r, g, b in (*table.colors, *table.ignore_colors)}
    codes = _colour_codes(palette[used])
    if all(code in known for code in codes.tolist()):
        return to_train_ids(palette[mask], table, path)
    try:
        return to_train_ids(mask, table, path)
    except MaskValueError as error:
        raise MaskValueError(f"{error} (a palette PNG, read by its indices as PASCAL VOC's: its palette colours are "
                             "not all the table's colours either)") from None


def size_mismatch(image: Path, mask: Path, image_size: tuple[int, ...], mask_size: tuple[int, ...]) -> str:
    """The one line of an image and its mask of different sizes."""
    return (f"{image}: is {image_size[0]}x{image_size[1]} but its mask {mask} is {mask_size[0]}x{mask_size[1]}; a "
            "mask must have its image's size (python -m segdata.check lists every such pair)")


def likely_cause(unknown: dict[int, int], table: ClassTable) -> str:
    """Why an index mask holds ``unknown`` values ({value: pixels}) that ``table`` lacks, in words, with the fix."""
    values = set(unknown)
    taken = sorted(value for values in table.values for value in values)
    if len(values) == 1 and taken and values == {taken[-1] + 1} and taken == list(range(taken[0], taken[-1] + 1)):
        return (f"the table's {table.num_classes} classes take the values {taken[0]}-{taken[-1]}: one class short? "
                f"add a class (or an ignored value) for {taken[-1] + 1}")
    if values == {255} and table.num_classes <= 2:
        return ("a binary mask saved as 0/255? give the object class \"values\": [255] in the class table, or save "
                "masks as 0/1")
    if max(values) <= 33 and table.num_classes == 19:
        return "Cityscapes labelIds (0-33) where train ids (0-18) are expected? use --dataset cityscapes, or map them"
    if table.num_classes <= max(values) and len(values) > table.num_classes:
        return (f"more values than the table's {table.num_classes} classes: a class table of another data set, or "
                "masks that are not index masks?")
    where = table.source or "the class table"
    if where.lower().endswith(".csv"):
        return f"add them to a class's values in {where}, or add a row with ignore yes for them (e.g. void,,,,11,yes)"
    return f"add them to a class's \"values\" (or to \"ignore\") in {where}"


def _colour_codes(mask: np.ndarray) -> np.ndarray:
    return (mask[..., 0].astype(np.int32) << 16) | (mask[..., 1].astype(np.int32) << 8) | mask[..., 2]


def _describe(counts: dict, limit: int = 5) -> str:
    shown = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    more = f" and {len(counts) - limit} more" if len(counts) > limit else ""
    return ", ".join(f"{value}: {pixels} px" for value, pixels in shown) + more


def to_train_ids(mask: np.ndarray, table: ClassTable, path: Path | str = "mask") -> np.ndarray:
    """(H, W) uint8 train ids of a mask read by :func:`read_mask`: index masks through the table's values, colour
    masks through its colours; MaskValueError naming ``path`` for a value or colour the table lacks."""
    if mask.ndim == 2:
        lookup = table.value_lookup()
        ids = lookup[mask]
        if (ids < 0).any():
            unknown, counts = np.unique(mask[ids < 0], return_counts=True)
            found = dict(zip(unknown.tolist(), counts.tolist()))
            raise MaskValueError(f"{path}: mask values not in the class table ({_describe(found)}); "
                                 f"{likely_cause(found, table)}")
        return ids.astype(np.uint8)
    codes = _colour_codes(mask)
    unique, inverse = np.unique(codes, return_inverse=True)
    known = {(r << 16) | (g << 8) | b: train_id for train_id, (r, g, b) in enumerate(table.colors)}
    known.update({(r << 16) | (g << 8) | b: IGNORE_INDEX for r, g, b in table.ignore_colors})
    mapped = np.array([known.get(code, -1) for code in unique.tolist()], np.int16)
    if (mapped < 0).any():
        missing = unique[mapped < 0]
        counts = np.bincount(inverse.ravel(), minlength=len(unique))[mapped < 0]
        found = {f"rgb({code >> 16}, {(code >> 8) & 255}, {code & 255})": int(pixels)
                 for code, pixels in zip(missing.tolist(), counts.tolist())}
        grey = all((code >> 16) == ((code >> 8) & 255) == (code & 255) for code in missing.tolist())
        where = table.source or "the class table"
        csv_table = where.lower().endswith(".csv")
        if missing.tolist() == [0]:
            cause = (f"unlabelled pixels painted black? add a row unlabelled,0,0,0,,yes to {where}" if csv_table else
                     f'unlabelled pixels painted black? add "ignore_colors": [[0, 0, 0]] to {where}')
        elif grey:
            cause = "ids saved as RGB (all three channels equal)? save index masks as 8-bit greyscale PNGs"
        else:
            cause = f"colours not in {where}: add them to a class (or to " + (
                "a row with ignore yes)" if csv_table else '"ignore_colors")')
        raise MaskValueError(f"{path}: colour-mask colours not in the class table ({_describe(found)}); {cause}")
    return mapped[inverse].reshape(mask.shape[:2]).astype(np.uint8)


def unlabelled_mask(shape: tuple[int, ...]) -> np.ndarray:
    """The all-ignore mask of a frame without labels."""
    return np.full(shape[:2], IGNORE_INDEX, np.uint8)
