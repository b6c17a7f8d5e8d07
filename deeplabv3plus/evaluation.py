"""A scored split: predicting it, how it was scored (its protocol), the scores as a report, and the files of its
output (id PNGs, metrics.json, class_iou.csv, confusion_matrix.png, the labelIds zip, the official evaluation)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cityscapes.submission import make_submission_zip
from deeplabv3plus.checkpoint import model_config, weights_digest
from deeplabv3plus.datasets import ids_name
from deeplabv3plus.distributed import ShardSampler
from deeplabv3plus.engine import EvaluationResult, evaluate
from deeplabv3plus.figures import plot_confusion_matrix
from deeplabv3plus.inference import InferenceOptions
from deeplabv3plus.metrics import category_confusion_matrix, scores_from_confusion_matrix
from deeplabv3plus.precision import dtype_name
from deeplabv3plus.protocol import EvaluationProtocol, image_size_of
from segdata.classes import IGNORE_INDEX, ClassTable
from segdata.files import write_csv, write_json
from segdata.loading import loader_options
from segdata.pictures import save_figure
from segdata.prediction_files import PredictionWriter, prediction_path

__all__ = ["evaluation_protocol", "format_report", "predict_split", "report_outputs", "score_report",
           "submission_zip_name", "write_class_scores", "write_split_outputs"]

log = logging.getLogger(__name__)


def evaluation_protocol(split: str, dataset, checkpoint: dict, options: InferenceOptions,
                        eval_output_stride: int | None, ground_truth: str) -> EvaluationProtocol:
    """How a split is scored: the data (``dataset``: its image count and sizes), the checkpoint, the inference
    options and the ground truth in words."""
    train_stride = model_config(checkpoint)["output_stride"]
    slide = options.mode == "slide"
    return EvaluationProtocol(
        split=split, images=len(dataset), image_size=image_size_of(dataset.image_sizes()), mode=options.mode,
        window=options.crop if slide else None, stride=options.stride if slide else None, flip=options.flip,
        scales=options.scales, train_output_stride=train_stride, test_output_stride=eval_output_stride or train_stride,
        amp_dtype=dtype_name(options.amp_dtype), channels_last=options.channels_last, ground_truth=ground_truth,
        checkpoint_iteration=checkpoint.get("iteration"), weights=weights_digest(checkpoint["model"]),
        of_images=getattr(dataset, "of_frames", None))


def _none_for_nan(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


def _category_scores(result: EvaluationResult, classes: ClassTable) -> dict:
    """Cityscapes' category IoU (its 7 categories) of a Cityscapes split; nothing for other data sets."""
    if classes.name != "cityscapes":
        return {}
    from cityscapes.labels import CATEGORY_NAMES, TRAIN_ID_TO_CATEGORY_ID

    categories = scores_from_confusion_matrix(category_confusion_matrix(
        result.confusion.matrix, torch.as_tensor(TRAIN_ID_TO_CATEGORY_ID), len(CATEGORY_NAMES)))
    return {"category_mean_iou": categories["mean_iou"],
            "category_iou": {name: _none_for_nan(value) for name, value in zip(CATEGORY_NAMES, categories["iou"])}}


def score_report(result: EvaluationResult, protocol: EvaluationProtocol, classes: ClassTable) -> dict:
    """All scores of a labelled split, as plain values (per-class IoU and Dice by name; Cityscapes' categories too),
    protocol first."""
    scores = result.scores()
    return {
        "protocol": protocol.as_dict(),
        "mean_iou": scores["mean_iou"], "mean_dice": scores["mean_dice"], "pixel_accuracy": scores["pixel_accuracy"],
        "mean_class_accuracy": scores["mean_class_accuracy"],
        "class_iou": {name: _none_for_nan(value) for name, value in zip(classes.names, scores["iou"])},
        "class_dice": {name: _none_for_nan(value) for name, value in zip(classes.names, scores["dice"])},
        **_category_scores(result, classes),
        f"{protocol.split}_loss": result.loss, "images": result.images,  # the loss of the split scored
        "seconds_per_image": result.seconds_per_image, "peak_memory_mb": result.peak_memory_mb,
        "confusion_matrix": result.confusion.matrix.tolist(),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def format_report(report: dict) -> str:
    """The protocol in words, the per-class and per-category table, then the means."""
    lines = [f"protocol: {report['protocol']['description']}", f"{'class':<16}{'IoU':>8}{'Dice':>8}"]
    for name in report["class_iou"]:
        lines.append(f"{name:<16}{_percent(report['class_iou'][name]):>8}{_percent(report['class_dice'][name]):>8}")
    if "category_iou" in report:
        lines.append(f"{'category':<16}{'IoU':>8}")
        lines += [f"{name:<16}{_percent(iou):>8}" for name, iou in report["category_iou"].items()]
    categories = f"  category mIoU {100 * report['category_mean_iou']:.2f}" if "category_mean_iou" in report else ""
    lines.append(f"mIoU {100 * report['mean_iou']:.2f}  mean Dice {100 * report['mean_dice']:.2f}  "
                 f"pixel accuracy {100 * report['pixel_accuracy']:.2f}  mean class accuracy "
                 f"{100 * report['mean_class_accuracy']:.2f}{categories}")
    if "official_mean_iou" in report:
        lines.append(f"cityscapesscripts evalPixelLevelSemanticLabeling: mIoU {100 * report['official_mean_iou']:.2f}, "
                     f"category mIoU {100 * report['official_category_mean_iou']:.2f}")
    return "\n".join(lines)


def submission_zip_name(model_name: str, split: str) -> str:
    """``{model_name}_{split}_labelIds.zip``: the zip of a split's labelIds PNGs."""
    return f"{model_name}_{split}_labelIds.zip"


def write_split_outputs(result: EvaluationResult, dataset, protocol: EvaluationProtocol, work_dir: Path,
                        model_name: str, official_eval: bool, classes: ClassTable) -> dict | None:
    """In ``work_dir``, beside the id PNGs already written there: for Cityscapes the zip of its labelIds PNGs and, on
    a labelled split, metrics.json (the score report, with cityscapesscripts' own scores when ``official_eval``),
    class_iou.csv and confusion_matrix.png. Returns the report (None on a split without labels)."""
    # the files of this split's images (written by every rank), never leftovers of an earlier run
    prediction_files = [prediction_path(work_dir, dataset.stem(index), ids_name(classes))
                        for index in range(len(dataset))]
    if classes.name == "cityscapes":
        make_submission_zip(prediction_files, work_dir / submission_zip_name(model_name, protocol.split))
    if not dataset.has_labels:
        return None
    report = score_report(result, protocol, classes)
    if official_eval:
        from cityscapes.official_eval import evaluate_official

        official = evaluate_official(prediction_files, dataset.label_id_files(),
                                     export_file=work_dir / "official_eval.json")
        report["official_mean_iou"] = official["averageScoreClasses"]
        report["official_category_mean_iou"] = official["averageScoreCategories"]
    write_json(work_dir / "metrics.json", report)
    title = f"{model_name}, {protocol.split}: confusion matrix (rows: recall, %; red: the largest confusions)"
    save_figure(plot_confusion_matrix(result.confusion.matrix.cpu().tolist(), classes.names, title),
                work_dir / "confusion_matrix.png")
    write_class_scores(work_dir / "class_iou.csv", report, classes.names)
    return report


def write_class_scores(path: Path, report: dict, class_names: Sequence[str]) -> None:
    """class_iou.csv: class, IoU, Dice."""
    write_csv(path, ({"class": name, "iou": report["class_iou"][name], "dice": report["class_dice"][name]}
                     for name in class_names), ["class", "iou", "dice"])


def predict_split(model: torch.nn.Module, dataset, classes: ClassTable, options: InferenceOptions,
                  device: torch.device, work_dir: Path, *, rank: int = 0, world_size: int = 1, batch_size: int = 1,
                  workers: int = 0, save_color: bool = False) -> EvaluationResult:
    """Predict and score every frame of a split (each process its shard; the sums are all-reduced), writing each
    frame's id PNG (and colour and overlay PNGs) into ``work_dir`` while the next batch is predicted."""
    loader = DataLoader(dataset, batch_size, sampler=ShardSampler(len(dataset), rank, world_size),
                        **loader_options(workers, device, persistent=False))
    writer = PredictionWriter(work_dir, classes, ids_name(classes), save_color=save_color)
    try:
        return evaluate(model, loader, device, classes.num_classes, ignore_index=IGNORE_INDEX,
                        channels_last=options.channels_last, on_prediction=writer, description=dataset.split,
                        **options.predict_kwargs())
    finally:
        writer.close()


def report_outputs(result: EvaluationResult, report: dict | None, protocol: EvaluationProtocol, classes: ClassTable,
                   final_dir: Path, model_name: str) -> None:
    """Where a split's outputs are, its scores (labelled splits) and the speed, on stdout."""
    kind, split, frames = ids_name(classes), protocol.split, protocol.images
    zip_path = final_dir / submission_zip_name(model_name, split)
    where = "" if kind != "labelIds" else (f"; upload {zip_path}" if split == "test" and not protocol.of_images
                                           else f"; zipped to {zip_path} ({'a subset' if protocol.of_images else split}"
                                                ": not for the server)")
    extra = [f"{len(list((final_dir / name).rglob('*.png')))} {name} PNGs in {final_dir / name}"
             for name in ("color", "overlay") if (final_dir / name).is_dir()]
    log.info("%d %s PNGs in %s%s%s", frames, kind, final_dir / kind, "".join(f", {text}" for text in extra), where)
    if report is not None:
        print(format_report(report))
    print(f"{result.images} images: {1000 * result.seconds_per_image:.1f} ms per image, peak memory "
          f"{result.peak_memory_mb:.0f} MiB ({result.memory})")
