"""What every benchmark script does with its command line: each flag checked by type before any work (numbers, the
device, folders that must exist, files that can be written), and a failure while running ends in one line through
the project's one mapping of errors to exit codes (``segdata.flags.report_error``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from segdata.files import OutputError, check_output_file, check_output_folder
from segdata.flags import non_negative_int, report_error

__all__ = ["add_device_and_output_flags", "default_precisions", "existing_folder", "run_benchmark", "writable_file",
           "writable_folder"]


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


def add_device_and_output_flags(parser: argparse.ArgumentParser, name: str) -> None:
    """``--threads``, ``--device`` and the table and plot a model benchmark writes (``outputs/benchmark_{name}.*``)."""
    from deeplabv3plus.cli import default_device, device

    parser.add_argument("--threads", type=non_negative_int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--device", type=device, default=default_device(), help="cuda, cuda:N or cpu")
    parser.add_argument("--csv", type=writable_file, default=Path(f"outputs/benchmark_{name}.csv"),
                        help="CSV to write")
    parser.add_argument("--plot", type=writable_file, default=Path(f"outputs/benchmark_{name}.png"),
                        help="plot to write")


def default_precisions(device: str) -> list[str]:
    """The precisions a model benchmark measures unless told: fp16 too on CUDA."""
    return ["fp32", "fp16", "bf16"] if device.startswith("cuda") else ["fp32", "bf16"]
