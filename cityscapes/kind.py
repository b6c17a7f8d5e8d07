"""Cityscapes as a ``--dataset`` kind (``segdata.kinds.DataSetKind``): its label table, its layout, its fast check,
its two ground truths (the shipped labelIds or the masks generated from the polygons), and the parts only it has:
category scores, the labelIds submission zip and cityscapesscripts' official evaluation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cityscapes.check import check_before_run
from cityscapes.dataset import GROUND_TRUTHS, CityscapesSegmentation, choose_ground_truth
from cityscapes.labels import CATEGORY_NAMES, CITYSCAPES_CLASSES, TRAIN_ID_TO_CATEGORY_ID
from cityscapes.submission import make_submission_zip
from segdata.classes import ClassTable
from segdata.kinds import DataSetKind

__all__ = ["CITYSCAPES"]


def _check(root: Path, splits: list[str]) -> None:
    check_before_run(root, splits, needs_masks=[split for split in splits if split != "test"])


def _open_scored_split(root: Path, split: str, classes: ClassTable, transforms: Callable,
                       ground_truth: str | None) -> tuple[CityscapesSegmentation, str]:
    """The shipped labelIds when every frame has them (as the server scores), else the generated masks."""
    chosen = choose_ground_truth(root, split, ground_truth)
    check_before_run(root, [split], needs_masks=[split] if chosen == "generated" and split != "test" else [])
    data = CityscapesSegmentation(root, split, transforms, ground_truth=chosen)
    return data, GROUND_TRUTHS[chosen] if data.has_labels else ""


def _official_eval(predictions: list[Path], ground_truths: list[Path], report: Path) -> dict:
    from cityscapes.official_eval import evaluate_official  # cityscapesscripts' evaluation, imported when asked

    return evaluate_official(predictions, ground_truths, export_file=report)


CITYSCAPES = DataSetKind(
    "cityscapes",
    lambda root, split, classes, transforms, cache_root: CityscapesSegmentation(root, split, transforms,
                                                                                cache_root=cache_root),
    classes=CITYSCAPES_CLASSES, check_before_run=_check, open_scored_split=_open_scored_split,
    training_ground_truth=GROUND_TRUTHS["generated"], ids_name="labelIds",
    layout="leftImg8bit/, gtFine/ and the masks generate_gt writes, generated_gt/",
    check="python -m cityscapes.check --data-root {root}", title="Cityscapes",
    categories=(CATEGORY_NAMES, tuple(TRAIN_ID_TO_CATEGORY_ID.tolist())),
    submission=make_submission_zip, official_eval=_official_eval)
