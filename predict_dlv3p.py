"""Segment your own images, folders and videos with a trained DeepLabV3+ checkpoint.

    python predict_dlv3p.py --model_weights_path saved/dlv3p_resnet50_os8/best.pth photos/ dashcam.mp4 'more/*.jpg'

For each image it writes {name}_color.png (the Cityscapes palette) and
{name}_overlay.png (and with --save-ids {name}_trainIds.png / _labelIds.png),
mirroring the input names under --out; for each video an MP4 of the overlay (or
image | prediction side by side) at the source frame rate, and a CSV of the
per-class pixel shares of every frame. Images and frames of any size.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors
from tqdm import tqdm

from cityscapes.files import write_csv, write_png
from cityscapes.labels import CLASS_NAMES, NUM_CLASSES
from cityscapes.submission import train_ids_to_label_ids
from cityscapes.transforms import eval_transforms
from cityscapes.visualize import colorize_train_ids, overlay, side_by_side
from deeplabv3plus import cli
from deeplabv3plus.inference import check_inference_options, load_trained_model, predict
from deeplabv3plus.media import InputFile, VideoWriter, find_inputs, read_image, read_video
from deeplabv3plus.precision import AMP_DTYPES, resolve_precision

log = logging.getLogger("predict_dlv3p")
SHARE_COLUMNS = ["name", *CLASS_NAMES]


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="predict_dlv3p.py", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively), glob patterns, videos")
    model = parser.add_argument_group("Model")
    model.add_argument("--model-weights-path", "--model_weights_path", type=Path, required=True,
                       help="checkpoint written by train_dlv3p.py or deeplabv3plus.convert")
    model.add_argument("--eval-output-stride", "--eval_output_stride", type=int, choices=[8, 16], default=None,
                       help="run the weights at this output stride")
    output = parser.add_argument_group("Output")
    output.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/predict/{model_name})")
    output.add_argument("--alpha", type=float, default=0.5, help="opacity of the colour mask in the overlay (0..1)")
    output.add_argument("--save-ids", action="store_true", help="also write trainId and labelId PNGs of images")
    output.add_argument("--side-by-side", action="store_true", help="videos: image | prediction instead of the overlay")
    inference = parser.add_argument_group("Inference")
    inference.add_argument("--batch-size", type=cli.positive_int, default=1, help="images or frames per forward pass")
    inference.add_argument("--mode", choices=["whole", "slide"], default="whole", help="whole image or sliding windows")
    inference.add_argument("--crop", type=cli.crop_side, nargs=2, default=[769, 769], metavar=("H", "W"),
                           help="sliding window size (--mode slide)")
    inference.add_argument("--stride", type=cli.crop_side, nargs=2, default=[513, 513], metavar=("H", "W"),
                           help="sliding window step (--mode slide)")
    inference.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    inference.add_argument("--scales", type=cli.inference_scale, nargs="+", default=[1.0], help="multi-scale inference")
    inference.add_argument("--amp", action="store_true", help="mixed precision")
    inference.add_argument("--amp-dtype", choices=list(AMP_DTYPES), default=None, help="autocast dtype with --amp")
    inference.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    inference.add_argument("--device", type=cli.device, default=cli.default_device(), help="cuda, cuda:N or cpu")
    return parser


class Predictor:
    """RGB uint8 frames in, (H, W) trainId predictions out, with the run's inference settings."""

    def __init__(self, model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> None:
        self.model, self.device = model, device
        self.normalise = eval_transforms()
        self.options = {"flip": args.flip, "scales": args.scales,
                        "amp_dtype": resolve_precision(args.amp, args.amp_dtype, device).dtype}
        if args.mode == "slide":
            self.options.update(mode="slide", crop=args.crop, stride=args.stride)
        self.channels_last = args.channels_last

    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB frames of one size -> (N, H, W) uint8 trainIds."""
        batch = tv_tensors.Image(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))
        images = self.normalise(batch).as_subclass(torch.Tensor).to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return predict(self.model, images, **self.options).argmax(1).to(torch.uint8).cpu().numpy()


def _batches(items: Iterator, size: int, key=lambda frame: frame.shape) -> Iterator[list]:
    """Consecutive items grouped in batches of at most ``size`` with the same ``key`` (the frame shape)."""
    batch: list = []
    for item in items:
        if batch and (len(batch) == size or key(item) != key(batch[0])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def class_shares(train_ids: np.ndarray) -> list[float]:
    """Fraction of the pixels predicted as each of the 19 classes."""
    return (np.bincount(train_ids.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES] / train_ids.size).tolist()


def predict_images(images: list[InputFile], predictor: Predictor, args: argparse.Namespace, out: Path) -> list[str]:
    """Colour, overlay (and id) PNGs of every image, and class_shares.csv; the one-line errors of those skipped."""
    errors, shares = [], []

    def readable() -> Iterator[tuple[InputFile, np.ndarray]]:  # one image in memory at a time (and its batch)
        for entry in tqdm(images, desc="images", unit="image", dynamic_ncols=True):
            try:
                yield entry, read_image(entry.path)
            except ValueError as error:
                errors.append(str(error))

    for batch in _batches(readable(), args.batch_size, key=lambda item: item[1].shape):
        for (entry, image), train_ids in zip(batch, predictor([image for _, image in batch])):
            stem = out / entry.relative.with_suffix("")
            color = colorize_train_ids(train_ids)
            write_png(stem.with_name(f"{stem.name}_color.png"), color)
            write_png(stem.with_name(f"{stem.name}_overlay.png"), overlay(image, color, args.alpha))
            if args.save_ids:
                write_png(stem.with_name(f"{stem.name}_trainIds.png"), train_ids)
                write_png(stem.with_name(f"{stem.name}_labelIds.png"), train_ids_to_label_ids(train_ids))
            shares.append({"name": str(entry.relative), **dict(zip(CLASS_NAMES, class_shares(train_ids)))})
    if shares:
        write_csv(out / "class_shares.csv", shares, SHARE_COLUMNS)
    return errors


def predict_video(entry: InputFile, predictor: Predictor, args: argparse.Namespace, out: Path) -> Path:
    """The overlay (or side-by-side) MP4 of a video and its per-frame class shares; ValueError if unreadable."""
    frames, fps, count = read_video(entry.path)
    stem = out / entry.relative.with_suffix("")
    video_path = stem.with_name(f"{stem.name}_{'side_by_side' if args.side_by_side else 'overlay'}.mp4")
    writer, shares = None, []
    try:
        with tqdm(total=count or None, desc=entry.path.name, unit="frame", dynamic_ncols=True) as bar:
            for batch in _batches(frames, args.batch_size):
                for frame, train_ids in zip(batch, predictor(batch)):
                    picture = (side_by_side(frame, train_ids, None, ("image", "prediction")) if args.side_by_side
                               else overlay(frame, colorize_train_ids(train_ids), args.alpha))
                    if writer is None:
                        writer = VideoWriter(video_path, fps, (picture.shape[1], picture.shape[0]))
                    writer.write(picture)
                    shares.append({"name": f"frame {len(shares)}", **dict(zip(CLASS_NAMES, class_shares(train_ids)))})
                bar.update(len(batch))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    writer.close()
    write_csv(stem.with_name(f"{stem.name}_class_shares.csv"), shares, SHARE_COLUMNS)
    return video_path


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    try:
        if not 0 <= args.alpha <= 1:
            raise cli.FlagError(f"argument --alpha: must be from 0 to 1, got {args.alpha}")
        check_inference_options(args.mode, args.crop, args.stride)
        inputs, unmatched = find_inputs(args.inputs)
        if not inputs:
            raise FileNotFoundError(f"{' '.join(args.inputs)}: no image or video found; name files, folders or globs")
        model = load_trained_model(args.model_weights_path, device, eval_output_stride=args.eval_output_stride)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        out = cli.output_folder(args.out or Path("outputs") / "predict" / args.model_weights_path.resolve().parent.name,
                                "--out")
    except cli.FlagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictor = Predictor(model, args, device)
    errors = [f"{argument}: matches no file" for argument in unmatched]
    videos = []
    try:
        errors += predict_images([entry for entry in inputs if not entry.is_video], predictor, args, out)
        for entry in (entry for entry in inputs if entry.is_video):
            try:
                videos.append(predict_video(entry, predictor, args, out))
            except ValueError as error:
                errors.append(str(error))
    except KeyboardInterrupt:  # every file already written is complete; a video being written is dropped
        print(f"interrupted: the files written to {out} so far are complete; run again for the rest", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"error: cannot write {error.filename or out}: {error.strerror}", file=sys.stderr)
        return 1
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    images = sum(not entry.is_video for entry in inputs)
    print(f"{images} image(s) and {len(videos)} video(s) -> {out}" + (f"; {len(errors)} skipped" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
