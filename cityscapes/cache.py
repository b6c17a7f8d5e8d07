"""``python -m cityscapes.cache --data-root data --splits train val``: the decoded cache (``segdata.cache``) of a
Cityscapes data root, its images and generated trainId masks, read by ``train_dlv3p.py --cache``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cityscapes.dataset import CityscapesSegmentation
from segdata import cache

__all__ = ["build_cache", "get_args_parser", "main"]


def _splits(data_root: Path, splits: Sequence[str]) -> list[CityscapesSegmentation]:
    return [CityscapesSegmentation(data_root, split) for split in splits]


def build_cache(data_root: Path, splits: Sequence[str], cache_root: Path | None = None, progress: bool = True,
                save_every: int = 50) -> dict[str, int]:
    """Cache the frames of ``splits`` (in ``{data_root}/cache`` unless given); returns counts (written, up to date)."""
    cache_root = Path(cache_root) if cache_root is not None else Path(data_root) / cache.CACHE_DIR
    return cache.build_cache(_splits(data_root, splits), cache_root, progress, save_every)


def get_args_parser() -> argparse.ArgumentParser:
    return cache.get_args_parser("python -m cityscapes.cache", own_data=False, splits=["train", "val"])


def main(args: argparse.Namespace) -> int:
    return cache.main(args, lambda args: _splits(args.data_root, args.splits))


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
