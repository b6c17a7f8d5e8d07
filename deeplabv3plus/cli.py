"""Flag types and checks shared by the scripts: one rule per kind of flag, written once.

Every bad value ends in one line naming the flag (``error: argument --iters:
must be a positive integer, got 0``) and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from cityscapes.files import OutputError, check_output_file, check_output_folder
from cityscapes.flags import (
    Parser,
    bounded_int,
    inference_scale,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["FlagError", "Parser", "bounded_int", "crop_size", "device", "inference_scale", "non_negative_float",
           "non_negative_int", "one_line", "output_file", "output_folder", "positive_float", "positive_int",
           "scale_range"]

MAX_CROP_SIDE = 4096
"""Largest training or inference window side: twice Cityscapes' width; a larger one only fills memory."""


class FlagError(ValueError):
    """A flag whose value contradicts another flag or a file; the message names the flag and the fix."""


def crop_side(text: str) -> int:
    """One side of a crop or window: 1..MAX_CROP_SIDE pixels."""
    return bounded_int(1, MAX_CROP_SIDE)(text)


def crop_size(values: Sequence[int], flag: str = "--crop-size") -> tuple[int, int]:
    """``[S]`` (square) or ``[H, W]`` -> (H, W); FlagError for any other count."""
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise FlagError(f"argument {flag}: give one size (square) or two (height width), got {len(values)} values")


def scale_range(values: Sequence[float], flag: str = "--scale-range") -> tuple[float, float]:
    """(MIN, MAX) with 0 < MIN <= MAX; FlagError otherwise (a reversed range is not taken silently)."""
    low, high = values
    if not 0 < low <= high:
        raise FlagError(f"argument {flag}: needs 0 < MIN <= MAX, got {low} {high}")
    return low, high


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
    """A file an output may be written to: see :func:`cityscapes.files.check_output_file`; FlagError otherwise."""
    try:
        return check_output_file(path, flag, overwrite)
    except OutputError as error:
        raise FlagError(str(error)) from None


def one_line(error: BaseException) -> str:
    """The message of an error in one line: a loader worker's re-raised error carries the worker's traceback, of
    which the last line is the original message."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    prefix = f"{type(error).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last
