"""Reading the decoded cache (``segdata.cache`` builds it): the manifest, an entry's files, and the memory maps of
a split's frames, checked against their sources and the class table's mapping before any is served."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CACHE_DIR", "MANIFEST", "VERSION", "CacheError", "FrameCache", "cache_command", "entry_paths",
           "entry_record", "read_manifest", "table_digest"]

CACHE_DIR = "cache"
MANIFEST = "manifest.json"
VERSION = 3  # 1 named Cityscapes entries by city; 2 digested class names too: their caches are rebuilt


class CacheError(ValueError):
    """A cache entry that is missing, stale or unreadable; the message names the frame and the rebuilding command."""


def cache_command(dataset, cache_root: Path | None = None) -> str:
    """The command that (re)builds the cache of a data set's split (in ``cache_root`` where that is not the data
    set's own ``cache/``, as for VOC's root given above ``VOC2012/``): the data set's own
    (``dataset.cache_command()``), or this module's CLI for the generic kinds."""
    if hasattr(dataset, "cache_command"):
        return dataset.cache_command()
    classes = f" --classes {dataset.classes.source}" if dataset.kind == "folder" else ""
    elsewhere = (f" --cache-dir {cache_root}" if cache_root is not None
                 and Path(cache_root).resolve() != (Path(dataset.root) / CACHE_DIR).resolve() else "")
    return (f"python -m segdata.cache --dataset {dataset.kind} --data-root {dataset.root}{classes} --splits "
            f"{dataset.split}{elsewhere}")


def source_record(path: Path) -> list:
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def table_digest(dataset) -> str:
    """What of a split's class table maps its masks to train ids (values, colours, ignored ones), as a short digest:
    renaming a class leaves the cached masks as they are."""
    table = dataset.classes.as_dict()
    mapping = {"classes": [[entry["color"], entry["values"]] for entry in table["classes"]],
               "ignore": table["ignore"], "ignore_colors": table["ignore_colors"]}
    return hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()[:16]


def entry_record(dataset, index: int, table: str) -> dict:
    """What an entry was made from: its image and mask files, and the class table (digest) that mapped the mask."""
    return {"image": source_record(dataset.images[index]), "mask": source_record(dataset.masks[index]),
            "classes": table}


def entry_paths(cache_root: Path, split: str, stem: str) -> tuple[Path, Path]:
    """The (image, mask) array files of one frame."""
    base = Path(cache_root) / split / stem
    return base.with_name(base.name + ".image.npy"), base.with_name(base.name + ".mask.npy")


def read_manifest(cache_root: Path) -> dict:
    path = Path(cache_root) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
        return manifest["frames"] if manifest.get("version") == VERSION else {}
    except (ValueError, KeyError, AttributeError) as error:
        raise CacheError(
            f"{path}: not a readable cache manifest ({error}); delete {cache_root} and rebuild it"
        ) from None


@dataclass
class FrameCache:
    """Read access to the cached arrays of one split, checked against the manifest when opened."""

    cache_root: Path
    split: str
    command: str

    @classmethod
    def open(cls, dataset, cache_root: Path) -> FrameCache:
        """The cache of a data set's split; CacheError naming the first frame that is missing or out of date."""
        cache_root, frames, command = Path(cache_root), read_manifest(cache_root), cache_command(dataset, cache_root)
        table = table_digest(dataset)
        for index in range(len(dataset)):
            stem = dataset.stem(index)
            record = frames.get(f"{dataset.split}/{stem}")
            if record is None:
                raise CacheError(f"{stem} ({dataset.split}): not in the cache {cache_root}; build it with {command}")
            current = entry_record(dataset, index, table)
            if record != current:
                what = ("the class table's mapping of mask values (or colours) to classes changed" if
                        {key: value for key, value in record.items() if key != "classes"} ==
                        {key: value for key, value in current.items() if key != "classes"}
                        else "its image or mask changed")
                raise CacheError(f"{stem} ({dataset.split}): {what} since it was cached; rebuild with {command}")
        return cls(cache_root, dataset.split, command)

    def load(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """The (H, W, 3) image and (H, W) mask of a frame as read-only memory maps."""
        image_path, mask_path = entry_paths(self.cache_root, self.split, stem)
        try:
            image, mask = np.load(image_path, mmap_mode="r"), np.load(mask_path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise CacheError(f"{stem} ({self.split}): cache entry unreadable ({error}); rebuild with "
                             f"{self.command}") from None
        if image.ndim != 3 or image.shape[:2] != mask.shape:
            raise CacheError(f"{stem} ({self.split}): cache entry damaged (shapes {image.shape}, {mask.shape}); "
                             f"rebuild with {self.command}")
        return image, mask
