"""Masks per second of cityscapes.generate_gt against cityscapesscripts' own conversion.

Both write the same three masks (labelIds, labelTrainIds, color) for the same
synthetic annotations; cityscapesscripts through ``json2labelImg`` once per
encoding, as its tools do. Prints a table and saves it as CSV.

    python benchmarks/generate_gt.py --frames 12 --height 1024 --width 2048 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cityscapesscripts.preparation.json2labelImg import json2labelImg

from bench_cli import run_benchmark, writable_file
from cityscapes.generate_gt import generate
from cityscapes.paths import polygon_files
from cityscapes.synthetic import write_dataset
from segdata.files import write_csv
from segdata.flags import Parser, positive_int

ENCODINGS = {"labelIds": "ids", "labelTrainIds": "trainIds", "color": "color"}


def time_cityscapesscripts(json_files: list[Path], out_dir: Path) -> float:
    """Seconds for cityscapesscripts to write the three masks of every file (one process)."""
    start = time.perf_counter()
    for json_path in json_files:
        for kind, encoding in ENCODINGS.items():
            json2labelImg(
                str(json_path), str(out_dir / json_path.name.replace("polygons.json", f"{kind}.png")), encoding
            )
    return time.perf_counter() - start


def time_generate_gt(root: Path, out_dir: Path, workers: int) -> float:
    """Seconds for generate_gt to write the three masks of every file of the train split."""
    start = time.perf_counter()
    results = generate(root, splits=["train"], out_root=out_dir, workers=workers, overwrite=True, progress=False)
    elapsed = time.perf_counter() - start
    assert all(result.status == "written" for result in results)
    return elapsed


def main(args: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary) / "data"
        write_dataset(root, args.frames, args.height, args.width, seed=0, splits=("train",))
        json_files = polygon_files(root, "train")
        reference_dir = Path(temporary) / "reference"
        reference_dir.mkdir()
        reference = min(time_cityscapesscripts(json_files, reference_dir) for _ in range(args.repeats))
        rows = [{"method": "cityscapesscripts json2labelImg x3", "workers": 1, "seconds": reference}]
        for workers in args.workers:
            seconds = min(time_generate_gt(root, Path(temporary) / "ours", workers) for _ in range(args.repeats))
            rows.append({"method": "cityscapes.generate_gt", "workers": workers, "seconds": seconds})
    for row in rows:
        row["files_per_s"] = len(json_files) / row["seconds"]
        row["speedup"] = reference / row["seconds"]
    print(f"{len(json_files)} annotations at {args.height}x{args.width}, 3 masks each, {os.cpu_count()} cores, "
          f"best of {args.repeats}")
    print(f"{'method':<36}{'workers':>8}{'seconds':>10}{'files/s':>10}{'speed-up':>10}")
    for row in rows:
        print(f"{row['method']:<36}{row['workers']:>8}{row['seconds']:>10.2f}{row['files_per_s']:>10.1f}"
              f"{row['speedup']:>9.1f}x")
    write_csv(args.csv, rows, ["method", "workers", "seconds", "files_per_s", "speedup"])
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="benchmarks/generate_gt.py", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=positive_int, default=12, help="annotations to convert")
    parser.add_argument("--height", type=positive_int, default=1024, help="image height (Cityscapes: 1024)")
    parser.add_argument("--width", type=positive_int, default=2048, help="image width (Cityscapes: 2048)")
    parser.add_argument("--workers", type=positive_int, nargs="+", default=[1, os.cpu_count() or 1],
                        help="worker counts to time")
    parser.add_argument("--repeats", type=positive_int, default=2, help="runs per method; the best is kept")
    parser.add_argument("--csv", type=writable_file, default=Path("outputs/benchmark_generate_gt.csv"),
                        help="CSV to write")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_benchmark(main, get_args_parser().parse_args()))
