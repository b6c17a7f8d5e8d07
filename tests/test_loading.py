"""Loader settings: the default worker count, one thread per worker, the epochs of a run as one stream."""

import cv2
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from segdata import loading
from segdata.dataset import EpochStream, SeededSampler


@pytest.mark.parametrize("cpus, processes, device, expected", [
    (16, 1, "cuda", 15),   # one GPU on a 16-core machine: every core but the training process's own
    (16, 4, "cuda", 3),    # 4 GPUs share the cores
    (64, 1, "cuda", 16),   # capped
    (2, 1, "cuda", 1),
    (1, 1, "cuda", 1),
    (2, 1, "cpu", 1),      # on the CPU the model takes the cores
    (32, 1, "cpu", 1),
])
def test_default_workers_follow_the_cpus_this_process_may_use(monkeypatch, cpus, processes, device, expected):
    monkeypatch.setattr(loading, "available_cpus", lambda: cpus)
    assert loading.default_workers(device, processes) == expected


def test_available_cpus_is_the_affinity_mask_not_the_machine():
    import os

    assert loading.available_cpus() == len(os.sched_getaffinity(0)) <= os.cpu_count()


class ThreadCounts(Dataset):
    """Each sample: the OpenCV and torch thread counts of the process that made it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[int, int]:
        return cv2.getNumThreads(), torch.get_num_threads()


def test_each_worker_runs_one_opencv_and_one_torch_thread():
    options = loading.loader_options(2, "cpu")
    assert options["persistent_workers"] and options["prefetch_factor"] == loading.PREFETCH_BATCHES
    assert not options["pin_memory"] and loading.loader_options(2, "cuda")["pin_memory"]
    assert loading.loader_options(0, "cpu") == {"num_workers": 0, "pin_memory": False}
    counts = [tuple(sample) for sample in DataLoader(ThreadCounts(), batch_size=None, **options)]
    assert counts == [(1, 1)] * 4


def test_epoch_stream_is_the_seeded_epochs_one_after_another_cut_to_whole_batches():
    def epoch(number):
        sampler = SeededSampler(RandomSampler(range(10)), seed=3)
        sampler.set_epoch(number)
        return list(sampler)[:8]  # batches of 4: drop_last keeps 8 of 10

    stream = EpochStream(SeededSampler(RandomSampler(range(10)), seed=3), batch_size=4, first_epoch=2)
    assert len(stream) == 8
    iterator = iter(stream)
    samples = [next(iterator) for _ in range(24)]
    assert samples == epoch(2) + epoch(3) + epoch(4)
    assert epoch(2) != epoch(3)


def test_an_epoch_stream_that_goes_on_inside_an_epoch_leaves_out_its_first_batches_only():
    def epoch(number):
        sampler = SeededSampler(RandomSampler(range(10)), seed=3)
        sampler.set_epoch(number)
        return list(sampler)[:8]

    stream = EpochStream(SeededSampler(RandomSampler(range(10)), seed=3), batch_size=4, first_epoch=2)
    stream.skip_batches = 1  # a run that ended after the first batch of epoch 2 goes on with its second
    iterator = iter(stream)
    assert [next(iterator) for _ in range(12)] == epoch(2)[4:] + epoch(3)
