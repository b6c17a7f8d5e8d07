"""Checkpoint saves as training makes them: the host copy of the state, then the atomic write (what the background
writer does), for the project's way (serialised straight into the temporary file) and the earlier one (serialised
in memory first, then written). Seconds per save, median of --repeats, and the process's peak memory.

    python benchmarks/checkpoint_write.py --backbone resnet50 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_cli import run_benchmark
from deeplabv3plus.backbone import BACKBONES
from deeplabv3plus.checkpoint import checkpoint_payload, write_checkpoint
from deeplabv3plus.model import build_model
from segdata.files import write_bytes_atomic
from segdata.flags import Parser, positive_int


def write_in_memory_first(path: Path, payload: dict) -> None:
    """The earlier way: torch.save into a BytesIO, then its bytes written atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


WAYS = {"streamed into the file (the project's)": write_checkpoint, "serialised in memory first": write_in_memory_first}


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(args: argparse.Namespace) -> list[dict]:
    model = build_model(backbone=args.backbone, output_stride=16, num_classes=19, pretrained_backbone=None)
    momentum = {"state": {index: {"momentum_buffer": parameter.detach().clone()}
                          for index, parameter in enumerate(model.parameters())}, "param_groups": []}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for way, write in WAYS.items():  # the streamed way first: the peak memory only grows
            copies, writes = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                payload = checkpoint_payload(model, optimizer=momentum)
                copied = time.perf_counter()
                write(Path(folder) / "last.pth", payload)
                copies.append(copied - start)
                writes.append(time.perf_counter() - copied)
            rows.append({"way": way, "size_mib": (Path(folder) / "last.pth").stat().st_size / 2**20,
                         "copy_s": statistics.median(copies), "write_s": statistics.median(writes),
                         "peak_memory_mib": peak_memory_mib()})
    print(f"{'way':<40} {'MiB':>6} {'copy s':>7} {'write s':>8} {'peak MiB':>9}")
    for row in rows:
        print(f"{row['way']:<40} {row['size_mib']:6.0f} {row['copy_s']:7.2f} {row['write_s']:8.2f} "
              f"{row['peak_memory_mib']:9.0f}")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet50")
    parser.add_argument("--repeats", type=positive_int, default=5, help="saves per way (median reported)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="an existing folder for the files (default: the system's temporary folder)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"argument --dir: {args.dir} is not a folder")
    return args


if __name__ == "__main__":
    raise SystemExit(run_benchmark(main, parse_args()))
