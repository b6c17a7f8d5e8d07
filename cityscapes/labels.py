"""The official Cityscapes label table and the lookup tables derived from it.

The table itself comes from ``cityscapesscripts.helpers.labels``; nothing here is
retyped. Lookup tables are 256-entry numpy arrays so that a whole mask converts
with one indexing operation (``LABEL_ID_TO_TRAIN_ID[label_ids]``).
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import Label, category2labels, labels, name2label

from segdata.classes import IGNORE_INDEX as SEGDATA_IGNORE_INDEX
from segdata.classes import ClassTable

__all__ = [
    "CATEGORY_NAMES",
    "CITYSCAPES_CLASSES",
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "LABELS",
    "LABEL_ID_TO_COLOR",
    "LABEL_ID_TO_TRAIN_ID",
    "NAME_TO_LABEL",
    "NUM_CLASSES",
    "TRAIN_ID_TO_CATEGORY_ID",
    "TRAIN_ID_TO_COLOR",
    "TRAIN_ID_TO_LABEL_ID",
    "Label",
    "resolve_label",
]

LABELS: tuple[Label, ...] = tuple(labels)
NAME_TO_LABEL: dict[str, Label] = dict(name2label)

IGNORE_INDEX = SEGDATA_IGNORE_INDEX
"""trainId of every pixel that is not evaluated (unlabeled, void classes, ...)."""

TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted((label for label in LABELS if 0 <= label.trainId < IGNORE_INDEX), key=lambda label: label.trainId)
)
NUM_CLASSES = len(TRAIN_LABELS)
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in TRAIN_LABELS)

# Categories that hold at least one evaluated class, in the official order
# ('void' has none, leaving the 7 categories the benchmark reports).
CATEGORY_NAMES: tuple[str, ...] = tuple(
    category
    for category in category2labels
    if any(not label.ignoreInEval and label.id >= 0 for label in category2labels[category])
)


def _lookup_table(pairs: list[tuple[int, object]], fill: object, channels: int = 0) -> np.ndarray:
    shape = (256, channels) if channels else (256,)
    table = np.empty(shape, dtype=np.uint8)
    table[...] = fill
    for index, value in pairs:
        table[index] = value
    return table


_DRAWN = [label for label in LABELS if label.id >= 0]  # id -1 (license plate) is never drawn

LABEL_ID_TO_TRAIN_ID = _lookup_table([(label.id, label.trainId) for label in _DRAWN], IGNORE_INDEX)
"""(256,) uint8: labelId -> trainId, 255 for every label not trained on."""

TRAIN_ID_TO_LABEL_ID = _lookup_table(
    [(label.trainId, label.id) for label in TRAIN_LABELS], NAME_TO_LABEL["unlabeled"].id
)
"""(256,) uint8: trainId -> labelId for submissions; 255 maps to 'unlabeled' (0)."""

LABEL_ID_TO_COLOR = _lookup_table([(label.id, label.color) for label in _DRAWN], 0, channels=3)
"""(256, 3) uint8: labelId -> RGB colour of the official palette."""

TRAIN_ID_TO_COLOR = _lookup_table([(label.trainId, label.color) for label in TRAIN_LABELS], 0, channels=3)
"""(256, 3) uint8: trainId -> RGB colour; 255 is black, as in the official colour masks."""

TRAIN_ID_TO_CATEGORY_ID = np.array(
    [CATEGORY_NAMES.index(label.category) for label in TRAIN_LABELS], dtype=np.int64
)
"""(19,) int64: trainId -> index into CATEGORY_NAMES."""


CITYSCAPES_CLASSES = ClassTable(
    "cityscapes", CLASS_NAMES, tuple(tuple(label.color) for label in TRAIN_LABELS),
    tuple(tuple(label.id for label in _DRAWN if label.trainId == train_id) for train_id in range(NUM_CLASSES)),
    ignore=tuple(label.id for label in _DRAWN if not 0 <= label.trainId < IGNORE_INDEX))
"""Cityscapes as a class table: the 19 train classes, their colours, the labelIds of each (``value_lookup()`` is
LABEL_ID_TO_TRAIN_ID) and the labelIds that are not trained on."""


def resolve_label(name: str) -> Label | None:
    """The label of an annotation's ``label`` string, as the official tools resolve it.

    Group labels (``cargroup``) fall back to their class (``car``); an unknown name
    gives ``None``.
    """
    if name not in NAME_TO_LABEL and name.endswith("group"):
        name = name[: -len("group")]
    return NAME_TO_LABEL.get(name)
