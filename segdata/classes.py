"""Class tables: what a data set's masks mean. Class names and colours in train-id order, the mask values that map
to each class, and the values that are ignored.

A class table is plain JSON::

    {"name": "drone-survey", "ignore": [255],
     "classes": [{"name": "background", "color": [0, 0, 0]},
                 {"name": "road", "color": [128, 64, 128], "values": [1, 7]}, ...]}

(``values`` defaults to the class's position; ``ignore`` to ``[255]`` unless a class takes 255; colour masks
may add ``"ignore_colors": [[0, 0, 0]]`` for unlabelled pixels), or CSV with a header ``name,r,g,b`` and optional
``values`` (values separated by spaces) and ``ignore`` columns: a row whose ``ignore`` is ``yes`` is no class but
mask values (and a colour) that are ignored, as JSON's ``ignore`` and ``ignore_colors`` say::

    name,r,g,b,values,ignore
    sky,128,128,128,0,
    road,128,64,128,3,
    void,0,0,0,11,yes

Either format says everything the other does (the table's name is the file's name unless JSON's ``name`` gives
one); a key or column of neither is an error that names it. Index masks are mapped by the values, colour masks by
the colours. Train id 255 (:data:`IGNORE_INDEX`) is never scored. Cityscapes' table is derived from cityscapesscripts
(``cityscapes.labels.CITYSCAPES_CLASSES``), PASCAL VOC's is :data:`VOC_CLASSES`.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["IGNORE_INDEX", "VOC_CLASSES", "ClassTable", "ClassTableError", "indexed_palette", "load_class_table"]

IGNORE_INDEX = 255
"""The train id of every pixel that is not trained on or scored."""


class ClassTableError(ValueError):
    """A class table that cannot be used; the message names the file and what to fix."""


@dataclass(frozen=True)
class ClassTable:
    """``names`` and ``colors`` (RGB) in train-id order, ``values``: the mask values of each class, ``ignore``: mask
    values that are not trained on (mapped to IGNORE_INDEX)."""

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    values: tuple[tuple[int, ...], ...]
    ignore: tuple[int, ...] = (IGNORE_INDEX,)
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = self.source or f"the {self.name} class table"
        if not 1 <= len(self.names) <= IGNORE_INDEX:
            raise ClassTableError(f"{where}: needs 1 to 255 classes, has {len(self.names)}")
        if not len(self.names) == len(self.colors) == len(self.values):
            raise ClassTableError(f"{where}: every class needs a name, a colour and its mask values")
        for label, items in (("class name", self.names), ("colour", self.colors)):
            repeated = sorted({str(item) for item in items if items.count(item) > 1})
            if repeated:
                raise ClassTableError(f"{where}: the {label} {repeated[0]} is given to more than one class")
        taken = [value for values in self.values for value in values] + list(self.ignore)
        if any(not 0 <= value <= 255 for value in taken):
            raise ClassTableError(f"{where}: mask values must be 0-255 (8-bit PNG masks)")
        repeated = sorted({value for value in taken if taken.count(value) > 1})
        if repeated:
            raise ClassTableError(f"{where}: the mask value {repeated[0]} is given to more than one class (or both to "
                                  "a class and to ignore)")
        for name, color in [*zip(self.names, self.colors), *(("ignored", color) for color in self.ignore_colors)]:
            if len(color) != 3 or any(not 0 <= channel <= 255 for channel in color):
                raise ClassTableError(f"{where}: the colour of {name} is {list(color)}; colours are RGB, three "
                                      "numbers 0-255")
        if set(self.colors) & set(self.ignore_colors):
            raise ClassTableError(f"{where}: a colour is both a class's and ignored")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def same_classes(self, other: ClassTable) -> bool:
        """Whether ``other`` says the same about every mask value and colour (the tables' names aside: a JSON table
        saved as CSV is named after its file)."""
        return self.as_dict() | {"name": ""} == other.as_dict() | {"name": ""}

    def value_lookup(self) -> np.ndarray:
        """(256,) int16: mask value -> train id, IGNORE_INDEX for ignored values, -1 for values the table lacks."""
        table = np.full(256, -1, np.int16)
        table[list(self.ignore)] = IGNORE_INDEX
        for train_id, values in enumerate(self.values):
            table[list(values)] = train_id
        return table

    def palette(self) -> np.ndarray:
        """(256, 3) uint8: train id -> RGB colour; black for IGNORE_INDEX and ids past the table."""
        palette = np.zeros((256, 3), np.uint8)
        palette[: self.num_classes] = self.colors
        return palette

    def mask_values(self) -> np.ndarray:
        """(256,) uint8: train id -> the first mask value of its class (IGNORE_INDEX -> the first ignored value):
        predictions written in the data set's own values."""
        table = np.full(256, self.ignore[0] if self.ignore else IGNORE_INDEX, np.uint8)
        table[: self.num_classes] = [values[0] for values in self.values]
        return table

    def as_dict(self) -> dict:
        """Plain values (what a checkpoint and a JSON file hold)."""
        return {"name": self.name, "ignore": list(self.ignore), "ignore_colors": [list(c) for c in self.ignore_colors],
                "classes": [{"name": name, "color": list(color), "values": list(values)}
                            for name, color, values in zip(self.names, self.colors, self.values)]}

    @classmethod
    def from_dict(cls, data: dict, source: str = "") -> ClassTable:
        """The table of :meth:`as_dict`'s form (``values`` default to the class's position); ClassTableError naming
        ``source`` and the fix for anything else (keys it does not know included)."""
        where = source or "class table"
        example = (CSV_EXAMPLE if where.lower().endswith(".csv") else
                   '{"classes": [{"name": ..., "color": [r, g, b], "values": [...]}, ...]}')
        classes = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(classes, list) or not all(isinstance(entry, dict) for entry in classes):
            kind = type(classes).__name__ if not isinstance(classes, list) else "a list of " + ", ".join(
                sorted({type(entry).__name__ for entry in classes if not isinstance(entry, dict)}))
            raise ClassTableError(f"{where}: \"classes\" must be a list of objects, one per class, got {kind}; write "
                                  f"{example}")
        _refuse_unknown(where, "key", set(data) - TABLE_KEYS)
        for entry in classes:
            _refuse_unknown(where, f"key of class {entry.get('name', '?')}", set(entry) - CLASS_KEYS)
        try:
            values = tuple(tuple(int(value) for value in entry.get("values", [index]))
                           for index, entry in enumerate(classes))
            claimed = IGNORE_INDEX in {value for class_values in values for value in class_values}
            return cls(
                name=str(data.get("name", Path(source).stem if source else "custom")),
                names=tuple(str(entry["name"]) for entry in classes),
                colors=tuple(tuple(int(channel) for channel in entry["color"]) for entry in classes),
                values=values,
                ignore=tuple(int(value) for value in data.get("ignore", [] if claimed else [IGNORE_INDEX])),
                ignore_colors=tuple(
                    tuple(int(channel) for channel in color) for color in data.get("ignore_colors", [])
                ),
                source=source,
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, ClassTableError):
                raise
            raise ClassTableError(f"{where}: not a class table ({type(error).__name__}: {error}); write {example}"
                                  ) from None


TABLE_KEYS = {"name", "classes", "ignore", "ignore_colors"}
CLASS_KEYS = {"name", "color", "values"}
CSV_COLUMNS = {"name", "r", "g", "b", "values", "ignore"}


def _refuse_unknown(where: str, what: str, unknown: set) -> None:
    if unknown:
        raise ClassTableError(f"{where}: unknown {what} {', '.join(sorted(map(str, unknown)))}; a class table knows "
                              "only the ones docs/own-data.md lists (a misspelt one would be dropped in silence)")


CSV_EXAMPLE = "a header name,r,g,b,values,ignore and a row per class, e.g. road,128,64,128,1,"


def _csv_rows(path: Path) -> tuple[str | None, list[str], list[tuple[int, dict]]]:
    """The table's name (a ``# name: ...`` line), its header and its rows as (line number, {column: text});
    ClassTableError for a row with more or fewer fields than the header. A byte-order mark (spreadsheets write one)
    is skipped, and so are blank and other ``#`` lines."""
    with open(path, newline="", encoding="utf-8-sig") as stream:
        lines = list(enumerate(stream.read().splitlines(), 1))
    name = None
    for _, line in lines:
        declared = re.match(r"\s*#\s*name\s*[:=]\s*(.+)", line)
        if declared:
            name = declared.group(1).strip()
    kept = [(number, line) for number, line in lines if line.strip() and not line.lstrip().startswith("#")]
    records = [(number, fields) for (number, _), fields in zip(kept, csv.reader(line for _, line in kept))]
    if not records:
        return name, [], []
    header = [column.strip() for column in records[0][1]]
    rows = []
    for number, fields in records[1:]:
        if len(fields) != len(header):
            raise ClassTableError(f"{path}: line {number} has {len(fields)} fields but the header has {len(header)} "
                                  f"({','.join(header)}); give every column of every row (an empty one as ,,)")
        rows.append((number, {column: field.strip() for column, field in zip(header, fields)}))
    return name, header, rows


def _read_csv(path: Path) -> dict:
    """A CSV class table as :meth:`ClassTable.from_dict`'s dict: class rows, and ``ignore`` rows (``yes``) as the
    ignored values and colours; ``# name: NAME`` names the table (else the file's name)."""
    name, header, rows = _csv_rows(path)
    if not rows or not {"name", "r", "g", "b"} <= set(header):
        raise ClassTableError(f"{path}: a CSV class table needs {CSV_EXAMPLE}")
    _refuse_unknown(str(path), "column", set(header) - CSV_COLUMNS)
    classes, ignore, ignore_colors = [], [], []
    for number, row in rows:
        values = (row.get("values") or "").split()
        color = [row[channel] for channel in ("r", "g", "b")]
        flag = (row.get("ignore") or "").lower()
        if flag not in ("", "no", "yes"):
            raise ClassTableError(f"{path}: row {row['name']}: ignore is yes or empty, got {row['ignore']!r} (line "
                                  f"{number})")
        if flag == "yes":
            if not values and not any(color):
                raise ClassTableError(f"{path}: ignored row {row['name']} names no mask value and no colour (line "
                                      f"{number}); give its values, or its colour for colour masks")
            ignore += values
            if any(color):
                ignore_colors.append(color)
            continue
        entry = {"name": row["name"], "color": color}
        entry["values"] = values or [len(classes)]
        classes.append(entry)
    table = {"name": name or path.stem, "classes": classes, "ignore_colors": ignore_colors}
    if ignore:
        table["ignore"] = ignore
    return table


def load_class_table(path: Path) -> ClassTable:
    """The class table in a JSON or CSV file; ClassTableError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class table not found; write one (see docs/own-data.md) and pass it with "
                                "--classes")
    try:
        data = _read_csv(path) if path.suffix.lower() == ".csv" else json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ClassTableError(f"{path}: not readable as JSON or CSV ({error})") from None
    if not isinstance(data, dict):
        raise ClassTableError(f"{path}: a class table is a JSON object with a \"classes\" list")
    data.setdefault("name", path.stem)
    return ClassTable.from_dict(data, source=str(path))


def indexed_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """PASCAL VOC's colour map (the bit-interleaved palette of its SegmentationClass PNGs)."""
    colors = []
    for index in range(count):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colors.append((red, green, blue))
    return tuple(colors)


_VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
              "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
              "tvmonitor")
VOC_CLASSES = ClassTable("voc", _VOC_NAMES, indexed_palette(len(_VOC_NAMES)),
                         tuple((index,) for index in range(len(_VOC_NAMES))), ignore=(IGNORE_INDEX,))
"""PASCAL VOC 2012: 21 classes (background included), object borders 255 (ignored)."""
