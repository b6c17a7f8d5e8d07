"""A decoded cache of any data set: each frame's image and train-id mask as memory-mappable uint8 arrays, with a
manifest.

CLI::

    python -m segdata.cache --dataset folder --data-root data/own --classes data/own/classes.json --splits train
    python -m cityscapes.cache --data-root data --splits train val        # Cityscapes, as before

writes ``{data-root}/cache/{split}/{frame}.image.npy`` ((H, W, 3) RGB) and ``{frame}.mask.npy`` ((H, W) train
ids, after the class table), atomically, and records in ``cache/manifest.json`` the source files (path, size,
mtime) and the class table each entry was made from. Entries whose sources changed, or that a killed run left
without a manifest record, are found and rebuilt by the next run. Training with ``--cache`` then reads only the
rows under each crop window (decoding, most of a sample's time, is gone).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segdata.files import OutputError, check_output_folder, free_bytes, write_bytes_atomic, write_json
from segdata.flags import Parser, ignoring_interrupts, report_error
from segdata.frame_cache import (
    CACHE_DIR,
    MANIFEST,
    VERSION,
    CacheError,
    FrameCache,
    cache_command,
    entry_paths,
    entry_record,
    read_manifest,
    table_digest,
)

__all__ = ["CACHE_DIR", "CacheError", "FrameCache", "build_cache", "cache_command", "entry_paths", "main"]

BYTES_PER_PIXEL = 4  # 3 for the RGB image, 1 for the train-id mask


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def build_cache(datasets: Sequence, cache_root: Path, progress: bool = True, save_every: int = 50) -> dict[str, int]:
    """Write the arrays of every frame of ``datasets`` (labelled splits, read from their files) whose entry is
    missing or stale; returns counts (written, up to date)."""
    cache_root = Path(cache_root)
    frames = read_manifest(cache_root)
    jobs = []
    for dataset in datasets:
        table = table_digest(dataset)
        for index in range(len(dataset)):
            key, record = f"{dataset.split}/{dataset.stem(index)}", entry_record(dataset, index, table)
            paths = entry_paths(cache_root, dataset.split, dataset.stem(index))
            if frames.get(key) != record or not all(path.exists() for path in paths):
                jobs.append((dataset, index, key, record, paths))
    counts = {"written": 0, "up_to_date": sum(len(dataset) for dataset in datasets) - len(jobs)}

    def save_manifest() -> None:
        write_json(cache_root / MANIFEST, {"version": VERSION, "frames": dict(sorted(frames.items()))})

    try:
        for dataset, index, key, record, (image_out, mask_out) in tqdm(jobs, desc="cache", unit="frame",
                                                                        disable=not progress):
            frames.pop(key, None)  # not valid until both arrays are in place
            image, mask = dataset.read_arrays(index)
            write_bytes_atomic(image_out, _npy_bytes(image))
            write_bytes_atomic(mask_out, _npy_bytes(mask))
            frames[key] = record
            counts["written"] += 1
            if counts["written"] % save_every == 0:
                save_manifest()
    except BaseException:
        with contextlib.suppress(OSError):  # on a full disk the manifest saved last stays, and stays true
            save_manifest()  # the frames completed so far count: a rerun starts after them
        raise
    save_manifest()
    return counts


def required_bytes(datasets: Sequence) -> int:
    """Disk the arrays take: (H x W x 4) bytes per frame, read from the image headers."""
    return sum(height * width * BYTES_PER_PIXEL + 2 * 128 for dataset in datasets
               for height, width in dataset.image_sizes())


def cached_bytes(cache_root: Path) -> int:
    """Disk the cache's arrays take already (a rebuild replaces them, so they count as free)."""
    return sum(path.stat().st_size for path in cache_root.rglob("*.npy")) if cache_root.is_dir() else 0


def get_args_parser(prog: str = "python -m segdata.cache", own_data: bool = True,
                    splits: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The cache's flags; ``own_data``: --dataset and --classes (python -m cityscapes.cache has neither)."""
    parser = Parser(prog=prog, description="Write the decoded image/mask cache that train_dlv3p.py --cache reads.")
    if own_data:
        parser.add_argument("--dataset", choices=["folder", "voc"], default="folder", help="the data set's layout")
        parser.add_argument("--classes", type=Path, default=None, help="class table of --dataset folder")
    parser.add_argument(
        "--data-root", "--data_root", type=Path, default=Path("data"), help="data set root (default: data)"
    )
    parser.add_argument("--splits", nargs="+", choices=splits, default=["train"], help="splits to cache")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: {data-root}/cache)")
    return parser


def main(args: argparse.Namespace, open_splits=None) -> int:
    """Build the cache of ``args.splits``; ``open_splits(args) -> datasets`` (default: a generic kind's)."""
    cache_root = args.cache_dir or args.data_root / CACHE_DIR
    try:
        check_output_folder(cache_root, "--cache-dir")
        datasets = (open_splits or _open_splits)(args)
        needed = required_bytes(datasets)
        free = free_bytes(cache_root) + cached_bytes(cache_root)
        print(f"the cache of {', '.join(args.splits)} takes {needed / 1e9:.2f} GB in {cache_root} ({free / 1e9:.2f} GB "
              "free or cached)")
        if needed > free:
            raise OutputError(f"{cache_root}: the cache needs {needed / 1e9:.2f} GB and {free / 1e9:.2f} GB are free; "
                              "free space, or choose a roomier --cache-dir")
        start = time.perf_counter()
        counts = build_cache(datasets, cache_root)
        seconds = time.perf_counter() - start
    except (OSError, ValueError, KeyboardInterrupt) as error:  # a full disk, Ctrl-C: every entry recorded is whole
        with ignoring_interrupts():
            return report_error(error, "the frames cached so far are kept; run again to go on" if isinstance(
                error, KeyboardInterrupt) else "", writing=cache_root,
                write_advice="free space and run again (the frames cached so far are kept)")
    print(f"{counts['written']} frames written, {counts['up_to_date']} up to date -> {cache_root} "
          f"({seconds:.1f} s, {counts['written'] / max(seconds, 1e-9):.1f} frames/s)")
    return 0


def _open_splits(args: argparse.Namespace) -> list:
    from segdata.kinds import GENERIC_KINDS

    kind = GENERIC_KINDS[args.dataset]
    classes = kind.class_table(args.classes)
    datasets = [kind.open_split(args.data_root, split, classes, None, None) for split in args.splits]
    unlabelled = [dataset.split for dataset in datasets if not dataset.has_labels]
    if unlabelled:
        raise ValueError(f"argument --splits: {unlabelled[0]} has no masks; cache the splits a run trains on")
    return datasets


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
