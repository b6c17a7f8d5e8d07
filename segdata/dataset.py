"""What every segmentation data set shares: ``(image, mask, meta)`` samples of paired files, transformed with a
seed per sample, and the sampler that gives those seeds."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors

from segdata.classes import ClassTable
from segdata.masks import read_image, read_train_ids, size_mismatch, unlabelled_mask

__all__ = ["EpochStream", "FrameSubset", "SeededSampler", "SegmentationDataset", "file_sizes", "spread_frames"]


def file_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    """(height, width) of image files, from their headers (no pixel is decoded); ValueError naming a file that is
    empty, damaged or not an image."""
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.append((image.height, image.width))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            empty = Path(path).is_file() and Path(path).stat().st_size == 0
            raise ValueError(f"{path}: {'is empty (0 bytes)' if empty else 'cannot be read as an image'} "
                             f"({type(error).__name__}); replace or remove it") from None
    return sizes


class SegmentationDataset(Dataset):
    """``(image, mask, meta)`` for the frames of one split; subclasses fill ``images`` (and ``masks`` where the split
    has labels) and read a frame in :meth:`load_arrays`.

    image: (3, H, W) (uint8 ``tv_tensors.Image`` untransformed, float after the v2
    transforms); mask: (H, W) uint8 train ids with 255 = ignore (all 255 on a split
    without labels; the loops make it int64 on the device); meta: ``{"stem",
    "image_path"}``, the stem naming the frame's outputs.

    An index may be ``(index, seed)`` (see :class:`SeededSampler`): the sample's
    random augmentation then depends on that seed alone, whichever worker loads it.
    """

    root: Path
    split: str
    images: list[Path]
    masks: list[Path]
    has_labels: bool
    classes: ClassTable
    kind: str
    """The data set's name for --dataset: cityscapes, voc or folder."""
    transforms: Callable | None = None
    cache = None
    """A ``segdata.frame_cache.FrameCache`` to read decoded frames from (see :meth:`use_cache`), or None."""

    def __len__(self) -> int:
        return len(self.images)

    def with_transforms(self, transforms: Callable | None) -> SegmentationDataset:
        """The same split with other transforms (a training split opened before its crop was known gets its
        training transform, built once)."""
        split = copy.copy(self)
        split.transforms = transforms
        return split

    def describe(self) -> str:
        """Where the split's frames come from, in words: ``train: 367 frames from the list ROOT/train.txt, read from
        the decoded cache ROOT/cache`` (a run says it at its start)."""
        where = getattr(self, "source", "") or str(self.root)
        cache = f", read from the decoded cache {self.cache.cache_root}" if self.cache is not None else ""
        return f"{self.split}: {len(self)} frames from {where}{cache}"

    def stem(self, index: int) -> str:
        """The name of a frame's outputs (a path relative to the split, without suffix, where frames nest)."""
        return self.images[index].stem

    def use_cache(self, cache_root: Path | None) -> None:
        """Read frames from the decoded cache at ``cache_root`` (memory maps; CacheError now if it is missing or
        stale); None: from the files."""
        if cache_root is not None:
            from segdata.frame_cache import FrameCache

            self.cache = FrameCache.open(self, cache_root)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed (H, W, 3) uint8 image and (H, W) uint8 train-id mask: memory maps from the cache, or
        :meth:`read_arrays`."""
        if self.cache is not None:
            return self.cache.load(self.stem(index))
        return self.read_arrays(index)

    def read_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image and train-id mask decoded from their files (the mask mapped by the data set's class table
        ``classes``; all 255 on a split without labels)."""
        image = read_image(self.images[index])
        if not self.has_labels:
            return image, unlabelled_mask(image.shape)
        train_ids = read_train_ids(self.masks[index], self.classes)
        if train_ids.shape[:2] != image.shape[:2]:
            raise ValueError(size_mismatch(self.images[index], self.masks[index], image.shape, train_ids.shape))
        return image, train_ids

    def read_train_ids(self, index: int) -> np.ndarray:
        """A frame's (H, W) uint8 train ids alone (its image is not read): from the cache, or the mask file."""
        if self.cache is not None:
            return np.asarray(self.cache.load(self.stem(index))[1])
        return read_train_ids(self.masks[index], self.classes)

    def image_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every image, from the file headers (no pixel is decoded)."""
        return file_sizes(self.images)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The untransformed image and mask of one frame, as (3, H, W) and (H, W) uint8 tv_tensors."""
        image, mask = self.load_arrays(index)
        return (tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)),
                tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):  # the caller's random state is left alone
            if seed is not None:
                torch.manual_seed(seed)
            extra = ()
            if getattr(self.transforms, "takes_arrays", False):
                image, mask, *extra = self.transforms(*self.load_arrays(index))
            else:
                image, mask = self.load(index)
                if self.transforms is not None:
                    image, mask = self.transforms(image, mask)
        meta = {"stem": self.stem(index), "image_path": str(self.images[index])}
        if extra:  # the colour jitter's parameters, applied to the batch on the device
            meta["jitter"] = extra[0]
        # uint8 masks: 8x less to ship from a worker and to copy to the GPU; the training device makes them int64
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor), meta


def spread_frames(dataset: SegmentationDataset, count: int | None) -> SegmentationDataset:
    """The split, or ``count`` of its frames spread evenly over it (the same ones every time: a fixed subset)."""
    if count is None or count >= len(dataset):
        return dataset
    return FrameSubset(dataset, [int(index * len(dataset) / count) for index in range(count)])


class FrameSubset(Dataset):
    """Some frames of a split, seen as a split of their own: samples, stems, files and sizes of those frames only;
    everything else (split, root, classes, has_labels, ...) is the split's. ``of_frames``: the split's size."""

    def __init__(self, dataset: SegmentationDataset, indices: list[int]) -> None:
        self.dataset, self.indices, self.of_frames = dataset, list(indices), len(dataset)

    def __len__(self) -> int:
        return len(self.indices)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (while unpickled in a spawned worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        if isinstance(key, tuple):
            return self.dataset[(self.indices[key[0]], key[1])]
        return self.dataset[self.indices[key]]

    @property
    def images(self) -> list[Path]:
        return [self.dataset.images[index] for index in self.indices]

    @property
    def masks(self) -> list[Path]:
        return [self.dataset.masks[index] for index in self.indices] if self.dataset.masks else []

    def stem(self, index: int) -> str:
        return self.dataset.stem(self.indices[index])

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        return self.dataset.load(self.indices[index])

    def read_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.read_arrays(self.indices[index])

    def read_train_ids(self, index: int) -> np.ndarray:
        return self.dataset.read_train_ids(self.indices[index])

    def image_sizes(self) -> list[tuple[int, int]]:
        sizes = self.dataset.image_sizes()
        return [sizes[index] for index in self.indices]

    def label_id_files(self) -> list[Path]:
        files = self.dataset.label_id_files()
        return [files[index] for index in self.indices]


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)``: the indices of ``sampler``, each with a seed for its augmentation.

    Order and seeds come from a generator of the sampler's own, seeded from
    (``seed``, epoch, ``rank``) at every epoch: they do not depend on the global
    random state, on which worker loads a sample, how many workers there are,
    or whether the loader's persistent workers drew their base seed this epoch
    or an earlier one, so a resumed run repeats an uninterrupted one exactly.
    A ``RandomSampler`` inside shuffles with that generator; a
    ``DistributedSampler`` shuffles by its own (seed, epoch).
    """

    def __init__(self, sampler: Sampler[int], seed: int = 0, rank: int = 0) -> None:
        self.sampler, self.seed, self.rank, self.epoch = sampler, seed, rank, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_009 + self.rank)
        if hasattr(self.sampler, "generator"):
            self.sampler.generator = generator
        indices = list(self.sampler)
        seeds = torch.randint(0, 2**62, (len(indices),), generator=generator).tolist()
        return iter(zip(indices, seeds))

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """The epoch about to start (also passed on to a DistributedSampler)."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class EpochStream(Sampler[tuple[int, int]]):
    """The epochs of a :class:`SeededSampler` one after another, from :attr:`first_epoch` on, each cut to whole
    batches of ``batch_size`` (what ``drop_last`` does per epoch).

    One loader iterator then serves a whole run: its workers go on preparing the
    next epoch's first batches while an epoch ends (checkpoint, validation),
    instead of starting from an empty queue at every epoch. Each epoch holds the
    samples and seeds the sampler gives for it, so a run resumed at an epoch
    repeats an uninterrupted one. :attr:`skip_batches` of the first epoch are
    left out (drawn, not loaded): a run that ended inside an epoch and is made
    longer goes on with that epoch's next batch. ``len()`` is one epoch's samples.
    """

    def __init__(self, sampler: SeededSampler, batch_size: int, first_epoch: int = 0) -> None:
        self.sampler, self.batch_size, self.first_epoch = sampler, batch_size, first_epoch
        self.skip_batches = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for epoch in itertools.count(self.first_epoch):
            self.sampler.set_epoch(epoch)
            skipped = self.skip_batches * self.batch_size if epoch == self.first_epoch else 0
            yield from itertools.islice(iter(self.sampler), skipped, len(self))

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size * self.batch_size
