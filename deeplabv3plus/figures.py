"""Figures of trained runs: training curves from saved/*/history.csv, per-class IoU over the validations, the
confusion matrix, prediction GIFs and preview frames from a checkpoint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from deeplabv3plus.datasets import open_split
from deeplabv3plus.history import read_history, read_per_class_iou
from deeplabv3plus.inference import InferenceOptions, TrainedRun, predict
from segdata.classes import ClassTable, indexed_palette
from segdata.dataset import SegmentationDataset
from segdata.files import write_csv
from segdata.pictures import new_figure, save_figure, save_gif, side_by_side
from segdata.transforms import eval_transforms

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CURVES",
    "find_runs",
    "plot_class_iou_over_validations",
    "plot_confusion_matrix",
    "plot_per_class_iou",
    "plot_training_curve",
    "prediction_frames",
    "run_classes",
    "GifOptions",
    "save_prediction_gif",
    "save_training_figures",
    "training_summary",
]

SUMMARY_COLUMNS = ["run", "classes", "iterations", "best_miou", "final_miou", "final_mean_dice", "final_pixel_accuracy",
                   "final_val_loss"]

CURVES = {  # figure file stem -> (history key(s) drawn, y label)
    "dlv3p_loss": (("train_loss", "val_loss"), "cross-entropy loss"),
    "dlv3p_miou": (("miou",), "val mIoU"),
    "dlv3p_mdice": (("mean_dice",), "val mean Dice"),
    "dlv3p_mpacc": (("pixel_accuracy",), "val pixel accuracy"),
}


def plot_training_curve(histories: dict[str, list[dict]], keys: tuple[str, ...], ylabel: str) -> Figure:
    """One panel per run (side by side, e.g. OS8 and OS16), a line per history key against iteration; a run with
    one validation is a marked point, and its title says so."""
    figure = new_figure(5.5 * len(histories), 4)
    axes = figure.subplots(1, len(histories), squeeze=False, sharey=True)[0]
    for axis, (run, history) in zip(axes, histories.items()):
        iterations = [row["iteration"] for row in history]
        single = len(history) == 1
        for key in keys:
            axis.plot(iterations, [row[key] for row in history], marker="o", markersize=8 if single else 3,
                      label=key.replace("_", " "))
        axis.set_title(f"{run} (one validation: a point, not a curve)" if single else run)
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_ylabel(ylabel)
    return figure


def plot_per_class_iou(per_class: dict[str, dict[str, float | None]]) -> Figure:
    """Grouped bars of the last validation's IoU per class, one colour per run; "n/a" where a class is absent."""
    runs = list(per_class)
    names = list(next(iter(per_class.values())))
    figure = new_figure(13, 4.5)
    axis = figure.subplots()
    width = 0.8 / len(runs)
    for offset, run in enumerate(runs):
        positions = np.arange(len(names)) + offset * width - 0.4 + width / 2
        values = [per_class[run][name] for name in names]
        axis.bar(positions, [100 * (value or 0.0) for value in values], width, label=run)
        for position, value in zip(positions, values):
            if value is None:  # absent from ground truth and prediction: no score, not a zero
                axis.text(position, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=8)
    axis.set_xticks(range(len(names)), names, rotation=60, ha="right")
    axis.set_ylabel("val IoU (%)")
    axis.set_ylim(0, 100)
    axis.legend()
    axis.set_title("Per-class IoU at the last validation")
    return figure


def find_runs(save_dir: Path, runs: Sequence[str] | None = None) -> list[Path]:
    """Run folders under ``save_dir`` that hold a history.csv (sorted), or the named ones."""
    save_dir = Path(save_dir)
    folders = [save_dir / run for run in runs] if runs else sorted(p.parent for p in save_dir.glob("*/history.csv"))
    if not folders:
        raise FileNotFoundError(f"{save_dir}: no run with a history.csv; train with train_dlv3p.py first")
    return folders


def training_summary(histories: dict[str, list[dict]]) -> list[dict]:
    """One row per run: length, best and final validation scores."""
    return [{"run": run, "iterations": rows[-1]["iteration"], "best_miou": max(row["miou"] for row in rows),
             "final_miou": rows[-1]["miou"], "final_mean_dice": rows[-1]["mean_dice"],
             "final_pixel_accuracy": rows[-1]["pixel_accuracy"], "final_val_loss": rows[-1]["val_loss"]}
            for run, rows in histories.items()]


def run_classes(folder: Path) -> ClassTable:
    """The class table a run trained with: args.json's copy (runs since 2026-12-04), else the names of its
    per_class_iou.json with Cityscapes' colours where they are Cityscapes' names, VOC's colour map otherwise."""
    args = folder / "args.json"
    if args.is_file():
        record = json.loads(args.read_text())
        if "class_table" in record:
            return ClassTable.from_dict(record["class_table"], source=str(args))
    names = tuple(read_per_class_iou(folder)[0]["iou"])
    from cityscapes.labels import CITYSCAPES_CLASSES

    if names == CITYSCAPES_CLASSES.names:
        return CITYSCAPES_CLASSES
    return ClassTable(folder.name, names, indexed_palette(len(names)), tuple((index,) for index in range(len(names))))


def save_training_figures(save_dir: Path, out_dir: Path, runs: Sequence[str] | None = None,
                          captions: dict[Path, str] | None = None) -> list[Path]:
    """Loss / mIoU / mean Dice / pixel accuracy curves, per-class IoU bars, and for each run its per-class IoU over
    the validations (in its classes' colours) and the confusion matrix of its last validation; a summary CSV; all in
    ``out_dir``. Runs of other class tables (Cityscapes beside your own data) are never drawn in one figure: each
    table's runs get their own shared figures, named ``dlv3p_{figure}_{table}.png`` when there are several, and
    titled with the table and the runs they show. ``captions`` (if given) gets each figure's, by path."""
    captions = {} if captions is None else captions
    folders = find_runs(save_dir, runs)
    tables = {folder.name: run_classes(folder) for folder in folders}
    groups: dict[tuple[str, ...], list[Path]] = {}
    for folder in folders:
        groups.setdefault(tables[folder.name].names, []).append(folder)
    histories = {folder.name: read_history(folder) for folder in folders}
    entries = {folder.name: read_per_class_iou(folder) for folder in folders}
    written = []
    for members in groups.values():
        table = tables[members[0].name]
        suffix = f"_{table.name}" if len(groups) > 1 else ""
        caption = f"class table {table.name}: {', '.join(folder.name for folder in members)}"
        group = {folder.name: histories[folder.name] for folder in members}
        figures = {f"{stem}{suffix}.png": plot_training_curve(group, keys, ylabel)
                   for stem, (keys, ylabel) in CURVES.items()}
        figures[f"dlv3p_class_iou{suffix}.png"] = plot_per_class_iou(
            {folder.name: entries[folder.name][-1]["iou"] for folder in members})
        for name, figure in figures.items():
            figure.suptitle(caption, fontsize=9)
            written.append(save_figure(figure, Path(out_dir) / name))
            captions[written[-1]] = caption
    for run, rows in entries.items():
        written.append(save_figure(plot_class_iou_over_validations(rows, tables[run].colors),
                                   Path(out_dir) / f"{run}_class_iou_over_validations.png"))
        captions[written[-1]] = f"class table {tables[run].name}: {run}"
        if "confusion_matrix" in rows[-1]:  # runs trained before it was recorded have none
            written.append(save_figure(
                plot_confusion_matrix(rows[-1]["confusion_matrix"], list(rows[-1]["iou"]),
                                      f"{run}, val at iteration {rows[-1]['iteration']}: confusion matrix (rows: "
                                      "recall, %; red: the largest confusions)"),
                Path(out_dir) / f"{run}_confusion_matrix.png"))
            captions[written[-1]] = f"class table {tables[run].name}: {run}"
    summary = Path(out_dir) / "dlv3p_summary.csv"
    rows = training_summary(histories)
    for row in rows:
        row["classes"] = tables[row["run"]].name
    write_csv(summary, rows, SUMMARY_COLUMNS)
    return written + [summary]


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "",
                          top: int = 5) -> Figure:
    """Rows (ground truth) normalised to recall, columns the prediction; the ``top`` largest confusions
    (off-diagonal shares) are written in their cells, so the classes mistaken for each other read at a glance."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    recall = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = new_figure(9, 8)
    axis = figure.subplots()
    shown = axis.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=axis, fraction=0.046, label="share of the true class's pixels")
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=70, ha="right", fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    for row in ticks:
        if recall[row, row] > 0:
            axis.text(row, row, f"{100 * recall[row, row]:.0f}", ha="center", va="center", fontsize=6,
                      color="white" if recall[row, row] > 0.5 else "black")
    off_diagonal = recall * (1 - np.eye(len(class_names)))
    for flat in np.argsort(off_diagonal, axis=None)[::-1][:top]:
        row, column = divmod(int(flat), len(class_names))
        if off_diagonal[row, column] > 0:
            axis.text(column, row, f"{100 * off_diagonal[row, column]:.0f}", ha="center", va="center", fontsize=7,
                      color="red", fontweight="bold")
    axis.set_title(title or "Confusion matrix (rows: recall, %; red: the largest confusions)")
    return figure


def plot_class_iou_over_validations(entries: Sequence[dict], colors: Sequence[Sequence[int]]) -> Figure:
    """One line per class, in its class table's colour (``colors``, RGB 0-255 in train-id order): its IoU at each
    validation of a run (the entries of per_class_iou.json); one validation is a marked point."""
    figure = new_figure(10, 5.5)
    axis = figure.subplots()
    iterations = [entry["iteration"] for entry in entries]
    names = list(entries[0]["iou"]) if entries else []
    colours = [tuple(channel / 255 for channel in colour) for colour in colors]
    for name, colour in zip(names, colours):
        values = [np.nan if entry["iou"][name] is None else 100 * entry["iou"][name] for entry in entries]
        axis.plot(iterations, values, marker="o", markersize=8 if len(entries) == 1 else 3, label=name,
                  color=colour)
    axis.set_xlabel("iteration")
    axis.set_ylabel("IoU (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1))
    axis.set_title("Per-class IoU at each validation")
    return figure


def prediction_frames(model: torch.nn.Module, dataset: SegmentationDataset, indices: Sequence[int],
                      palette: np.ndarray, device: torch.device | str,
                      amp_dtype: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """image | prediction | ground truth of the frames at ``indices`` (coloured by ``palette``, a class table's), by
    stem: what a run shows at each validation."""
    frames = {}
    for index in indices:
        image, ground_truth = dataset.load(index)
        normalised, _ = dataset.transforms(image, ground_truth)
        prediction = predict(model, normalised[None].to(device), InferenceOptions(amp_dtype=amp_dtype)).argmax(1)[0]
        prediction = prediction.cpu().numpy()
        frames[dataset.stem(index)] = side_by_side(image.permute(1, 2, 0).numpy(), prediction,
                                                   ground_truth.numpy() if dataset.has_labels else None, palette)
    return frames


@dataclass(frozen=True)
class GifOptions:
    """What a prediction GIF shows: the first ``num_frames`` frames of ``split``, ``frame_ms`` each, predicted on
    ``device``."""

    split: str = "val"
    num_frames: int = 8
    frame_ms: int = 800
    device: str = "cpu"


def save_prediction_gif(checkpoint: Path, data_root: Path, out_path: Path | None = None,
                        options: GifOptions = GifOptions()) -> Path:
    """Predict the first frames of a split of the data set the checkpoint was trained on (its layout and class table
    travel in the checkpoint); write image | prediction | ground truth as a GIF.

    ``out_path`` defaults to ``outputs/{run}.gif``, named after the checkpoint's run (another run's GIF stays).
    """
    run = TrainedRun.load(checkpoint)
    dataset = open_split(run.dataset, data_root, options.split, run.classes, eval_transforms())
    frames = prediction_frames(run.model(options.device), dataset, range(min(options.num_frames, len(dataset))),
                               run.classes.palette(), options.device)
    return save_gif(list(frames.values()), out_path or Path("outputs") / f"{run.run_name}.gif", options.frame_ms)
