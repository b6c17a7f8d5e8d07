"""Figures of trained runs: training curves from saved/*/history.csv, prediction GIFs from a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cityscapes.dataset import CityscapesSegmentation
from cityscapes.files import write_csv
from cityscapes.transforms import eval_transforms
from cityscapes.visualize import CURVES, plot_per_class_iou, plot_training_curve, save_figure, save_gif, side_by_side
from deeplabv3plus.history import read_history, read_per_class_iou
from deeplabv3plus.inference import load_trained_model, predict

__all__ = ["find_runs", "save_prediction_gif", "save_training_figures", "training_summary"]

SUMMARY_COLUMNS = ["run", "iterations", "best_miou", "final_miou", "final_mean_dice", "final_pixel_accuracy",
                   "final_val_loss"]


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


def save_training_figures(save_dir: Path, out_dir: Path, runs: Sequence[str] | None = None) -> list[Path]:
    """Loss / mIoU / mean Dice / pixel accuracy curves, per-class IoU bars and a summary CSV in ``out_dir``."""
    folders = find_runs(save_dir, runs)
    histories = {folder.name: read_history(folder) for folder in folders}
    written = [save_figure(plot_training_curve(histories, keys, ylabel), Path(out_dir) / f"{stem}.png")
               for stem, (keys, ylabel) in CURVES.items()]
    per_class = {folder.name: read_per_class_iou(folder)[-1]["iou"] for folder in folders}
    written.append(save_figure(plot_per_class_iou(per_class), Path(out_dir) / "dlv3p_class_iou.png"))
    summary = Path(out_dir) / "dlv3p_summary.csv"
    write_csv(summary, training_summary(histories), SUMMARY_COLUMNS)
    return written + [summary]


def save_prediction_gif(checkpoint: Path, data_root: Path, out_path: Path | None = None, split: str = "val",
                        num_frames: int = 8, frame_ms: int = 800, device: str = "cpu") -> Path:
    """Predict the first ``num_frames`` images of a split; write image | prediction | ground truth as a GIF.

    ``out_path`` defaults to ``outputs/dlv3p_os{stride}.gif``.
    """
    model = load_trained_model(checkpoint, device)
    if out_path is None:
        out_path = Path("outputs") / f"dlv3p_os{model.config['output_stride']}.gif"
    dataset = CityscapesSegmentation(data_root, split, eval_transforms())
    frames = []
    for index in range(min(num_frames, len(dataset))):
        image, ground_truth = dataset.load(index)
        normalised, _ = dataset.transforms(image, ground_truth)  # the same pixels, read once
        probabilities = predict(model, normalised[None].to(device))
        prediction = probabilities.argmax(1)[0].cpu().numpy()
        frames.append(side_by_side(image.permute(1, 2, 0).numpy(), prediction,
                                   ground_truth.numpy() if dataset.has_labels else None))
    return save_gif(frames, out_path, frame_ms)
