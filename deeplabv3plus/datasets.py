"""The data sets the scripts know by name (``--dataset``): the one place that registers every kind, above the data
packages. A kind (``segdata.kinds.DataSetKind``) is a class table plus a file layout; Cityscapes' lives in
``cityscapes.kind``, the generic ones (a folder of your own, PASCAL VOC) in ``segdata.kinds``. Adding a data set is
one module defining its kind and one line in :data:`KINDS`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cityscapes.kind import CITYSCAPES
from segdata.cache import CACHE_DIR
from segdata.classes import ClassTable
from segdata.dataset import SegmentationDataset, file_sizes
from segdata.flags import FlagError
from segdata.kinds import GENERIC_KINDS, DataSetKind, data_root_help
from segdata.masks import read_train_ids, size_mismatch
from segdata.transforms import eval_transforms, train_transforms

__all__ = ["DATASETS", "DATA_ROOT_HELP", "KINDS", "check_masks", "cityscapes_only", "class_table", "ground_truth_of",
           "ids_name", "kind", "open_scored_split", "open_split", "open_training_splits"]

KINDS: dict[str, DataSetKind] = {CITYSCAPES.name: CITYSCAPES, **GENERIC_KINDS}
"""Every ``--dataset``, by name: one line per kind."""
DATASETS = tuple(KINDS)
DATA_ROOT_HELP = data_root_help(KINDS)
"""--data-root's help in every script: what the root of each kind holds."""


def kind(dataset: str) -> DataSetKind:
    """The kind named ``dataset`` (a name the parsers' ``choices`` already checked)."""
    return KINDS[dataset]


def class_table(dataset: str, classes_file: Path | None = None, resumed: ClassTable | None = None,
                resumed_from: Path | None = None) -> ClassTable:
    """The class table of ``--dataset`` (``--classes FILE`` for a folder data set; FlagError when it is missing, or
    given for a data set with its own table, or when it differs from the ``resumed`` run's, read from
    ``resumed_from``)."""
    table = kind(dataset).class_table(classes_file)
    if resumed is not None and not resumed.same_classes(table):
        raise FlagError(f"argument --classes: {classes_file} describes other classes than the run being resumed; "
                        "resume with its own table, or fine-tune its weights on these classes in a new run: "
                        f"--init-weights {resumed_from or 'CHECKPOINT'} --run-name NAME instead of --resume")
    return table


def ids_name(classes: ClassTable) -> str:
    """The folder and suffix of predictions written in a data set's own mask values: ``labelIds`` for Cityscapes'
    table (what its server reads), ``ids`` for the rest."""
    return next((known.ids_name for known in KINDS.values() if known.classes is not None
                 and known.classes.name == classes.name), "ids")


def cityscapes_only(dataset: str, classes: ClassTable, flags: dict[str, object]) -> None:
    """FlagError naming the first of ``flags`` ({flag: value given}) that is given for a data set other than
    Cityscapes: the steps only Cityscapes has (labelIds submissions, the official evaluation, provided vs generated
    masks)."""
    name = classes.name if dataset == CITYSCAPES.name else dataset
    given = [flag for flag, value in flags.items() if value]
    if name != CITYSCAPES.name and given:
        raise FlagError(f"argument {given[0]}: is for Cityscapes only; the {name} data set is scored by this "
                        "project's metrics (val scores, per-class IoU, PNGs and figures): drop the flag")


def open_split(dataset: str, root: Path, split: str, classes: ClassTable, transforms: Callable | None = None,
               cache_root: Path | None = None) -> SegmentationDataset:
    """The ``split`` of a data set at ``root``, read from the decoded cache at ``cache_root`` if given."""
    return kind(dataset).open_split(root, split, classes, transforms, cache_root)


def open_training_splits(dataset: str, root: Path, train_split: str, classes: ClassTable, crop_size: Sequence[int],
                         scale_range: Sequence[float], jitter_on_device: bool, cache: bool = False
                         ) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The split trained on (crop-first random crops; from the decoded cache in ``{root}/cache`` with ``cache``) and
    val (whole images), after the fast check."""
    known = kind(dataset)
    if known.check_before_run is not None:  # a check of its own names missing masks better than opening would
        known.check_before_run(root, [train_split, "val"])
    augment = train_transforms(crop_size, tuple(scale_range), jitter_on_device=jitter_on_device)
    splits = (open_split(dataset, root, train_split, classes, augment, Path(root) / CACHE_DIR if cache else None),
              open_split(dataset, root, "val", classes, eval_transforms()))
    if known.check_before_run is None:
        for data in splits:
            check_masks(data)
    return splits


def check_masks(data: SegmentationDataset) -> None:
    """The fast check of an opened split before any work: it has masks, every mask has its image's size (from the
    file headers) and the first mask holds only values (or colours) of the class table (a whole split saved the
    wrong way shows in its first mask). ValueError / FileNotFoundError with one line."""
    if not data.has_labels:
        raise FileNotFoundError(f"{data.root}: the {data.split} split has no masks to train or validate on")
    for image, mask, image_size, mask_size in zip(data.images, data.masks, data.image_sizes(), file_sizes(data.masks)):
        if image_size != mask_size:
            raise ValueError(size_mismatch(image, mask, image_size, mask_size))
    read_train_ids(data.masks[0], data.classes)


def ground_truth_of(dataset: str) -> str:
    """What a training run's validation scores against, in words (a protocol's ``ground_truth``)."""
    return kind(dataset).ground_truth()


def open_scored_split(dataset: str, root: Path, split: str, classes: ClassTable, transforms: Callable,
                      ground_truth: str | None = None) -> tuple[SegmentationDataset, str]:
    """A split to predict and score, after its fast check, and what it is scored against in words ("" without
    labels). Cityscapes: the shipped labelIds when every frame has them, else the generated masks
    (``ground_truth`` chooses)."""
    known = kind(dataset)
    if known.open_scored_split is not None:
        return known.open_scored_split(root, split, classes, transforms, ground_truth)
    data = open_split(dataset, root, split, classes, transforms)
    return data, known.ground_truth() if data.has_labels else ""
