"""python -m cityscapes.cache: arrays equal to the PNGs, stale and partial entries rebuilt, clear errors."""

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from cityscapes.cache import build_cache, get_args_parser, main
from cityscapes.dataset import CityscapesSegmentation
from cityscapes.paths import generated_mask_path, image_files, stem_of
from segdata.cache import CacheError, entry_paths
from segdata.dataset import SeededSampler
from segdata.files import read_png
from segdata.transforms import train_transforms


def test_cached_arrays_equal_the_pngs(tiny_copy, capsys):
    assert main(get_args_parser().parse_args(["--data-root", str(tiny_copy), "--splits", "train", "val"])) == 0
    out = capsys.readouterr().out
    assert "the cache of train, val takes 0.00 GB" in out  # 6 x 64x128x4 bytes
    assert "6 frames written, 0 up to date" in out
    for image_path in image_files(tiny_copy, "train"):
        stem = stem_of(image_path)
        image, mask = (np.load(path, mmap_mode="r") for path in entry_paths(tiny_copy / "cache", "train", stem))
        assert isinstance(image, np.memmap) and np.array_equal(image, read_png(image_path))
        assert np.array_equal(
            mask, read_png(generated_mask_path(tiny_copy / "generated_gt", "train", stem, "labelTrainIds"))
        )
    assert main(get_args_parser().parse_args(["--data-root", str(tiny_copy), "--splits", "train"])) == 0
    assert "0 frames written, 3 up to date" in capsys.readouterr().out


def test_training_samples_are_the_same_from_the_cache(tiny_copy):
    build_cache(tiny_copy, ["train"], progress=False)
    from_png = CityscapesSegmentation(tiny_copy, "train", train_transforms((32, 48), (0.5, 2.0)))
    from_cache = CityscapesSegmentation(
        tiny_copy, "train", train_transforms((32, 48), (0.5, 2.0)), cache_root=tiny_copy / "cache"
    )
    for index in range(3):
        first, second = from_png[(index, 1234 + index)], from_cache[(index, 1234 + index)]
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_stale_missing_and_partial_entries(tiny_copy):
    build_cache(tiny_copy, ["train"], progress=False)
    images = image_files(tiny_copy, "train")
    mask = generated_mask_path(tiny_copy / "generated_gt", "train", stem_of(images[1]), "labelTrainIds")
    os.utime(mask, ns=(mask.stat().st_mtime_ns + 10**9,) * 2)  # regenerated since it was cached
    with pytest.raises(
        CacheError,
        match=f"{stem_of(images[1])} \\(train\\): its image or mask changed since it was "
        f"cached; rebuild with python -m cityscapes.cache --data-root {tiny_copy} --splits train",
    ):
        CityscapesSegmentation(tiny_copy, "train", cache_root=tiny_copy / "cache")
    for path in entry_paths(tiny_copy / "cache", "train", stem_of(images[2])):  # a run killed before this frame
        path.unlink()
    assert build_cache(tiny_copy, ["train"], progress=False) == {"written": 2, "up_to_date": 1}
    CityscapesSegmentation(tiny_copy, "train", cache_root=tiny_copy / "cache")
    with pytest.raises(CacheError, match="\\(val\\): not in the cache .*--splits val"):
        CityscapesSegmentation(tiny_copy, "val", cache_root=tiny_copy / "cache")
    entry_paths(tiny_copy / "cache", "train", stem_of(images[0]))[0].write_bytes(b"broken")
    dataset = CityscapesSegmentation(tiny_copy, "train", cache_root=tiny_copy / "cache")
    with pytest.raises(CacheError, match="cache entry unreadable"):
        dataset[0]


def test_a_sample_depends_on_its_seed_not_on_the_worker(tiny_copy):
    """SeededSampler: the same batches with 0 or 2 workers, and the caller's random state untouched."""
    dataset = CityscapesSegmentation(tiny_copy, "train", train_transforms((32, 48), (0.5, 2.0)))

    def batches(workers):
        torch.manual_seed(7)
        loader = DataLoader(dataset, 1, sampler=SeededSampler(RandomSampler(dataset)), num_workers=workers)
        return [(images, masks) for images, masks, _ in loader]

    single, parallel = batches(0), batches(2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(single, parallel))
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    dataset[(0, 99)]
    assert torch.equal(torch.rand(1), expected)
