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
from pathlib import Path

import torch

from cityscapes.dataset import GROUND_TRUTHS
from deeplabv3plus import cli
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.checkpoint import run_name_of
from deeplabv3plus.datasets import DATA_ROOT_HELP, DATASETS, dataset_kind, open_scored_split, refuse_steps_it_lacks
from deeplabv3plus.distributed import init_distributed_mode
from deeplabv3plus.evaluation import Evaluation, scoring_protocol
from deeplabv3plus.inference import TrainedRun, check_inference_options
from deeplabv3plus.recipes import published_protocol_note
from segdata.dataset import spread_frames
from segdata.files import StagedOutput
from segdata.flags import log_to_terminal
from segdata.loading import default_workers

log = logging.getLogger("test_dlv3p")


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="test_dlv3p.py", description=__doc__.splitlines()[0])
    model = parser.add_argument_group("Model")
    cli.add_checkpoint_flags(model)
    model.add_argument("--backbone", choices=list(BACKBONES), default=None,
                       help="must match the checkpoint if given (it is read from the checkpoint)")
    model.add_argument("--output-stride", "--output_stride", type=int, choices=sorted(DILATION_BY_OUTPUT_STRIDE),
                       default=None, help="must match the checkpoint if given")
    data = parser.add_argument_group("Data")
    data.add_argument("--dataset", choices=DATASETS, default=None,
                      help="the data set's layout (default: the one the checkpoint was trained on; its class table "
                           "comes from the checkpoint)")
    data.add_argument("--data-root", "--data_root", type=Path, default=None,
                      help=DATA_ROOT_HELP + " (default: the one the checkpoint was trained on, where it still "
                                            "exists, else data)")
    data.add_argument("--split", default="val", help="split to predict (Cityscapes: train, val or test)")
    data.add_argument("--ground-truth", "--ground_truth", choices=list(GROUND_TRUTHS), default=None,
                      help="score against the shipped gtFine labelIds (provided, as the server; the default when every "
                           "frame has one) or the masks generate_gt drew from the polygons (generated)")
    data.add_argument("--test-scale", type=cli.positive_int, nargs=2, default=None, metavar=("W", "H"),
                      help="rescale each image, keeping its aspect, to fit within W x H before predicting (as "
                           "mmsegmentation's test pipeline: 2049 1025 in its 769x769 configs); scores at the image's "
                           "own size")
    data.add_argument("--frames", type=cli.positive_int, default=None,
                      help="score this many frames of the split, spread evenly over it and the same each time (the "
                           "rule of train_dlv3p.py --val-frames; default: all), said in the protocol")
    data.add_argument("--batch-size", "--batch_size", type=cli.positive_int, default=1, help="images per forward pass")
    data.add_argument("--workers", type=cli.non_negative_int, default=None,
                      help="data loading processes (default: on a GPU, the CPUs this process may use less one, at most "
                           "16; 1 on the CPU)")
    output = parser.add_argument_group("Output")
    output.add_argument(
        "--out", type=Path, default=Path("outputs"), help="predictions go to {out}/{model_name}/{split}/"
    )
    output.add_argument("--model-name", "--model_name", default=None,
                        help="output folder name (default: the checkpoint's run folder name)")
    output.add_argument("--save-color", "--save_color", action="store_true", help="also write colour and overlay PNGs")
    output.add_argument("--official-eval", "--official_eval", action="store_true",
                        help="also score the written PNGs with cityscapesscripts' evalPixelLevelSemanticLabeling")
    cli.add_inference_flags(parser)
    return parser


def data_root_of(run: TrainedRun) -> Path:
    """Where to find the data when --data-root is not given: the root the run was trained on where it still exists
    (the choice is said), else ``data``."""
    trained_on = run.data_root()
    if trained_on is not None:
        log.info("data root: %s (the one %s was trained on; --data-root chooses another)", trained_on, run.path)
        return trained_on
    return Path("data")


def prepare(args: argparse.Namespace, context) -> tuple[Evaluation, StagedOutput]:
    """The evaluation the flags ask for, checked before any work, and its output staged (locked)."""
    options = cli.inference_options(args)
    model_name = args.model_name or run_name_of(args.model_weights_path)
    output = StagedOutput(cli.output_folder(args.out, "--out") / model_name / args.split)
    run = TrainedRun.load(args.model_weights_path)
    kind = dataset_kind(args.dataset or run.dataset)
    refuse_steps_it_lacks(kind, {"--official-eval": args.official_eval, "--ground-truth": args.ground_truth})
    data_root = args.data_root or data_root_of(run)
    model = run.model(context.device, args.eval_output_stride, options.channels_last, args.backbone,
                      args.output_stride)
    dataset, scored_against = open_scored_split(kind.name, data_root, args.split, run.classes, args.ground_truth,
                                                args.test_scale)
    dataset = spread_frames(dataset, args.frames)
    test_scale = None if args.test_scale is None else tuple(args.test_scale)
    note = published_protocol_note(run.settings.get("recipe"), {"mode": options.mode, "crop": options.crop,
                                                                "stride": options.stride, "test_scale": test_scale,
                                                                "ground_truth": args.ground_truth})
    if note:
        log.info("note: %s", note)
    check_inference_options(options.mode, options.crop, options.stride, options.scales,
                            min(dataset.image_sizes(), key=min))
    workers = default_workers(context.device.type, context.local_world_size) if args.workers is None else args.workers
    evaluation = Evaluation(run, model, dataset, kind, options, context, scoring_protocol(
        dataset, run, options, args.eval_output_stride, scored_against), model_name, args.batch_size, workers,
        args.save_color, args.official_eval)
    return evaluation, output


def main(args: argparse.Namespace) -> int:
    log_to_terminal("test_dlv3p")
    context = init_distributed_mode(args.device)
    try:
        evaluation, output = prepare(args, context)
        # staged and committed when complete: an interrupted run leaves the previous output alone, and a second
        # command writing the same output is refused while this one runs
        work_dir = output.stage() if context.is_main else output.staging
    except (FileNotFoundError, ValueError) as error:
        return cli.report_error(error)
    if context.enabled:
        torch.distributed.barrier()
    log.info("protocol: %s", evaluation.protocol.describe())
    try:
        result = evaluation.predict(work_dir)
        if context.enabled:
            torch.distributed.barrier()
        if context.is_main:
            report = evaluation.write_outputs(result, work_dir)
            output.commit()
    except (KeyboardInterrupt, OSError, ValueError) as error:
        still_there = output.discard() if context.is_main else ""
        return cli.report_error(error, still_there, writing=work_dir, write_advice="free space (or fix permissions)")
    finally:
        if context.enabled:
            torch.distributed.destroy_process_group()
    if context.is_main:
        evaluation.report(result, report, output.final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
