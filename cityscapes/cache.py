"""A decoded cache: each frame's image and trainId mask as memory-mappable uint8 arrays, with a manifest.

CLI::

    python -m cityscapes.cache --data-root data --splits train val

writes ``{data-root}/cache/{split}/{city}/{stem}_leftImg8bit.npy`` ((H, W, 3) RGB)
and ``{stem}_labelTrainIds.npy`` ((H, W)), atomically, and records in
``cache/manifest.json`` the source files (path, size, mtime) each entry was
made from. Entries whose sources changed, or that a killed run left without a
manifest record, are found and rebuilt by the next run. Training with
``--cache`` then reads only the rows under each crop window (PNG decoding,
most of a sample's time, is gone).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cityscapes.files import OutputError, check_output_folder, free_bytes, read_png, write_bytes_atomic, write_json
from cityscapes.flags import Parser, report_error
from cityscapes.paths import GENERATED_DIR, city_of, generated_mask_path, image_files, stem_of

__all__ = ["CACHE_DIR", "CacheError", "FrameCache", "build_cache", "cache_command"]

CACHE_DIR = "cache"
MANIFEST = "manifest.json"
BYTES_PER_PIXEL = 4  # 3 for the RGB image, 1 for the trainId mask


class CacheError(ValueError):
    """A cache entry that is missing, stale or unreadable; the message names the frame and the rebuilding command."""


def cache_command(data_root: Path, split: str) -> str:
    """The command that (re)builds the cache of a split."""
    return f"python -m cityscapes.cache --data-root {data_root} --splits {split}"


def _source_record(path: Path) -> list:
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def entry_paths(cache_root: Path, split: str, stem: str) -> tuple[Path, Path]:
    """The (image, mask) array files of one frame."""
    folder = Path(cache_root) / split / city_of(stem)
    return folder / f"{stem}_leftImg8bit.npy", folder / f"{stem}_labelTrainIds.npy"


def _read_manifest(cache_root: Path) -> dict:
    path = Path(cache_root) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["frames"]
    except (ValueError, KeyError) as error:
        raise CacheError(
            f"{path}: not a readable cache manifest ({error}); delete {cache_root} and rebuild it"
        ) from None


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


@dataclass
class FrameCache:
    """Read access to the cached arrays of one split, checked against the manifest when opened."""

    data_root: Path
    split: str
    cache_root: Path

    @classmethod
    def open(cls, data_root: Path, split: str, images: Sequence[Path], masks: Sequence[Path],
             cache_root: Path | None = None) -> FrameCache:
        """The cache of ``split``; CacheError naming the first frame that is missing or out of date."""
        cache_root = Path(cache_root) if cache_root is not None else Path(data_root) / CACHE_DIR
        frames = _read_manifest(cache_root)
        for image, mask in zip(images, masks):
            key = f"{split}/{stem_of(image)}"
            record = frames.get(key)
            if record is None:
                raise CacheError(f"{stem_of(image)} ({split}): not in the cache {cache_root}; build it with "
                                 f"{cache_command(data_root, split)}")
            if record != {"image": _source_record(image), "mask": _source_record(mask)}:
                raise CacheError(f"{stem_of(image)} ({split}): its image or mask changed since it was cached; rebuild "
                                 f"with {cache_command(data_root, split)}")
        return cls(Path(data_root), split, cache_root)

    def load(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """The (H, W, 3) image and (H, W) mask of a frame as read-only memory maps."""
        image_path, mask_path = entry_paths(self.cache_root, self.split, stem)
        try:
            image, mask = np.load(image_path, mmap_mode="r"), np.load(mask_path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise CacheError(f"{stem} ({self.split}): cache entry unreadable ({error}); rebuild with "
                             f"{cache_command(self.data_root, self.split)}") from None
        if image.ndim != 3 or image.shape[:2] != mask.shape:
            raise CacheError(
                f"{stem} ({self.split}): cache entry damaged (shapes {image.shape}, {mask.shape}); rebuild "
                f"with {cache_command(self.data_root, self.split)}"
            )
        return image, mask


def build_cache(data_root: Path, splits: Sequence[str], cache_root: Path | None = None, progress: bool = True,
                save_every: int = 50) -> dict[str, int]:
    """Write the arrays of every frame whose entry is missing or stale; returns counts (written, up to date)."""
    data_root = Path(data_root)
    cache_root = Path(cache_root) if cache_root is not None else data_root / CACHE_DIR
    frames = _read_manifest(cache_root)
    jobs = []
    for split in splits:
        for image in image_files(data_root, split):
            stem = stem_of(image)
            mask = generated_mask_path(data_root / GENERATED_DIR, split, stem, "labelTrainIds")
            if not mask.exists():
                raise FileNotFoundError(f"{mask}: missing; generate the masks first with "
                                        f"python -m cityscapes.generate_gt --data-root {data_root}")
            record = {"image": _source_record(image), "mask": _source_record(mask)}
            if frames.get(f"{split}/{stem}") != record or not all(
                path.exists() for path in entry_paths(cache_root, split, stem)
            ):
                jobs.append((split, stem, image, mask, record))
    counts = {"written": 0, "up_to_date": sum(len(image_files(data_root, split)) for split in splits) - len(jobs)}

    def save_manifest() -> None:
        write_json(cache_root / MANIFEST, {"version": 1, "frames": dict(sorted(frames.items()))})

    try:
        for split, stem, image_path, mask_path, record in tqdm(jobs, desc="cache", unit="frame", disable=not progress):
            frames.pop(f"{split}/{stem}", None)  # not valid until both arrays are in place
            image, mask = read_png(image_path), read_png(mask_path)
            if image.shape[:2] != mask.shape:
                raise ValueError(f"{image_path}: is {image.shape[0]}x{image.shape[1]} but its mask {mask_path} is "
                                 f"{mask.shape[0]}x{mask.shape[1]}; run python -m cityscapes.check --data-root "
                                 f"{data_root}")
            image_out, mask_out = entry_paths(cache_root, split, stem)
            write_bytes_atomic(image_out, _npy_bytes(image))
            write_bytes_atomic(mask_out, _npy_bytes(mask))
            frames[f"{split}/{stem}"] = record
            counts["written"] += 1
            if counts["written"] % save_every == 0:
                save_manifest()
    except BaseException:
        with contextlib.suppress(OSError):  # on a full disk the manifest saved last stays, and stays true
            save_manifest()  # the frames completed so far count: a rerun starts after them
        raise
    save_manifest()
    return counts


def required_bytes(data_root: Path, splits: Sequence[str]) -> int:
    """Disk the arrays of ``splits`` take: (H x W x 4) bytes per frame, read from the PNG headers."""
    total = 0
    for split in splits:
        for image in image_files(data_root, split):
            with Image.open(image) as opened:
                total += opened.width * opened.height * BYTES_PER_PIXEL + 2 * 128  # two .npy headers
    return total


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m cityscapes.cache",
        description="Write the decoded image/mask cache that train_dlv3p.py --cache reads.",
    )
    parser.add_argument(
        "--data-root", "--data_root", type=Path, default=Path("data"), help="data set root (default: data)"
    )
    parser.add_argument("--splits", nargs="+", choices=["train", "val"], default=["train"], help="splits to cache")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: {data-root}/cache)")
    return parser


def cached_bytes(cache_root: Path) -> int:
    """Disk the cache's arrays take already (a rebuild replaces them, so they count as free)."""
    return sum(path.stat().st_size for path in cache_root.rglob("*.npy")) if cache_root.is_dir() else 0


def main(args: argparse.Namespace) -> int:
    cache_root = args.cache_dir or args.data_root / CACHE_DIR
    try:
        check_output_folder(cache_root, "--cache-dir")
        needed = required_bytes(args.data_root, args.splits)
        if needed == 0:
            raise FileNotFoundError(f"{args.data_root / 'leftImg8bit'}: no images in {', '.join(args.splits)}")
        free = free_bytes(cache_root) + cached_bytes(cache_root)
        print(f"the cache of {', '.join(args.splits)} takes {needed / 1e9:.2f} GB in {cache_root} ({free / 1e9:.2f} GB "
              "free or cached)")
        if needed > free:
            raise OutputError(f"{cache_root}: the cache needs {needed / 1e9:.2f} GB and {free / 1e9:.2f} GB are free; "
                              "free space, or choose a roomier --cache-dir")
        start = time.perf_counter()
        counts = build_cache(args.data_root, args.splits, cache_root)
        seconds = time.perf_counter() - start
    except (OSError, ValueError) as error:  # a disk that filled up meanwhile: every entry in the manifest is complete
        return report_error(error, writing=cache_root,
                            write_advice="free space and run again (the frames cached so far are kept)")
    print(f"{counts['written']} frames written, {counts['up_to_date']} up to date -> {cache_root} "
          f"({seconds:.1f} s, {counts['written'] / max(seconds, 1e-9):.1f} frames/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
