"""Check a data set before training: every image paired with its mask, every file decodable, image and mask of one
size, every mask value (or colour) in the class table (with the likely cause where not), and how often each class
occurs, as a table and a figure.

    python -m segdata.check --dataset folder --data-root data/own --classes data/own/classes.json
    python -m segdata.check --dataset voc --data-root data/VOCdevkit --splits train val

Cityscapes has a check of its own (``python -m cityscapes.check``). Exit status 1 when a problem is found.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segdata.classes import IGNORE_INDEX, ClassTable
from segdata.flags import Parser, report_error
from segdata.folder import FolderSegmentation, find_pairs
from segdata.kinds import GENERIC_KINDS, data_root_help
from segdata.pictures import new_figure, save_figure

if TYPE_CHECKING:  # matplotlib is imported where the figure is drawn (0.6 s that the training scripts need not pay)
    from matplotlib.figure import Figure

__all__ = ["SplitReport", "check_split", "group_problems", "plot_class_frequencies", "report_problems"]


@dataclass
class SplitReport:
    """What the check found in one split: frames, problems (one line each), pixels per train id and ignored."""

    split: str
    frames: int = 0
    problems: list[str] = field(default_factory=list)
    pixels: Counter = field(default_factory=Counter)
    labelled_frames: int = 0  # frames whose mask was read and counted
    source: str = ""  # where the split was found, in words

    def frequency_rows(self, classes: ClassTable) -> list[tuple[str, int, float]]:
        """(class, pixels, share of the labelled pixels) in train-id order."""
        labelled = sum(count for train_id, count in self.pixels.items() if train_id != IGNORE_INDEX) or 1
        return [(name, self.pixels[index], self.pixels[index] / labelled) for index, name in enumerate(classes.names)]


def check_split(dataset: str, root: Path, split: str, classes: ClassTable) -> SplitReport:
    """Open every image and mask of a split; the problems found and the class pixel counts."""
    report = SplitReport(split)
    if dataset == "folder":  # every pairing problem (a split that is not there: an error of the flags)
        report.problems += find_pairs(root, split)[3]
    try:
        if dataset == "folder":  # and the frames that pair, counted all the same
            data = FolderSegmentation(root, split, classes, good_frames=True)
        else:
            data = GENERIC_KINDS[dataset].open_split(root, split, classes, None, None)
    except (FileNotFoundError, ValueError) as error:
        if not report.problems:  # a split whose every frame has a problem already named has no frame left to open
            report.problems.append(str(error))
        return report
    report.source = getattr(data, "source", "")
    report.frames = len(data)
    for index in range(len(data)):
        try:
            _, train_ids = data.read_arrays(index)  # what training reads: every error it would meet, one per frame
        except (FileNotFoundError, ValueError) as error:
            report.problems.append(str(error))
            continue
        if data.has_labels:
            ids, counts = np.unique(train_ids, return_counts=True)
            report.pixels.update(dict(zip(ids.tolist(), counts.tolist())))
            report.labelled_frames += 1
    if data.has_labels and report.labelled_frames:
        absent = [name for name, pixels, _ in report.frequency_rows(classes) if pixels == 0]
        if absent and report.pixels[IGNORE_INDEX] and len(absent) == classes.num_classes - 1:
            report.problems.append(f"{split}: only one class has pixels ({', '.join(absent)} none) and the rest is "
                                   "ignored: masks saved as 0/255 with 255 ignored? give the class \"values\": [255]")
    return report


def plot_class_frequencies(reports: list[SplitReport], classes: ClassTable) -> Figure:
    """Bars of each class's share of the labelled pixels, one colour per split."""
    figure = new_figure(max(6.0, 0.5 * classes.num_classes + 2), 4)
    axis = figure.subplots()
    width = 0.8 / max(len(reports), 1)
    for offset, report in enumerate(reports):
        shares = [100 * share for _, _, share in report.frequency_rows(classes)]
        axis.bar(np.arange(classes.num_classes) + offset * width - 0.4 + width / 2, shares, width, label=report.split)
    axis.set_xticks(range(classes.num_classes), classes.names, rotation=60, ha="right")
    axis.set_ylabel("share of labelled pixels (%)")
    axis.set_title(f"{classes.name}: class frequencies")
    axis.legend()
    return figure


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m segdata.check", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--dataset", choices=list(GENERIC_KINDS), default="folder",
                        help="the data set's layout (Cityscapes: python -m cityscapes.check)")
    parser.add_argument("--data-root", "--data_root", type=Path, default=Path("data"),
                        help=data_root_help(GENERIC_KINDS))
    parser.add_argument("--classes", type=Path, default=None, help="class table of --dataset folder")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to check")
    parser.add_argument("--figure", type=Path, default=None,
                        help="where to write the class-frequency figure, replacing a file there (default: "
                             "outputs/check/{name}_classes.png)")
    return parser


def main(args: argparse.Namespace) -> int:
    try:
        classes = GENERIC_KINDS[args.dataset].class_table(args.classes)
        reports = [check_split(args.dataset, args.data_root, split, classes) for split in args.splits]
        figure_path = args.figure or Path("outputs") / "check" / f"{classes.name}_classes.png"
        counted = [report for report in reports if report.labelled_frames]
        replaced = figure_path.exists()
        if counted:
            save_figure(plot_class_frequencies(counted, classes), figure_path)
    except (OSError, ValueError, KeyboardInterrupt) as error:
        return report_error(error)
    for report in reports:
        if report.source:
            print(f"{report.split}: read from {report.source}")
        if not report.labelled_frames:
            print(f"{report.split}: {report.frames} frames, no pixel counted (no mask could be read without a problem)")
            continue
        print(f"{report.split}: {report.frames} frames, {sum(report.pixels.values())} pixels "
              f"({report.pixels[IGNORE_INDEX]} ignored)" + (f", counted in the {report.labelled_frames} frames read "
                                                           "without a problem" if report.labelled_frames < report.frames
                                                           else ""))
        for name, pixels, share in report.frequency_rows(classes):
            print(f"  {name:<20}{pixels:>12}{100 * share:>8.2f}%")
    if counted:
        print(f"class frequencies: {figure_path}" + (" (replaced)" if replaced else ""))
    else:
        print("class frequencies: not drawn, as no mask could be read" + (f" ({figure_path} is left as it was)"
                                                                          if replaced else ""))
    return report_problems(group_problems([problem for report in reports for problem in report.problems]),
                           args.data_root)


def group_problems(problems: list[str], shown: int = 5) -> list[str]:
    """Problems of one kind (``FILE: what (details); fix``, the same what and fix) on one line: how many, the first
    in full and the next ``shown`` files (or, for lines of one list, ``LIST: N lines ...`` and their line numbers)
    instead of a line each. A "did you mean" hint belongs to its line: it does not split a group."""
    groups: dict[tuple[str, str, str], list[tuple[str, str, str, str | None]]] = {}
    for problem in problems:
        file, _, rest = problem.partition(": ")
        what, _, fix = rest.rpartition("; ") if "; " in rest else (rest, "", "")
        line = re.match(r"line (\d+) ", what)
        kind = re.sub(r"\([^)]*\)", "(...)", re.sub(r"\S*\d\S*", "N", what))
        fix_kind = re.sub(r"did you mean [^?]*\?", "did you mean ...?", fix)
        groups.setdefault((file if line else "", kind, fix_kind), []).append(
            (file, what, fix, line.group(1) if line else None))
    lines = []
    for (list_file, _, _), found in groups.items():
        file, what, fix, _ = found[0]
        first = f"{what}" + (f"; {fix}" if fix else "")
        if len(found) == 1:
            lines.append(f"{file}: {first}")
            continue
        if list_file:
            numbers = list(dict.fromkeys(number for _, _, _, number in found))  # a line may hold two problems
            more = f" and {len(numbers) - shown} more" if len(numbers) > shown else ""
            lines.append(f"{list_file}: {len(numbers)} lines: {first} (the first; the same at lines "
                         f"{', '.join(numbers[:shown])}{more})")
            continue
        named = ", ".join(other for other, _, _, _ in found[:shown])
        more = f" and {len(found) - shown} more" if len(found) > shown else ""
        lines.append(f"{len(found)} files: {what} (the first; the same in {named}{more})" + (f"; {fix}" if fix
                                                                                           else ""))
    return lines


def report_problems(problems: list[str], data_root: Path, note: str = "") -> int:
    """Every problem on a line of its own (stderr) and the exit status of a check: 1 with problems, else 0 after
    ``{data_root}: all checks passed{note}``."""
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); the first: {problems[0]}", file=sys.stderr)
        return 1
    print(f"{data_root}: all checks passed{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
