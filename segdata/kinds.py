"""Data-set kinds: what ``--dataset NAME`` opens, as data. A kind is a class table (fixed, or read from
``--classes``), a way to open a split, and optionally a fast check of its own and a choice of ground truths.

This package defines the generic kinds (a folder of your own, PASCAL VOC); a data set with a layout of its own
defines its kind beside its code (Cityscapes: ``cityscapes.kind``), and one registry above both names them all
(``deeplabv3plus.datasets``): adding a data set is one module and one line there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segdata.classes import VOC_CLASSES, ClassTable, load_class_table
from segdata.dataset import SegmentationDataset
from segdata.flags import FlagError
from segdata.folder import FolderSegmentation
from segdata.voc import VOCSegmentation

__all__ = ["FOLDER", "GENERIC_KINDS", "VOC", "DataSetKind", "data_root_help"]

SplitOpener = Callable[[Path, str, ClassTable, Callable | None, Path | None], SegmentationDataset]
"""``open(root, split, classes, transforms, cache_root) -> the split``."""


@dataclass(frozen=True)
class DataSetKind:
    """One ``--dataset``: its name, how a split opens, its class table and what it checks before a run."""

    name: str
    open_split: SplitOpener
    classes: ClassTable | None = None
    """The kind's own table; None: the user's, from ``--classes``."""
    check_before_run: Callable[[Path, list[str]], None] | None = None
    """A fast check of the splits a run reads that names problems better than opening them would; None: opening the
    splits and checking their masks (``deeplabv3plus.datasets.check_masks``) is the check."""
    open_scored_split: Callable[[Path, str, ClassTable, Callable, str | None], tuple[SegmentationDataset, str]] | None \
        = None
    """``(root, split, classes, transforms, ground truth asked for) -> (split, what it is scored against)`` for a
    kind that has several ground truths; None: its masks."""
    training_ground_truth: str = ""
    """What validation during training scores against, in words; "" : ``the {name} masks``."""
    ids_name: str = "ids"
    """What the data set calls its masks' own values: the folder and suffix of prediction PNGs written in them."""
    layout: str = ""
    """What its --data-root holds, in words (the flags' help)."""
    title: str = ""
    """Its name in messages (``Cityscapes``); "": its --dataset name."""
    check: str = "python -m segdata.check --dataset {name} --data-root {root}"
    """The command that checks a root of this kind (``{name}`` and ``{root}`` filled in)."""
    categories: tuple[tuple[str, ...], tuple[int, ...]] | None = None
    """(category names, the category of each train id): categories scored beside the classes; None: none."""
    submission: Callable[[list[Path], Path], Path] | None = None
    """``zip(prediction files, zip path)``: the archive its evaluation server takes; None: none."""
    official_eval: Callable[[list[Path], list[Path], Path], dict] | None = None
    """``score(prediction files, ground-truth files, report path) -> scores``: its publisher's own evaluation;
    None: none."""

    def class_table(self, classes_file: Path | None) -> ClassTable:
        """The kind's table, or the one ``--classes`` names; FlagError for a missing or a needless ``--classes``."""
        if self.classes is None:
            if classes_file is None:
                raise FlagError(f"argument --classes: --dataset {self.name} needs a class table (--classes "
                                "classes.json; see docs/own-data.md)")
            return load_class_table(classes_file)
        if classes_file is not None:
            raise FlagError(f"argument --classes: {self.name} has its own class table; --classes is for --dataset "
                            "folder")
        return self.classes

    def ground_truth(self) -> str:
        return self.training_ground_truth or f"the {self.name} masks"

    def check_command(self, root: Path) -> str:
        """The command that checks a data root of this kind."""
        return self.check.format(name=self.name, root=root)



FOLDER = DataSetKind("folder", lambda root, split, classes, transforms, cache_root: FolderSegmentation(
    root, split, classes, transforms, cache_root),
    layout="images/ and masks/, train/ and trainannot/ (SegNet's), or split lists (docs/own-data.md)")
VOC = DataSetKind("voc", lambda root, split, classes, transforms, cache_root: VOCSegmentation(
    root, split, transforms, cache_root), classes=VOC_CLASSES,
    layout="JPEGImages/ and SegmentationClass/ (or VOCdevkit/VOC2012/ holding them)")
GENERIC_KINDS = {kind.name: kind for kind in (VOC, FOLDER)}
"""The kinds this package knows: every one that needs no code of its own."""


def data_root_help(kinds: dict[str, DataSetKind]) -> str:
    """--data-root's help: what the root of each of ``kinds`` holds."""
    return "the data set's folder: " + "; ".join(f"{name}: {kind.layout}" for name, kind in kinds.items()
                                                 if kind.layout)
