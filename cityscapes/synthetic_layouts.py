"""The synthetic street scenes in the layouts of other data sets: a folder data set (index or colour masks, with
its class table) and PASCAL VOC 2012 (JPEGs, palette masks with 255 borders, split lists, the augmented set), so
own-data training and its tests run with no download. ``python -m cityscapes.synthetic --layout folder|voc``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cityscapes.labels import LABELS
from cityscapes.synthetic_scenes import make_scene, render_image, render_provided_masks
from segdata.classes import IGNORE_INDEX, VOC_CLASSES, ClassTable
from segdata.files import write_bytes_atomic, write_json, write_png

__all__ = ["STREET_CLASSES", "write_folder_dataset", "write_voc_dataset"]

STREET_CLASSES = ClassTable(
    "synthetic-street", ("flat", "construction", "nature", "traffic", "sky"),
    ((128, 64, 128), (70, 70, 70), (107, 142, 35), (0, 0, 142), (70, 130, 180)),
    ((10,), (20, 21), (30,), (40,), (50,)), ignore=(0, 255), ignore_colors=((0, 0, 0),))
"""The folder layout's 5 classes (Cityscapes categories merged), as mask values 10-50 (construction: 20, objects
21), 0 unlabelled and 255 ignored (black in colour masks): a table whose values are not the train ids, as annotation
tools write them."""
_CATEGORY_VALUE = {"flat": 10, "construction": 20, "object": 21, "nature": 30, "vehicle": 40, "human": 40, "sky": 50}
_VOC_CLASS_OF = {"car": "car", "truck": "car", "person": "person", "rider": "person", "bicycle": "bicycle",
                 "motorcycle": "motorbike", "bus": "bus", "train": "train"}


def _lookup(value_of) -> np.ndarray:
    table = np.zeros(256, np.uint8)
    for label in LABELS:
        if label.id >= 0:
            table[label.id] = value_of(label)
    return table


def _frames(split: str, count: int, height: int, width: int, seed: int):
    for index in range(count):
        rng = np.random.default_rng([seed, ("train", "val", "test").index(split), index])
        scene = make_scene(rng, height, width)
        label_ids, _ = render_provided_masks(scene, height, width)
        yield index, render_image(scene, height, width, rng), label_ids


def write_folder_dataset(out: Path, frames_per_split: int = 4, height: int = 64, width: int = 128, seed: int = 0,
                         colour_masks: bool = False) -> Path:
    """``out/images/{train,val,test}/{street}/frame_N.png`` and ``out/masks/{train,val}/...png`` (index masks with
    :data:`STREET_CLASSES`' values, or its colours with ``colour_masks``), and ``out/classes.json``; returns the
    class table's path."""
    out = Path(out)
    values = _lookup(lambda label: _CATEGORY_VALUE.get(label.category, 0))
    palette = np.zeros((256, 3), np.uint8)
    for train_id, class_values in enumerate(STREET_CLASSES.values):
        palette[list(class_values)] = STREET_CLASSES.colors[train_id]
    for split in ("train", "val", "test"):
        for index, image, label_ids in _frames(split, frames_per_split, height, width, seed):
            name = Path(f"street_{index % 2}") / f"frame_{index:03d}"
            write_png(out / "images" / split / name.with_suffix(".png"), image)
            if split != "test":
                mask = values[label_ids]
                write_png(out / "masks" / split / name.with_suffix(".png"), palette[mask] if colour_masks else mask)
    write_json(out / "classes.json", STREET_CLASSES.as_dict())
    return out / "classes.json"


def _voc_mask(label_ids: np.ndarray) -> np.ndarray:
    """VOC class indices with a 255 band along every object's outline, as VOC's annotators left them."""
    names = list(VOC_CLASSES.names)
    mask = _lookup(lambda label: names.index(_VOC_CLASS_OF.get(label.name, "background")))[label_ids]
    edges = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    mask[edges & (cv2.dilate((mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)] = IGNORE_INDEX
    return mask


def _palette_png(mask: np.ndarray) -> bytes:
    import io

    image = Image.fromarray(mask, mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[: VOC_CLASSES.num_classes] = VOC_CLASSES.colors
    palette[IGNORE_INDEX] = (224, 224, 192)  # VOC's border colour
    image.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_voc_dataset(out: Path, frames_per_split: int = 4, height: int = 64, width: int = 128, seed: int = 0) -> Path:
    """``out/VOC2012/`` in the PASCAL VOC 2012 layout (train and val, and the augmented set: aug.txt over the train
    frames with greyscale SegmentationClassAug masks); returns the VOC2012 folder."""
    root = Path(out) / "VOC2012"
    lists = {}
    for split in ("train", "val"):
        ids = []
        for index, image, label_ids in _frames(split, frames_per_split, height, width, seed):
            name = f"2012_{('train', 'val').index(split)}{index:05d}"
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            write_bytes_atomic(root / "JPEGImages" / f"{name}.jpg", jpeg.tobytes())
            mask = _voc_mask(label_ids)
            write_bytes_atomic(root / "SegmentationClass" / f"{name}.png", _palette_png(mask))
            if split == "train":
                write_png(root / "SegmentationClassAug" / f"{name}.png", mask)
            ids.append(name)
        lists[split] = ids
    lists["aug"] = lists["train"]
    for split, ids in lists.items():
        write_bytes_atomic(root / "ImageSets" / "Segmentation" / f"{split}.txt", ("\n".join(ids) + "\n").encode())
    return root
