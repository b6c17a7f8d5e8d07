"""Flag types and checks shared by the scripts: one rule per kind of flag, written once.

Every bad value ends in one line naming the flag (``error: argument --iters:
must be a positive integer, got 0``) and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import torch

__all__ = ["FlagError", "Parser", "bounded_int", "crop_size", "device", "non_negative_float", "non_negative_int",
           "one_line", "output_folder", "positive_float", "positive_int", "scale_range"]

MAX_CROP_SIDE = 4096
"""Largest training or inference window side: twice Cityscapes' width; a larger one only fills memory."""


class FlagError(ValueError):
    """A flag whose value contradicts another flag or a file; the message names the flag and the fix."""


class Parser(argparse.ArgumentParser):
    """argparse with errors on one line (``{prog}: error: ...``, no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"argument (--[\w-]+)(/--\w+)+:", r"argument \1:", message)  # name a flag once, not its alias
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _number(kind: type, rule: Callable[[float], bool], description: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
        if not rule(value):
            raise argparse.ArgumentTypeError(f"must be {description}, got {text}")
        return value

    parse.__name__ = description  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda value: value > 0, "a positive integer")
non_negative_int = _number(int, lambda value: value >= 0, "an integer >= 0")
positive_float = _number(float, lambda value: value > 0 and value != float("inf"), "a positive number")
non_negative_float = _number(float, lambda value: 0 <= value < float("inf"), "a number >= 0")


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``low..high``."""
    return _number(int, lambda value: low <= value <= high, f"an integer from {low} to {high}")


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
    """A folder outputs can be written to, created if needed; FlagError naming the flag otherwise (before any work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FlagError(f"argument {flag}: {path} is a file, not a folder; name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise FlagError(f"argument {flag}: cannot write in {path} ({error.strerror}); choose a writable folder") from None
    return path


def one_line(error: BaseException) -> str:
    """The message of an error in one line: a loader worker's re-raised error carries the worker's traceback, of
    which the last line is the original message."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    prefix = f"{type(error).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last
