"""The data sets the scripts know by name (``--dataset``): Cityscapes, PASCAL VOC 2012 and a folder of your own, each
a class table plus a file layout. The one place that maps a name to its class table, its splits and its checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from segdata.cache import CACHE_DIR
from segdata.classes import VOC_CLASSES, ClassTable, load_class_table
from segdata.dataset import SegmentationDataset, file_sizes
from segdata.flags import FlagError
from segdata.folder import FolderSegmentation
from segdata.masks import read_mask, size_mismatch, to_train_ids
from segdata.transforms import eval_transforms, train_transforms
from segdata.voc import VOCSegmentation

__all__ = ["DATASETS", "check_masks", "cityscapes_only", "class_table", "ground_truth_of", "open_split",
           "open_training_splits"]

DATASETS = ("cityscapes", "voc", "folder")


def class_table(dataset: str, classes_file: Path | None = None, resumed: ClassTable | None = None,
                resumed_from: Path | None = None) -> ClassTable:
    """The class table of ``--dataset`` (``--classes FILE`` for a folder data set; FlagError when it is missing, or
    given for a data set with its own table, or when it differs from the ``resumed`` run's, read from
    ``resumed_from``)."""
    table = _class_table(dataset, classes_file)
    if resumed is not None and resumed != table:
        raise FlagError(f"argument --classes: {classes_file} describes other classes than the run being resumed; "
                        "resume with its own table, or fine-tune its weights on these classes in a new run: "
                        f"--init-weights {resumed_from or 'CHECKPOINT'} --run-name NAME instead of --resume")
    return table


def _class_table(dataset: str, classes_file: Path | None) -> ClassTable:
    if dataset == "folder":
        if classes_file is None:
            raise FlagError("argument --classes: --dataset folder needs a class table (--classes classes.json; see "
                            "docs/own-data.md)")
        return load_class_table(classes_file)
    if classes_file is not None:
        raise FlagError(f"argument --classes: {dataset} has its own class table; --classes is for --dataset folder")
    if dataset == "voc":
        return VOC_CLASSES
    from cityscapes.labels import CITYSCAPES_CLASSES

    return CITYSCAPES_CLASSES


def cityscapes_only(dataset: str, classes: ClassTable, flags: dict[str, object]) -> None:
    """FlagError naming the first of ``flags`` ({flag: value given}) that is given for a data set other than
    Cityscapes: the steps only Cityscapes has (labelIds submissions, the official evaluation, provided vs generated
    masks, the decoded cache)."""
    name = classes.name if dataset == "cityscapes" else dataset
    given = [flag for flag, value in flags.items() if value]
    if name != "cityscapes" and given:
        raise FlagError(f"argument {given[0]}: is for Cityscapes only; the {name} data set is scored by this "
                        "project's metrics (val scores, per-class IoU, PNGs and figures): drop the flag")


def open_split(dataset: str, root: Path, split: str, classes: ClassTable, transforms: Callable | None = None,
               cache_root: Path | None = None) -> SegmentationDataset:
    """The ``split`` of a data set at ``root``, read from the decoded cache at ``cache_root`` if given."""
    if dataset == "folder":
        return FolderSegmentation(root, split, classes, transforms, cache_root)
    if dataset == "voc":
        return VOCSegmentation(root, split, transforms, cache_root)
    from cityscapes.dataset import CityscapesSegmentation

    return CityscapesSegmentation(root, split, transforms, cache_root=cache_root)


def open_training_splits(dataset: str, root: Path, train_split: str, classes: ClassTable, crop_size: Sequence[int],
                         scale_range: Sequence[float], jitter_on_device: bool, cache: bool = False
                         ) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The split trained on (crop-first random crops; from the decoded cache in ``{root}/cache`` with ``cache``) and
    val (whole images), after the fast check."""
    if dataset == "cityscapes":  # its data check names missing masks better than opening the split would
        from cityscapes.check import check_before_run

        check_before_run(root, [train_split, "val"], needs_masks=[train_split, "val"])
    augment = train_transforms(crop_size, tuple(scale_range), jitter_on_device=jitter_on_device)
    splits = (open_split(dataset, root, train_split, classes, augment, Path(root) / CACHE_DIR if cache else None),
              open_split(dataset, root, "val", classes, eval_transforms()))
    if dataset != "cityscapes":
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
    to_train_ids(read_mask(data.masks[0]), data.classes, data.masks[0])


def ground_truth_of(dataset: str) -> str:
    """What a training run's validation scores against, in words (a protocol's ``ground_truth``)."""
    if dataset != "cityscapes":
        return f"the {dataset} masks"
    from cityscapes.dataset import GROUND_TRUTHS

    return GROUND_TRUTHS["generated"]


def open_scored_split(dataset: str, root: Path, split: str, classes: ClassTable, transforms: Callable,
                      ground_truth: str | None = None) -> tuple[SegmentationDataset, str]:
    """A split to predict and score, after its fast check, and what it is scored against in words ("" without
    labels). Cityscapes: the shipped labelIds when every frame has them, else the generated masks
    (``ground_truth`` chooses)."""
    if dataset != "cityscapes":
        data = open_split(dataset, root, split, classes, transforms)
        return data, ground_truth_of(dataset) if data.has_labels else ""
    from cityscapes.check import check_before_run
    from cityscapes.dataset import GROUND_TRUTHS, CityscapesSegmentation, choose_ground_truth

    chosen = choose_ground_truth(root, split, ground_truth)
    check_before_run(root, [split], needs_masks=[split] if chosen == "generated" and split != "test" else [])
    data = CityscapesSegmentation(root, split, transforms, ground_truth=chosen)
    return data, GROUND_TRUTHS[chosen] if data.has_labels else ""
