"""Segment your own images, folders and videos with a trained DeepLabV3+ checkpoint.

    python predict_dlv3p.py --model_weights_path saved/dlv3p_resnet50_os8/best.pth photos/ dashcam.mp4 'more/*.jpg'

For each image it writes {name}_color.png (the palette of the checkpoint's class
table) and {name}_overlay.png (and with --save-ids {name}_trainIds.png and the
data set's own values: _labelIds.png for Cityscapes, _ids.png for others),
mirroring the input names under --out; for each video an MP4 of the overlay (or
image | prediction side by side) at the source frame rate, and a CSV of the
per-class pixel shares of every frame. Images and frames of any size.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from deeplabv3plus import cli
from deeplabv3plus.datasets import dataset_kind
from deeplabv3plus.inference import TrainedRun
from deeplabv3plus.media import find_inputs
from deeplabv3plus.prediction import OutputOptions, Predictor, output_paths, predict_images, predict_video
from segdata.flags import log_to_terminal

log = logging.getLogger("predict_dlv3p")


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="predict_dlv3p.py", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively), glob patterns, videos")
    cli.add_checkpoint_flags(parser.add_argument_group("Model"))
    output = parser.add_argument_group("Output")
    output.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/predict/{model_name})")
    output.add_argument("--alpha", type=float, default=0.5, help="opacity of the colour mask in the overlay (0..1)")
    output.add_argument("--save-ids", action="store_true", help="also write trainId and labelId PNGs of images")
    output.add_argument("--side-by-side", action="store_true", help="videos: image | prediction instead of the overlay")
    output.add_argument("--batch-size", type=cli.positive_int, default=1, help="images or frames per forward pass")
    output.add_argument("--overwrite", action="store_true",
                        help="replace outputs of these inputs already in --out (without it they are never touched)")
    cli.add_inference_flags(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    log_to_terminal("predict_dlv3p")
    device = torch.device(args.device)
    try:
        written = OutputOptions(args.alpha, args.save_ids, args.side_by_side, args.batch_size)
        options = cli.inference_options(args)
        inputs, unmatched = find_inputs(args.inputs)
        if not inputs:
            raise FileNotFoundError(f"{' '.join(args.inputs)}: no image or video found; name files, folders or globs")
        run = TrainedRun.load(args.model_weights_path)
        model = run.model(device, args.eval_output_stride, options.channels_last)
        out = cli.output_folder(args.out or Path("outputs") / "predict" / run.run_name, "--out")
        ids_name = dataset_kind(run.dataset).ids_name
        existing = [path for path in output_paths(inputs, ids_name, written, out) if path.exists()]
        if existing and not args.overwrite:
            more = f" (and {len(existing) - 1} more outputs of these inputs)" if len(existing) > 1 else ""
            raise cli.FlagError(f"{existing[0]}: exists and is left as it is{more}; write elsewhere with --out DIR, "
                                "or replace them with --overwrite")
    except (FileNotFoundError, ValueError) as error:
        return cli.report_error(error)
    predictor = Predictor(model, options, device, run.classes, ids_name)
    errors = [f"{argument}: matches no file" for argument in unmatched]
    videos = []
    try:
        errors += predict_images([entry for entry in inputs if not entry.is_video], predictor, written, out)
        for entry in (entry for entry in inputs if entry.is_video):
            try:
                videos.append(predict_video(entry, predictor, written, out))
            except ValueError as error:
                errors.append(str(error))
    except (KeyboardInterrupt, OSError) as error:  # the files written are complete; a video being written is dropped
        return cli.report_error(error, f"the files written to {out} so far are complete; run again for the rest",
                                writing=out)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    images = sum(not entry.is_video for entry in inputs)
    print(f"{images} image(s) and {len(videos)} video(s) -> {out}" + (f"; {len(errors)} skipped" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
