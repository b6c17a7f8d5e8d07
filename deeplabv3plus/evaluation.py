"""A scored split: predicting it with a trained run, how it was scored (its protocol), the scores as a report, and the
files of its output (id PNGs, metrics.json, class_iou.csv, confusion_matrix.png; and the parts the data set's kind
has: category scores, the submission zip, its publisher's own evaluation)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from deeplabv3plus.distributed import DistributedContext, ShardSampler
from deeplabv3plus.engine import EvaluationResult, evaluate
from deeplabv3plus.figures import plot_confusion_matrix
from deeplabv3plus.inference import InferenceOptions, TrainedRun
from deeplabv3plus.metrics import category_confusion_matrix, scores_from_confusion_matrix
from deeplabv3plus.precision import dtype_name
from deeplabv3plus.protocol import EvaluationProtocol, image_size_of, recipe_in_words
from segdata.classes import ClassTable
from segdata.dataset import SegmentationDataset
from segdata.files import write_csv, write_json
from segdata.kinds import DataSetKind
from segdata.loading import loader_options
from segdata.pictures import save_figure
from segdata.prediction_files import PredictionWriter, prediction_path

__all__ = ["Evaluation", "format_report", "score_report", "scoring_protocol", "submission_zip_name",
           "write_class_scores"]

log = logging.getLogger(__name__)


def scoring_protocol(dataset: SegmentationDataset, run: TrainedRun, options: InferenceOptions,
                     eval_output_stride: int | None, ground_truth: str) -> EvaluationProtocol:
    """How a split is scored: the data (``dataset``, a split or a fixed subset of one: its images and sizes, and
    the scale they are rescaled within), the trained run (and its recipe), the inference options and the ground
    truth in words."""
    train_stride = run.model_config["output_stride"]
    slide = options.mode == "slide"
    return EvaluationProtocol(
        split=dataset.split, images=len(dataset), image_size=image_size_of(dataset.image_sizes()), mode=options.mode,
        window=options.crop if slide else None, stride=options.stride if slide else None, flip=options.flip,
        scales=options.scales, train_output_stride=train_stride, test_output_stride=eval_output_stride or train_stride,
        amp_dtype=dtype_name(options.amp_dtype), channels_last=options.channels_last, ground_truth=ground_truth,
        checkpoint_iteration=run.iteration, weights=run.weights, of_images=getattr(dataset, "of_frames", None),
        test_scale=getattr(dataset.transforms, "test_scale", None), recipe=recipe_in_words(run.settings))


def _none_for_nan(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


def _category_scores(result: EvaluationResult, categories: tuple[tuple[str, ...], tuple[int, ...]] | None) -> dict:
    """The category IoU of a data set whose kind has categories (Cityscapes' 7); nothing for the others."""
    if categories is None:
        return {}
    names, of_class = categories
    scores = scores_from_confusion_matrix(category_confusion_matrix(result.confusion.matrix, torch.as_tensor(of_class),
                                                                    len(names)))
    return {"category_mean_iou": scores["mean_iou"],
            "category_iou": {name: _none_for_nan(value) for name, value in zip(names, scores["iou"])}}


def score_report(result: EvaluationResult, protocol: EvaluationProtocol, classes: ClassTable,
                 categories: tuple[tuple[str, ...], tuple[int, ...]] | None = None) -> dict:
    """All scores of a labelled split, as plain values (per-class IoU and Dice by name; the ``categories``' too),
    protocol first; the split's loss as ``{split}_loss``."""
    scores = result.scores()
    return {
        "protocol": protocol.as_dict(),
        "mean_iou": scores["mean_iou"], "mean_dice": scores["mean_dice"], "pixel_accuracy": scores["pixel_accuracy"],
        "mean_class_accuracy": scores["mean_class_accuracy"],
        "class_iou": {name: _none_for_nan(value) for name, value in zip(classes.names, scores["iou"])},
        "class_dice": {name: _none_for_nan(value) for name, value in zip(classes.names, scores["dice"])},
        **_category_scores(result, categories),
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


def write_class_scores(path: Path, report: dict, class_names: Sequence[str]) -> None:
    """class_iou.csv: class, IoU, Dice."""
    write_csv(path, ({"class": name, "iou": report["class_iou"][name], "dice": report["class_dice"][name]}
                     for name in class_names), ["class", "iou", "dice"])


@dataclass
class Evaluation:
    """One scoring of a split (or a fixed subset of one) by a trained run: the run and its model, the split and its
    data set's kind, how it predicts, where it runs, how it is scored (``protocol``), the output's name, and what is
    written besides the id PNGs (colour and overlay PNGs; the kind's official evaluation)."""

    run: TrainedRun
    model: nn.Module
    dataset: SegmentationDataset
    kind: DataSetKind
    options: InferenceOptions
    context: DistributedContext
    protocol: EvaluationProtocol
    model_name: str
    batch_size: int = 1
    workers: int = 0
    save_color: bool = False
    official_eval: bool = False

    def predict(self, work_dir: Path) -> EvaluationResult:
        """Predict and score every frame (each process its shard; the sums are all-reduced), writing each frame's id
        PNG (and colour and overlay PNGs) into ``work_dir`` while the next batch is predicted."""
        context = self.context
        loader = DataLoader(self.dataset, self.batch_size,
                            sampler=ShardSampler(len(self.dataset), context.rank, context.world_size),
                            **loader_options(self.workers, context.device, persistent=False))
        writer = PredictionWriter(work_dir, self.run.classes, self.kind.ids_name, save_color=self.save_color)
        try:
            return evaluate(self.model, loader, context.device, self.run.classes.num_classes, self.options, writer)
        finally:
            writer.close()

    def write_outputs(self, result: EvaluationResult, work_dir: Path) -> dict | None:
        """In ``work_dir``, beside the id PNGs already written there: the kind's submission zip and, on a labelled
        split, metrics.json (the score report, with the kind's own evaluation when asked), class_iou.csv and
        confusion_matrix.png. Returns the report (None on a split without labels)."""
        # the files of this split's images (written by every rank), never leftovers of an earlier run
        predictions = [prediction_path(work_dir, self.dataset.stem(index), self.kind.ids_name)
                       for index in range(len(self.dataset))]
        if self.kind.submission is not None:
            self.kind.submission(predictions, work_dir / submission_zip_name(self.model_name, self.protocol.split))
        if not self.dataset.has_labels:
            return None
        classes = self.run.classes
        report = score_report(result, self.protocol, classes, self.kind.categories)
        if self.official_eval:
            official = self.kind.official_eval(predictions, self.dataset.label_id_files(),
                                               work_dir / "official_eval.json")
            report["official_mean_iou"] = official["averageScoreClasses"]
            report["official_category_mean_iou"] = official["averageScoreCategories"]
        write_json(work_dir / "metrics.json", report)
        title = (f"{self.model_name}, {self.protocol.split}: confusion matrix (rows: recall, %; red: the largest "
                 "confusions)")
        save_figure(plot_confusion_matrix(result.confusion.matrix.cpu().tolist(), classes.names, title),
                    work_dir / "confusion_matrix.png")
        write_class_scores(work_dir / "class_iou.csv", report, classes.names)
        return report

    def report(self, result: EvaluationResult, report: dict | None, final_dir: Path) -> None:
        """Where the split's outputs are, its scores (labelled splits) and the speed, on stdout."""
        ids, split, subset = self.kind.ids_name, self.protocol.split, self.protocol.of_images
        zip_path = final_dir / submission_zip_name(self.model_name, split)
        where = "" if self.kind.submission is None else (
            f"; upload {zip_path}" if split == "test" and not subset
            else f"; zipped to {zip_path} ({'a subset' if subset else split}: not for the server)")
        extra = [f"{len(list((final_dir / name).rglob('*.png')))} {name} PNGs in {final_dir / name}"
                 for name in ("color", "overlay") if (final_dir / name).is_dir()]
        log.info("%d %s PNGs in %s%s%s", self.protocol.images, ids, final_dir / ids,
                 "".join(f", {text}" for text in extra), where)
        if report is not None:
            print(format_report(report))
        print(f"{result.images} images: {1000 * result.seconds_per_image:.1f} ms per image, peak memory "
              f"{result.peak_memory_mb:.0f} MiB ({result.memory})")
