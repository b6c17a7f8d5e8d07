"""A data-set check before hours of training: counts, pairing, sizes, stale masks, label values, disk space.

CLI::

    python -m cityscapes.check --data-root data [--splits train val test] [--fast]

The fast part (file names and times, no pixel reads) is what train_dlv3p.py and
test_dlv3p.py run at start-up; the full check also opens every file. Each
problem names the file and the command that fixes it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cityscapes.labels import IGNORE_INDEX, LABELS, NUM_CLASSES
from cityscapes.paths import (
    GENERATED_DIR,
    MASK_KINDS,
    SPLITS,
    generated_mask_path,
    image_files,
    polygon_files,
    polygons_path,
    provided_mask_path,
    stem_of,
)
from segdata.check import report_problems
from segdata.files import is_up_to_date, read_png
from segdata.flags import Parser

__all__ = ["OFFICIAL_COUNTS", "DataCheckError", "Problem", "SplitReport", "check_data", "check_before_run"]

OFFICIAL_COUNTS = {"train": 2975, "val": 500, "test": 1525}
"""Images (and polygon files) per split of the full gtFine Cityscapes."""
CACHE_BYTES_PER_PIXEL = 4  # decoded uint8 RGB image + uint8 trainId mask
VALID_LABEL_IDS = np.array(sorted(label.id for label in LABELS if label.id >= 0))


class DataCheckError(ValueError):
    """The data root has a problem that stops a run; the message names the file and the fixing command."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data: what (naming the file) and the command or step that fixes it."""

    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.message}; fix: {self.fix}"


@dataclass
class SplitReport:
    """What one split holds, and what is wrong with it."""

    split: str
    images: int = 0
    polygons: int = 0
    provided: int = 0  # shipped gtFine labelIds
    generated: int = 0  # frames with all three generated masks
    problems: list[Problem] = field(default_factory=list)
    generated_bytes: int = 0  # disk the generated masks take (or would take)
    cache_bytes: int = 0  # disk the decoded cache would take
    labelled_share: float | None = None  # of the generated trainId masks' pixels, those not ignored (full check)

    def counts_line(self) -> str:
        official = OFFICIAL_COUNTS[self.split]
        looks_full = self.images >= official // 10  # a real extraction, not the demo set
        reference = f" (full set: {official})" if looks_full else ""
        labelled = "" if self.labelled_share is None else f", labelled pixels {100 * self.labelled_share:.1f}%"
        return (f"{self.split:<5} images {self.images}{reference}, polygon files {self.polygons}, shipped labelIds "
                f"{self.provided}, generated masks {self.generated}{labelled}")


def _regenerate(root: Path, overwrite: bool = False) -> str:
    return f"python -m cityscapes.generate_gt --data-root {root}" + (" --overwrite" if overwrite else "")


def scan_split(root: Path, split: str, needs_masks: bool, strict: bool = True) -> SplitReport:
    """The fast part: counts, image/annotation pairing, generated masks missing or stale (no pixel reads).

    ``strict`` also reports what a run can do without: fewer images than the full
    split (but more than a demo set) and shipped labelIds missing for some frames.
    """
    root = Path(root)
    report = SplitReport(split)
    images = {stem_of(path): path for path in image_files(root, split)}
    annotations = {stem_of(path): path for path in polygon_files(root, split)}
    report.images, report.polygons = len(images), len(annotations)
    report.provided = sum(provided_mask_path(root, split, stem).exists() for stem in images)
    official = OFFICIAL_COUNTS[split]
    if strict and official // 10 <= report.images < official:
        report.problems.append(Problem(f"{root / 'leftImg8bit' / split}: {report.images} images, the full split has "
                                       f"{official}", f"re-extract leftImg8bit_trainvaltest.zip into {root}"))
    without_annotation = sorted(set(images) - set(annotations))
    if without_annotation and annotations:  # a split with no annotation at all is reported by the caller
        report.problems.append(
            Problem(
                f"{images[without_annotation[0]]}: no {polygons_path(root, split, without_annotation[0]).name} "
                f"({len(without_annotation)} {split} images have no annotation)",
                f"re-extract gtFine_trainvaltest.zip into {root}",
            )
        )
    without_image = sorted(set(annotations) - set(images))
    if without_image:
        report.problems.append(Problem(
            f"{annotations[without_image[0]]}: no image for this annotation ({len(without_image)} in {split})",
            f"re-extract leftImg8bit_trainvaltest.zip into {root}"))
    if strict and 0 < report.provided < report.images:
        missing = next(stem for stem in images if not provided_mask_path(root, split, stem).exists())
        report.problems.append(
            Problem(
                f"{provided_mask_path(root, split, missing)}: missing ({report.images - report.provided}"
                f" {split} frames lack their shipped labelIds)",
                f"re-extract gtFine_trainvaltest.zip into {root}",
            )
        )
    stale = []
    for stem in sorted(set(images) & set(annotations)):
        masks = [generated_mask_path(root / GENERATED_DIR, split, stem, kind) for kind in MASK_KINDS]
        if not all(is_up_to_date(mask, annotations[stem]) for mask in masks):
            stale.append(masks[1])
        else:
            report.generated += 1
            report.generated_bytes += sum(mask.stat().st_size for mask in masks)
    if stale and needs_masks:
        old = [mask for mask in stale if mask.exists()]
        what = (f"{old[0]}: older than its polygon file or empty" if old else f"{stale[0]}: missing")
        report.problems.append(Problem(f"{what} ({len(stale)} of {len(annotations)} {split} frames lack up-to-date "
                                       "generated masks)", _regenerate(root)))
    return report


def check_pixels(root: Path, split: str, report: SplitReport, labelled: bool = True) -> None:
    """The slow part: every file opened; sizes compared; label values checked; disk space estimated. With
    ``labelled`` (train, val), a trainId mask without any labelled pixel is a problem, and the share of labelled
    pixels is reported."""
    root = Path(root)
    first: dict[str, Problem] = {}
    counts: dict[str, int] = {}

    def note(kind: str, problem: Problem) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        first.setdefault(kind, problem)

    pixels, mask_pixels, labelled_pixels = 0, 0, 0
    for image_path in image_files(root, split):
        stem = stem_of(image_path)
        try:
            image = read_png(image_path)
        except (FileNotFoundError, ValueError):
            note("image", Problem(f"{image_path}: cannot be decoded (truncated or not a PNG)",
                                  f"re-extract leftImg8bit_trainvaltest.zip into {root}"))
            continue
        size = image.shape[:2]
        pixels += size[0] * size[1]
        annotation = polygons_path(root, split, stem)
        if annotation.exists():
            try:
                data = json.loads(annotation.read_text())
                annotated = (int(data["imgHeight"]), int(data["imgWidth"]))
            except (ValueError, KeyError, TypeError, OSError):
                note(
                    "json",
                    Problem(
                        f"{annotation}: not a readable polygons JSON", f"re-extract gtFine_trainvaltest.zip into {root}"
                    ),
                )
            else:
                if annotated != size:
                    note("size", Problem(f"{image_path}: is {size[0]}x{size[1]} but its annotation says "
                                         f"{annotated[0]}x{annotated[1]}; the image does not match its annotation",
                                         f"re-extract leftImg8bit_trainvaltest.zip into {root}"))
        train_ids = generated_mask_path(root / GENERATED_DIR, split, stem, "labelTrainIds")
        if train_ids.exists():
            try:
                mask = read_png(train_ids)
            except (FileNotFoundError, ValueError):
                note("generated", Problem(f"{train_ids}: cannot be decoded", _regenerate(root, overwrite=True)))
            else:
                if mask.shape != size:
                    note("generated_size", Problem(f"{train_ids}: is {mask.shape[0]}x{mask.shape[1]} but its image is "
                                                   f"{size[0]}x{size[1]}", _regenerate(root, overwrite=True)))
                elif ((mask >= NUM_CLASSES) & (mask != IGNORE_INDEX)).any():
                    note("generated_values", Problem(f"{train_ids}: holds values that are not trainIds",
                                                     _regenerate(root, overwrite=True)))
                elif labelled:
                    count = int(np.count_nonzero(mask != IGNORE_INDEX))
                    mask_pixels, labelled_pixels = mask_pixels + mask.size, labelled_pixels + count
                    if count == 0:
                        note(
                            "unlabelled",
                            Problem(
                                f"{train_ids}: has no labelled pixel (every value is {IGNORE_INDEX}, "
                                "ignored), so training learns nothing from it",
                                f"check that {annotation} holds evaluated classes, then "
                                + _regenerate(root, overwrite=True),
                            ),
                        )
        provided = provided_mask_path(root, split, stem)
        if provided.exists():
            try:
                label_ids = read_png(provided)
            except (FileNotFoundError, ValueError):
                note(
                    "provided",
                    Problem(f"{provided}: cannot be decoded", f"re-extract gtFine_trainvaltest.zip into {root}"),
                )
            else:
                if label_ids.shape != size or not np.isin(np.unique(label_ids), VALID_LABEL_IDS).all():
                    note("provided_values", Problem(f"{provided}: size or label values do not fit its image and the "
                                                    "label table", f"re-extract gtFine_trainvaltest.zip into {root}"))
    for kind, problem in first.items():
        extra = f" (and {counts[kind] - 1} more in {split})" if counts[kind] > 1 else ""
        report.problems.append(Problem(problem.message + extra, problem.fix))
    report.cache_bytes = pixels * CACHE_BYTES_PER_PIXEL
    if mask_pixels:
        report.labelled_share = labelled_pixels / mask_pixels
    if report.generated == 0 and report.images:
        report.generated_bytes = int(pixels * 0.05)  # about 100 KB per 1024x2048 frame for the three PNGs


def check_data(root: Path, splits: Sequence[str] = SPLITS, pixels: bool = True,
               needs_masks: Sequence[str] = ("train", "val"), strict: bool = True) -> list[SplitReport]:
    """Check each split (the fast part, and with ``pixels`` every file); a report per split.

    ``needs_masks``: splits whose generated masks must be there and up to date;
    ``strict``: see :func:`scan_split`.
    """
    root = Path(root)
    reports = []
    for split in splits:
        report = scan_split(root, split, needs_masks=split in needs_masks, strict=strict)
        absent = []
        if not root.is_dir():
            absent.append(
                Problem(f"{root}: no such folder", "pass --data-root the folder holding leftImg8bit/ and gtFine/")
            )
        if report.images == 0:
            absent.append(Problem(f"{root / 'leftImg8bit' / split}: no *_leftImg8bit.png images",
                                  f"extract leftImg8bit_trainvaltest.zip into {root} (or pass --data-root)"))
        if report.polygons == 0 and split in needs_masks:
            absent.append(Problem(f"{root / 'gtFine' / split}: no *_gtFine_polygons.json",
                                  f"extract gtFine_trainvaltest.zip into {root} (or pass --data-root)"))
        report.problems[:0] = absent
        if pixels:
            check_pixels(root, split, report, labelled=split in needs_masks)
        reports.append(report)
    return reports


def check_before_run(root: Path, splits: Sequence[str], needs_masks: Sequence[str]) -> None:
    """The fast check of the splits a run reads; DataCheckError with the first problem and its fix."""
    for report in check_data(root, splits, pixels=False, needs_masks=needs_masks, strict=False):
        if report.problems:
            raise DataCheckError(f"{report.problems[0]} (python -m cityscapes.check --data-root {root} checks "
                                 "every file)")


def _megabytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m cityscapes.check", description="Check a Cityscapes data root before training or evaluation."
    )
    parser.add_argument("--data-root", "--data_root", type=Path, default=Path("data"),
                        help="data set root holding leftImg8bit/ and gtFine/ (default: data)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to check")
    parser.add_argument("--fast", action="store_true", help="names, counts and times only (no file is opened)")
    return parser


def main(args: argparse.Namespace) -> int:
    reports = check_data(args.data_root, args.splits, pixels=not args.fast)
    for report in reports:
        print(report.counts_line())
    if not args.fast:
        generated = sum(report.generated_bytes for report in reports)
        cache = sum(report.cache_bytes for report in reports)
        print(f"disk: generated masks {_megabytes(generated)}, decoded cache (python -m cityscapes.cache) "
              f"{_megabytes(cache)}")
    return report_problems([problem for report in reports for problem in report.problems], args.data_root,
                           " (fast check; run without --fast to open every file)" if args.fast else "")


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
