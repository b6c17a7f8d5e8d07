"""Training samples per second of the data pipeline: PNG or decoded cache, crop-first or resize-then-crop.

One process with one thread (samples/s per CPU core) and a DataLoader with
--workers processes, on any data root with generated masks (and, for the cache
rows, ``python -m cityscapes.cache``); the decode floor (reading the image and
mask PNGs, nothing else) for reference. "jitter on device" rows leave the colour
jitter and normalisation to the training device (--jitter-on-device, the
default on CUDA); the loader then ships uint8 crops. "(before)" and "OpenCV" rows
decode PNGs with OpenCV alone, as the 2026-11-24 pipeline did. Prints a table,
saves a CSV. Use --photo-like data: its PNGs cost what real Cityscapes frames cost.

    python -m cityscapes.synthetic --out data/bench --frames-per-split 16 --height 1024 --width 2048 --photo-like
    python -m cityscapes.generate_gt --data-root data/bench && python -m cityscapes.cache --data-root data/bench
    python benchmarks/data_loading.py --data-root data/bench
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from unittest import mock

import cv2
import torch
from torch.utils.data import DataLoader, RandomSampler

from bench_cli import existing_folder, run_benchmark, writable_file
from cityscapes.dataset import CityscapesSegmentation
from deeplabv3plus.cli import crop_side
from deeplabv3plus.config import RunConfig
from segdata import files
from segdata.cache import CACHE_DIR
from segdata.dataset import SeededSampler
from segdata.files import read_png, write_csv
from segdata.flags import Parser, non_negative_int, positive_int
from segdata.transforms import resize_then_crop_transforms, train_transforms

PIPELINES = {  # name -> (crop first?, from the cache?, colour jitter left to the training device?, PNG decoder)
    "resize-then-crop, PNG (before)": (False, False, False, "opencv"),  # the 2026-11-24 pipeline, rebuilt here
    "crop-first, PNG, OpenCV": (True, False, False, "opencv"),
    "crop-first, PNG": (True, False, False, "project"),
    "crop-first, PNG, jitter on device": (True, False, True, "project"),
    "crop-first, cache": (True, True, False, "project"),
    "crop-first, cache, jitter on device": (True, True, True, "project"),
}
COLUMNS = ["pipeline", "processes", "samples_per_s", "ms_per_sample", "frame_size", "crop"]


def decoder(name: str) -> contextlib.AbstractContextManager:
    """"opencv": PNGs decoded as before (OpenCV alone); "project": segdata.files.decode_png as it is."""
    return mock.patch.object(files, "pyspng", None) if name == "opencv" else contextlib.nullcontext()


def build_dataset(root: Path, crop_first: bool, cached: bool, jitter_on_device: bool,
                  crop: tuple[int, int]) -> CityscapesSegmentation:
    transforms = (train_transforms(crop, RunConfig().scale_range, jitter_on_device=jitter_on_device) if crop_first
                  else resize_then_crop_transforms(crop, RunConfig().scale_range))
    return CityscapesSegmentation(root, "train", transforms, cache_root=root / CACHE_DIR if cached else None)


def per_process(dataset: CityscapesSegmentation, samples: int) -> float:
    """Seconds per sample in this process (one thread)."""
    dataset[(0, 0)]  # warm the page cache and imports
    start = time.perf_counter()
    for index in range(samples):
        dataset[(index % len(dataset), index)]
    return (time.perf_counter() - start) / samples


def decode_floor(dataset: CityscapesSegmentation, samples: int) -> float:
    """Seconds per sample to read an image and its mask PNG, nothing else."""
    read_png(dataset.images[0])
    start = time.perf_counter()
    for index in range(samples):
        read_png(dataset.images[index % len(dataset)])
        read_png(dataset.masks[index % len(dataset)])
    return (time.perf_counter() - start) / samples


def with_workers(dataset: CityscapesSegmentation, samples: int, workers: int) -> float:
    """Seconds per sample through a DataLoader with ``workers`` processes (batch 2, persistent, prefetch 4)."""
    sampler = SeededSampler(RandomSampler(dataset, replacement=True, num_samples=samples))
    loader = DataLoader(dataset, 2, sampler=sampler, num_workers=workers, persistent_workers=True, prefetch_factor=4)
    for _ in loader:  # first pass: workers started, page cache warm
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    return (time.perf_counter() - start) / samples


def main(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    crop = tuple(args.crop)
    rows = []
    first = CityscapesSegmentation(args.data_root, "train")
    height, width = read_png(first.images[0]).shape[:2]

    def add(name: str, processes: int, seconds: float) -> None:
        rows.append({"pipeline": name, "processes": processes, "samples_per_s": 1 / seconds,
                     "ms_per_sample": 1000 * seconds, "frame_size": f"{height}x{width}",
                     "crop": f"{crop[0]}x{crop[1]}"})
        row = rows[-1]
        print(
            f"{name:<40}{processes:>4} process(es){row['samples_per_s']:>9.1f} samples/s"
            f"{row['ms_per_sample']:>9.1f} ms",
            flush=True,
        )

    with decoder("opencv"):
        add("decode floor, OpenCV (before)", 1, decode_floor(first, args.samples))
    add("decode floor (2 PNGs, no transform)", 1, decode_floor(first, args.samples))
    for name, (crop_first, cached, jitter_on_device, png_decoder) in PIPELINES.items():
        if cached and not (args.data_root / CACHE_DIR).exists():
            print(f"{name}: skipped (no cache; run python -m cityscapes.cache --data-root {args.data_root})")
            continue
        dataset = build_dataset(args.data_root, crop_first, cached, jitter_on_device, crop)
        with decoder(png_decoder):  # forked loader workers inherit it
            add(name, 1, per_process(dataset, args.samples))
            if args.workers:
                add(name, args.workers, with_workers(dataset, args.samples * args.workers, args.workers))
    write_csv(args.csv, rows, COLUMNS)
    print(f"{height}x{width} frames, {crop[0]}x{crop[1]} crops, scale 0.5-2.0: wrote {args.csv}")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="benchmarks/data_loading.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=existing_folder, required=True,
                        help="data set with generated masks (and a cache)")
    parser.add_argument("--crop", type=crop_side, nargs=2, default=list(RunConfig().crop_size), metavar=("H", "W"),
                        help="training crop")
    parser.add_argument("--samples", type=positive_int, default=40, help="timed samples per process")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="DataLoader processes (0: single process only)")
    parser.add_argument("--csv", type=writable_file, default=Path("outputs/benchmark_data_loading.csv"),
                        help="CSV to write")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_benchmark(main, get_args_parser().parse_args()))
