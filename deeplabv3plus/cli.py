"""Flag types and checks shared by the scripts: one rule per kind of flag, written once.

Every bad value ends in one line naming the flag (``error: argument --iters:
must be a positive integer, got 0``) and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from deeplabv3plus.inference import InferenceOptions
from deeplabv3plus.precision import AMP_DTYPES, native_bfloat16, precision_from_flags
from segdata.files import OutputError, check_output_file, check_output_folder
from segdata.flags import (
    FlagError,
    Parser,
    bounded_int,
    inference_scale,
    non_negative_float,
    non_negative_int,
    one_line,
    positive_float,
    positive_int,
    report_error,
)

__all__ = [
    "FlagError",
    "Parser",
    "add_checkpoint_flags",
    "add_precision_flags",
    "add_inference_flags",
    "bounded_int",
    "device",
    "given_flags",
    "inference_scale",
    "non_negative_float",
    "non_negative_int",
    "one_line",
    "output_file",
    "output_folder",
    "positive_float",
    "plain_values",
    "positive_int",
    "inference_options",
    "report_error",
]

DEFAULT_WINDOW, DEFAULT_WINDOW_STRIDE = (769, 769), (513, 513)
"""Sliding windows of --mode slide: mmsegmentation's Cityscapes test setting."""
MAX_CROP_SIDE = 4096
"""Largest training or inference window side: twice Cityscapes' width; a larger one only fills memory."""


def crop_side(text: str) -> int:
    """One side of a crop or window: 1..MAX_CROP_SIDE pixels."""
    return bounded_int(1, MAX_CROP_SIDE)(text)


def device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, and only a CUDA device that this machine has."""
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available here; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} GPU(s)")
    return text


def default_device() -> str:
    """``cuda`` where a GPU is present, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def output_folder(path: Path, flag: str) -> Path:
    """A folder outputs can be written to (or made in), checked before any work and not created here, so a run that
    fails at start-up leaves no empty folder; FlagError naming the flag otherwise."""
    try:
        return check_output_folder(path, flag)
    except OutputError as error:
        raise FlagError(str(error)) from None


def output_file(path: Path, flag: str, overwrite: bool = False) -> Path:
    """A file an output may be written to: see :func:`segdata.files.check_output_file`; FlagError otherwise."""
    try:
        return check_output_file(path, flag, overwrite)
    except OutputError as error:
        raise FlagError(str(error)) from None


def add_checkpoint_flags(parser: argparse.ArgumentParser, eval_output_stride: bool = True) -> None:
    """``--model-weights-path`` (required) and, unless asked not to, ``--eval-output-stride``: the flags of every
    command that uses a trained model."""
    parser.add_argument("--model-weights-path", "--model_weights_path", type=Path, required=True,
                        help="checkpoint written by train_dlv3p.py (saved/{run}/best.pth) or deeplabv3plus.convert")
    if eval_output_stride:
        parser.add_argument("--eval-output-stride", "--eval_output_stride", type=int, choices=[8, 16], default=None,
                            help="run the same weights at this output stride (e.g. trained OS16, tested OS8)")


def add_inference_flags(parser: argparse.ArgumentParser) -> None:
    """The Inference group shared by test_dlv3p.py and predict_dlv3p.py; read back with :func:`inference_options`."""
    group = parser.add_argument_group("Inference")
    group.add_argument("--mode", choices=["whole", "slide"], default="whole",
                       help="whole images in one pass, or overlapping --crop windows every --stride pixels")
    group.add_argument("--crop", type=crop_side, nargs=2, default=list(DEFAULT_WINDOW), metavar=("H", "W"),
                       help="sliding window size (--mode slide)")
    group.add_argument("--stride", type=crop_side, nargs=2, default=list(DEFAULT_WINDOW_STRIDE), metavar=("H", "W"),
                       help="sliding window step (--mode slide)")
    group.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    group.add_argument("--scales", type=inference_scale, nargs="+", default=[1.0],
                       help="multi-scale inference (e.g. 0.75 1.0 1.25)")
    add_precision_flags(group)
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last memory format (default: on a GPU that runs bfloat16 natively)")
    group.add_argument("--device", type=device, default=default_device(), help="cuda, cuda:N or cpu")


def add_precision_flags(group: argparse._ArgumentGroup, default_note: str = "") -> None:
    """``--amp`` / ``--no-amp`` and ``--amp-dtype`` (implies --amp), read by :func:`precision_from_flags`; their
    defaults are the device's (bfloat16 autocast on a GPU that runs it natively), then ``default_note``."""
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help=f"mixed precision (default: on, bfloat16, on a GPU that runs it natively; off elsewhere"
                            f"{default_note})")
    group.add_argument("--amp-dtype", choices=list(AMP_DTYPES), default=None,
                       help="autocast dtype; implies --amp (default: bfloat16; float16 + GradScaler on GPUs without "
                            "native bfloat16)")


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    """The options of :func:`add_inference_flags`' flags, checked (FlagError / ValueError naming the flag)."""
    precision = precision_from_flags(args.amp, args.amp_dtype, args.device)
    channels_last = native_bfloat16(args.device) if args.channels_last is None else args.channels_last
    return InferenceOptions(args.mode, tuple(args.crop), tuple(args.stride), args.flip, tuple(args.scales),
                            precision.dtype, channels_last)


def plain_values(args: argparse.Namespace) -> dict:
    """The flags' values as JSON-able plain values (paths as text)."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}


def given_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The flags of this invocation whose values differ from the parser's defaults."""
    return {key: value for key, value in plain_values(args).items() if value != parser.get_default(key)
            and not (isinstance(value, str) and value == str(parser.get_default(key)))}
