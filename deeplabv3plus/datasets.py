"""The data sets the scripts know by name (``--dataset``): the one place that registers every kind, above the data
packages. A kind (``segdata.kinds.DataSetKind``) is a class table plus a file layout, and the parts only some kinds
have (categories, a submission zip, an official evaluation); Cityscapes' lives in ``cityscapes.kind``, the generic
ones (a folder of your own, PASCAL VOC) in ``segdata.kinds``. Adding a data set is one module defining its kind and
one line in :data:`KINDS`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cityscapes.kind import CITYSCAPES
from segdata.cache import CACHE_DIR
from segdata.classes import ClassTable
from segdata.dataset import SegmentationDataset, file_sizes
from segdata.flags import FlagError
from segdata.kinds import GENERIC_KINDS, DataSetKind, data_root_help
from segdata.masks import read_train_ids, size_mismatch
from segdata.transforms import eval_transforms

__all__ = ["DATASETS", "DATA_ROOT_HELP", "KINDS", "check_masks", "class_table", "dataset_kind", "open_scored_split",
           "open_split", "open_training_splits", "refuse_steps_it_lacks"]

KINDS: dict[str, DataSetKind] = {CITYSCAPES.name: CITYSCAPES, **GENERIC_KINDS}
"""Every ``--dataset``, by name: one line per kind."""
DATASETS = tuple(KINDS)
DATA_ROOT_HELP = data_root_help(KINDS)
"""--data-root's help in every script: what the root of each kind holds."""


def dataset_kind(name: str) -> DataSetKind:
    """The kind named ``name`` (a name the parsers' ``choices`` already checked)."""
    return KINDS[name]


def refuse_steps_it_lacks(kind: DataSetKind, steps: dict[str, object]) -> None:
    """FlagError naming the first of ``steps`` ({flag: value given}) that needs a part ``kind`` lacks:
    ``--official-eval`` its publisher's evaluation, ``--ground-truth`` a choice of ground truths (the kinds that
    have it are named)."""
    parts = {"--official-eval": "official_eval", "--ground-truth": "open_scored_split"}
    for flag, value in steps.items():
        if value and getattr(kind, parts[flag]) is None:
            owners = " and ".join(known.title or known.name for known in KINDS.values()
                                  if getattr(known, parts[flag]) is not None)
            raise FlagError(f"argument {flag}: is for {owners} only; the {kind.name} data set is scored by this "
                            "project's metrics (val scores, per-class IoU, PNGs and figures): drop the flag")


def class_table(dataset: str, classes_file: Path | None = None, resumed: ClassTable | None = None,
                resumed_from: Path | None = None) -> ClassTable:
    """The class table of ``--dataset`` (``--classes FILE`` for a folder data set; FlagError when it is missing, or
    given for a data set with its own table, or when it differs from the ``resumed`` run's, read from
    ``resumed_from``)."""
    table = dataset_kind(dataset).class_table(classes_file)
    if resumed is not None and not resumed.same_classes(table):
        raise FlagError(f"argument --classes: {classes_file} describes other classes than the run being resumed; "
                        "resume with its own table, or fine-tune its weights on these classes in a new run: "
                        f"--init-weights {resumed_from or 'CHECKPOINT'} --run-name NAME instead of --resume")
    return table


def open_split(dataset: str, root: Path, split: str, classes: ClassTable, transforms: Callable | None = None,
               cache_root: Path | None = None) -> SegmentationDataset:
    """The ``split`` of a data set at ``root``, read from the decoded cache at ``cache_root`` if given."""
    return dataset_kind(dataset).open_split(root, split, classes, transforms, cache_root)


def open_training_splits(dataset: str, root: Path, train_split: str, classes: ClassTable,
                         cache: bool = False) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The split trained on (from the decoded cache in ``{root}/cache`` with ``cache``; its training transform is
    given once the run's crop is known, ``with_transforms``) and val (whole images, normalised), after the fast
    check."""
    known = dataset_kind(dataset)
    if known.check_before_run is not None:  # a check of its own names missing masks better than opening would
        known.check_before_run(root, [train_split, "val"])
    splits = (open_split(dataset, root, train_split, classes, None, Path(root) / CACHE_DIR if cache else None),
              open_split(dataset, root, "val", classes, eval_transforms()))
    if known.check_before_run is None:
        for data in splits:
            check_masks(data)
    return splits


def check_masks(data: SegmentationDataset) -> None:
    """The fast check of an opened split before any work: it has masks, every mask has its image's size (from the
    file headers) and the first mask holds only values (or colours) of the class table (a whole split saved the
    wrong way shows in its first mask; the loader checks every other where it maps it). ValueError /
    FileNotFoundError with one line."""
    if not data.has_labels:
        raise FileNotFoundError(f"{data.root}: the {data.split} split has no masks to train or validate on")
    for image, mask, image_size, mask_size in zip(data.images, data.masks, data.image_sizes(), file_sizes(data.masks)):
        if image_size != mask_size:
            raise ValueError(size_mismatch(image, mask, image_size, mask_size))
    read_train_ids(data.masks[0], data.classes)


def open_scored_split(dataset: str, root: Path, split: str, classes: ClassTable, ground_truth: str | None = None,
                      test_scale: tuple[int, int] | None = None) -> tuple[SegmentationDataset, str]:
    """A split to predict and score (normalised whole images; rescaled within ``test_scale`` (W, H) if given), after
    its fast check, and what it is scored against in words ("" without labels). Cityscapes: the shipped labelIds
    when every frame has them, else the generated masks (``ground_truth`` chooses)."""
    known, transforms = dataset_kind(dataset), eval_transforms(test_scale)
    if known.open_scored_split is not None:
        return known.open_scored_split(root, split, classes, transforms, ground_truth)
    data = open_split(dataset, root, split, classes, transforms)
    return data, known.ground_truth() if data.has_labels else ""
