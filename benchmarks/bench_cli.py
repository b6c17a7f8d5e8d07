"""What every benchmark script does with its command line: each flag checked by type before any work (numbers, the
device, folders that must exist, files that can be written), and a failure while running ends in one line through
the project's one mapping of errors to exit codes (``segdata.flags.report_error``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from segdata.files import OutputError, check_output_file, check_output_folder
from segdata.flags import report_error

__all__ = ["existing_folder", "run_benchmark", "writable_file", "writable_folder"]


def existing_folder(text: str) -> Path:
    """A folder that exists (a data root to read)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: no such folder")
    return path


def writable_file(text: str) -> Path:
    """A file the benchmark may write (replacing an earlier table or plot): not a folder, in a writable folder."""
    try:
        return check_output_file(Path(text), "", overwrite=True)
    except OutputError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("argument : ")) from None


def writable_folder(text: str) -> Path:
    """A folder the benchmark may write its files in (made if missing): not a file, on a writable disk."""
    try:
        return check_output_folder(Path(text), "")
    except OutputError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("argument : ")) from None


def run_benchmark(main: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    """``main(args)``; its exit status: 0, or that of the one line a failure ends in."""
    try:
        main(args)
    except (OSError, ValueError, RuntimeError, KeyboardInterrupt) as error:
        return report_error(error)
    return 0
