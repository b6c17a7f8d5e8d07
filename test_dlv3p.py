"""Evaluate a trained DeepLabV3+ checkpoint and write server-ready predictions.

    python test_dlv3p.py --model_weights_path saved/dlv3p_resnet50_os8/best.pth --split val
    python test_dlv3p.py --model_weights_path saved/dlv3p_resnet50_os8/best.pth --split test

On a split with labels it prints and saves mIoU, mean Dice, pixel accuracy, mean
class accuracy, per-class and category IoU; on every split it writes one
full-resolution labelIds PNG per image to outputs/{model_name}/{split}/labelIds/
and a zip of them to upload to the Cityscapes server.

Scores are computed against the gtFine/*_gtFine_labelIds.png the data set ships
(as the evaluation server and cityscapesscripts do) whenever every frame has
one, and every score states how it was obtained (its protocol).
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cityscapes.check import check_before_run
from cityscapes.dataset import GROUND_TRUTHS, CityscapesSegmentation, missing_provided_masks
from cityscapes.files import missing_folders, remove_empty_folders, write_csv, write_json
from cityscapes.labels import CATEGORY_NAMES, CLASS_NAMES, IGNORE_INDEX, TRAIN_ID_TO_CATEGORY_ID
from cityscapes.paths import GENERATED_DIR, SPLITS, generated_mask_path, provided_mask_path, stem_of
from cityscapes.submission import PredictionWriter, make_submission_zip, prediction_path
from cityscapes.transforms import eval_transforms
from cityscapes.visualize import save_figure
from deeplabv3plus import cli
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.checkpoint import load_checkpoint, weights_digest
from deeplabv3plus.distributed import ShardSampler, init_distributed_mode
from deeplabv3plus.engine import EvaluationResult, evaluate
from deeplabv3plus.figures import plot_confusion_matrix
from deeplabv3plus.inference import check_inference_options, load_trained_model
from deeplabv3plus.metrics import category_confusion_matrix, scores_from_confusion_matrix
from deeplabv3plus.precision import AMP_DTYPES, resolve_precision
from deeplabv3plus.protocol import EvaluationProtocol, image_size_of

log = logging.getLogger("test_dlv3p")


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="test_dlv3p.py", description=__doc__.splitlines()[0])
    model = parser.add_argument_group("Model")
    model.add_argument("--model-weights-path", "--model_weights_path", type=Path, required=True,
                       help="checkpoint written by train_dlv3p.py (saved/{run}/best.pth)")
    model.add_argument("--backbone", choices=list(BACKBONES), default=None,
                       help="must match the checkpoint if given (it is read from the checkpoint)")
    model.add_argument("--output-stride", "--output_stride", type=int, choices=sorted(DILATION_BY_OUTPUT_STRIDE),
                       default=None, help="must match the checkpoint if given")
    model.add_argument(
        "--eval-output-stride",
        "--eval_output_stride",
        type=int,
        choices=sorted(DILATION_BY_OUTPUT_STRIDE),
        default=None,
        help="run the same weights at this output stride (e.g. trained OS16, tested OS8)",
    )
    data = parser.add_argument_group("Data")
    data.add_argument("--data-root", "--data_root", type=Path, default=Path("data"), help="data set root")
    data.add_argument("--split", choices=SPLITS, default="val", help="split to predict")
    data.add_argument("--ground-truth", "--ground_truth", choices=list(GROUND_TRUTHS), default=None,
                      help="score against the shipped gtFine labelIds (provided, as the server; the default when every "
                           "frame has one) or the masks generate_gt drew from the polygons (generated)")
    data.add_argument("--batch-size", "--batch_size", type=cli.positive_int, default=1, help="images per forward pass")
    data.add_argument("--workers", type=cli.non_negative_int, default=4, help="data loading processes")
    output = parser.add_argument_group("Output")
    output.add_argument(
        "--out", type=Path, default=Path("outputs"), help="predictions go to {out}/{model_name}/{split}/"
    )
    output.add_argument("--model-name", "--model_name", default=None,
                        help="output folder name (default: the checkpoint's run folder name)")
    output.add_argument("--save-color", "--save_color", action="store_true", help="also write colour and overlay PNGs")
    output.add_argument("--official-eval", "--official_eval", action="store_true",
                        help="also score the written PNGs with cityscapesscripts' evalPixelLevelSemanticLabeling")
    inference = parser.add_argument_group("Inference")
    inference.add_argument("--mode", choices=["whole", "slide"], default="whole",
                           help="whole images in one pass, or overlapping --crop windows every --stride pixels")
    inference.add_argument("--crop", type=cli.crop_side, nargs=2, default=[769, 769], metavar=("H", "W"),
                           help="sliding window size (--mode slide)")
    inference.add_argument("--stride", type=cli.crop_side, nargs=2, default=[513, 513], metavar=("H", "W"),
                           help="sliding window step (--mode slide)")
    inference.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    inference.add_argument("--scales", type=cli.inference_scale, nargs="+", default=[1.0],
                           help="multi-scale test (e.g. 0.75 1.0 1.25)")
    inference.add_argument("--amp", action="store_true", help="mixed precision inference")
    inference.add_argument("--amp-dtype", choices=list(AMP_DTYPES), default=None,
                           help="autocast dtype with --amp (default: float16 on CUDA, bfloat16 on CPU)")
    inference.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    inference.add_argument("--device", type=cli.device, default=cli.default_device(), help="cuda, cuda:N or cpu")
    return parser


def choose_ground_truth(args: argparse.Namespace) -> str:
    """``args.ground_truth``, or by default ``provided`` when every frame of the split has its shipped labelIds.

    Falls back to ``generated`` with a one-line notice naming how many are missing.
    """
    if args.split == "test" or args.ground_truth == "generated":
        return "generated"
    missing, total = missing_provided_masks(args.data_root, args.split)
    if args.ground_truth == "provided" or not missing:
        return "provided"  # an explicit request with missing files fails in the dataset, naming the first
    print(
        f"notice: {len(missing)} of {total} {args.split} frames have no shipped gtFine labelIds (first: {missing[0]}); "
        "scoring against the masks generated from the polygons",
        file=sys.stderr,
    )
    return "generated"


def build_protocol(args: argparse.Namespace, dataset: CityscapesSegmentation, checkpoint: dict,
                   amp_name: str | None) -> EvaluationProtocol:
    """The protocol of this run, from the flags, the data and the checkpoint."""
    train_stride = checkpoint["model_config"]["output_stride"]
    slide = args.mode == "slide"
    return EvaluationProtocol(
        split=args.split, images=len(dataset), image_size=image_size_of(dataset.image_sizes()), mode=args.mode,
        window=tuple(args.crop) if slide else None, stride=tuple(args.stride) if slide else None, flip=args.flip,
        scales=tuple(args.scales), train_output_stride=train_stride,
        test_output_stride=args.eval_output_stride or train_stride, amp_dtype=amp_name,
        ground_truth=GROUND_TRUTHS[dataset.ground_truth] if dataset.has_labels else "",
        checkpoint_iteration=checkpoint.get("iteration"), weights=weights_digest(checkpoint["model"]))


def score_report(result: EvaluationResult, protocol: EvaluationProtocol) -> dict:
    """All scores of a labelled split, as plain values (per-class and per-category IoU by name), protocol first."""
    scores = result.scores()
    categories = scores_from_confusion_matrix(category_confusion_matrix(
        result.confusion.matrix, torch.as_tensor(TRAIN_ID_TO_CATEGORY_ID), len(CATEGORY_NAMES)))
    nan_to_none = lambda value: None if math.isnan(value) else value  # noqa: E731  (JSON has no NaN)
    return {
        "protocol": protocol.as_dict(),
        "mean_iou": scores["mean_iou"], "mean_dice": scores["mean_dice"], "pixel_accuracy": scores["pixel_accuracy"],
        "mean_class_accuracy": scores["mean_class_accuracy"], "category_mean_iou": categories["mean_iou"],
        "class_iou": {name: nan_to_none(value) for name, value in zip(CLASS_NAMES, scores["iou"])},
        "class_dice": {name: nan_to_none(value) for name, value in zip(CLASS_NAMES, scores["dice"])},
        "category_iou": {name: nan_to_none(value) for name, value in zip(CATEGORY_NAMES, categories["iou"])},
        "val_loss": result.loss, "images": result.images,
        "seconds_per_image": result.seconds_per_image, "peak_memory_mb": result.peak_memory_mb,
        "confusion_matrix": result.confusion.matrix.tolist(),
    }


def format_report(report: dict) -> str:
    """The protocol in words, the per-class and per-category table, then the means."""
    lines = [f"protocol: {report['protocol']['description']}", f"{'class':<16}{'IoU':>8}{'Dice':>8}"]
    for name in CLASS_NAMES:
        iou, dice = report["class_iou"][name], report["class_dice"][name]
        lines.append(f"{name:<16}{'n/a' if iou is None else f'{100 * iou:.2f}':>8}"
                     f"{'n/a' if dice is None else f'{100 * dice:.2f}':>8}")
    lines.append(f"{'category':<16}{'IoU':>8}")
    for name, iou in report["category_iou"].items():
        lines.append(f"{name:<16}{'n/a' if iou is None else f'{100 * iou:.2f}':>8}")
    lines.append(f"mIoU {100 * report['mean_iou']:.2f}  mean Dice {100 * report['mean_dice']:.2f}  "
                 f"pixel accuracy {100 * report['pixel_accuracy']:.2f}  mean class accuracy "
                 f"{100 * report['mean_class_accuracy']:.2f}  category mIoU {100 * report['category_mean_iou']:.2f}")
    return "\n".join(lines)


def ground_truth_label_ids(args: argparse.Namespace, ground_truth: str, stems: list[str]) -> list:
    """The labelIds files the scores were computed against, one per frame."""
    if ground_truth == "provided":
        return [provided_mask_path(args.data_root, args.split, stem) for stem in stems]
    return [generated_mask_path(args.data_root / GENERATED_DIR, args.split, stem, "labelIds") for stem in stems]


def run_official_eval(prediction_files: list[Path], ground_truth_files: list[Path], out_dir: Path) -> dict:
    """Score the written labelIds with cityscapesscripts against the same ground truth as our metrics."""
    from cityscapes.official_eval import evaluate_official

    return evaluate_official(prediction_files, ground_truth_files, export_file=out_dir / "official_eval.json")


def put_in_place(work_dir: Path, final_dir: Path) -> None:
    """Replace the split's previous output with the complete new one (two renames; the old folder is deleted last)."""
    previous = final_dir.with_name(f".{final_dir.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if final_dir.exists():
        final_dir.rename(previous)
    work_dir.rename(final_dir)
    shutil.rmtree(previous, ignore_errors=True)


def write_results(args: argparse.Namespace, result: EvaluationResult, dataset: CityscapesSegmentation,
                  protocol: EvaluationProtocol, work_dir: Path, model_name: str) -> dict | None:
    """The zip of the split's labelIds PNGs and, on a labelled split, metrics.json, class_iou.csv and
    confusion_matrix.png (in work_dir)."""
    # the files of this split's images (written by every rank), never leftovers of an earlier run
    stems = sorted(stem_of(path) for path in dataset.images)
    prediction_files = [prediction_path(work_dir, stem) for stem in stems]
    make_submission_zip(prediction_files, work_dir / f"{model_name}_{args.split}_labelIds.zip")
    if not dataset.has_labels:
        return None
    report = score_report(result, protocol)
    if args.official_eval:
        official = run_official_eval(
            prediction_files, ground_truth_label_ids(args, dataset.ground_truth, stems), work_dir
        )
        report["official_mean_iou"] = official["averageScoreClasses"]
        report["official_category_mean_iou"] = official["averageScoreCategories"]
    write_json(work_dir / "metrics.json", report)
    save_figure(plot_confusion_matrix(result.confusion.matrix.cpu().tolist(), CLASS_NAMES,
                                      f"{model_name}, {args.split}: confusion matrix (rows: recall, %; red: the "
                                      "largest confusions)"), work_dir / "confusion_matrix.png")
    write_csv(work_dir / "class_iou.csv", ({"class": name, "iou": report["class_iou"][name],
                                            "dice": report["class_dice"][name]} for name in CLASS_NAMES),
              ["class", "iou", "dice"])
    return report


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    context = init_distributed_mode(args.device)
    try:
        check_inference_options(args.mode, args.crop, args.stride)
        precision = resolve_precision(args.amp, args.amp_dtype, context.device)
        if precision.dtype == torch.float16 and context.device.type == "cpu":
            log.warning(
                "warning: float16 autocast on the CPU is many times slower than float32; use --amp-dtype bfloat16"
            )
        model_name = args.model_name or args.model_weights_path.resolve().parent.name
        final_dir = cli.output_folder(args.out, "--out") / model_name / args.split
        checkpoint = load_checkpoint(args.model_weights_path)
        model = load_trained_model(args.model_weights_path, context.device, args.backbone, args.output_stride,
                                   args.eval_output_stride, checkpoint=checkpoint)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        ground_truth = choose_ground_truth(args)
        check_before_run(args.data_root, [args.split],
                         needs_masks=[args.split] if ground_truth == "generated" and args.split != "test" else [])
        dataset = CityscapesSegmentation(args.data_root, args.split, eval_transforms(), ground_truth=ground_truth)
        protocol = build_protocol(args, dataset, checkpoint, precision.name)
        check_inference_options(args.mode, args.crop, args.stride, args.scales, min(dataset.image_sizes(), key=min))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {cli.one_line(error)}", file=sys.stderr)
        return 2
    # Everything is written aside and put in place when complete: an interrupted run leaves the previous output alone.
    work_dir = final_dir.with_name(f".{args.split}.partial")
    made = missing_folders(work_dir.parent)  # removed again if nothing is put in place
    if context.is_main:
        shutil.rmtree(work_dir, ignore_errors=True)  # left by a killed run
        work_dir.mkdir(parents=True)
    if context.enabled:
        torch.distributed.barrier()
    log.info("protocol: %s", protocol.describe())
    loader = DataLoader(dataset, args.batch_size, sampler=ShardSampler(len(dataset), context.rank, context.world_size),
                        num_workers=args.workers, pin_memory=context.device.type == "cuda")
    slide = {"mode": args.mode, "crop": args.crop, "stride": args.stride} if args.mode == "slide" else {}
    try:
        writer = PredictionWriter(work_dir, save_color=args.save_color)
        try:
            result = evaluate(model, loader, context.device, len(CLASS_NAMES), ignore_index=IGNORE_INDEX,
                              flip=args.flip, scales=args.scales, amp_dtype=precision.dtype,
                              channels_last=args.channels_last, on_prediction=writer, description=args.split, **slide)
        finally:
            writer.close()
        if context.enabled:
            torch.distributed.barrier()
        report = write_results(args, result, dataset, protocol, work_dir, model_name) if context.is_main else None
        if context.is_main:
            put_in_place(work_dir, final_dir)
    except (KeyboardInterrupt, OSError, ValueError) as error:
        if context.is_main:
            shutil.rmtree(work_dir, ignore_errors=True)
            remove_empty_folders(made)
        kept = f"{final_dir} keeps its previous output" if final_dir.exists() else "nothing was written"
        if isinstance(error, KeyboardInterrupt):
            print(f"interrupted: {kept}", file=sys.stderr)
            return 130
        if isinstance(error, OSError):
            print(f"error: cannot write {error.filename or work_dir}: {error.strerror}; {kept}", file=sys.stderr)
            return 1
        print(f"error: {cli.one_line(error)}; {kept}", file=sys.stderr)
        return 2
    finally:
        if context.enabled:
            torch.distributed.destroy_process_group()
    if not context.is_main:
        return 0
    zip_path = final_dir / f"{model_name}_{args.split}_labelIds.zip"
    log.info("%d labelIds PNGs in %s; %s", len(dataset), final_dir / "labelIds",
             f"upload {zip_path}" if args.split == "test" else f"zipped to {zip_path} (val: not for the server)")
    if report is not None:
        print(format_report(report))
        if args.official_eval:
            print(f"cityscapesscripts evalPixelLevelSemanticLabeling: mIoU {100 * report['official_mean_iou']:.2f}, "
                  f"category mIoU {100 * report['official_category_mean_iou']:.2f}")
    print(f"{result.images} images: {1000 * result.seconds_per_image:.1f} ms per image, peak memory "
          f"{result.peak_memory_mb:.0f} MiB ({'GPU allocated' if context.device.type == 'cuda' else 'process RSS'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
