"""How data loaders are set up: the default number of worker processes, and one thread per worker.

A worker decodes and crops one sample at a time; OpenCV and torch would each
start a thread per core in every worker, and fifteen workers on sixteen cores
would then run hundreds of threads that fight for the same cores.
"""

from __future__ import annotations

import os
import signal

import cv2
import torch

__all__ = ["MAX_DEFAULT_WORKERS", "PREFETCH_BATCHES", "available_cpus", "default_workers", "loader_options",
           "one_thread_per_worker"]

MAX_DEFAULT_WORKERS = 16
"""The most workers a process gets by default: more feed no single GPU faster and each holds its own memory."""
PREFETCH_BATCHES = 4
"""Batches each worker keeps ready (DataLoader's prefetch_factor; see benchmarks/train_throughput.py --prefetch)."""


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or ``taskset``'s share, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers(device_type: str, processes_per_machine: int = 1) -> int:
    """Loader workers per process when ``--workers`` is not given.

    On a GPU: every CPU this process may use, shared among the training processes of the machine, less one for
    the process itself (at least 1, at most :data:`MAX_DEFAULT_WORKERS`). On the CPU the model is what takes the
    time and it uses every core, so one worker overlaps loading with compute.
    """
    if device_type != "cuda":
        return 1
    share = available_cpus() // max(1, processes_per_machine)
    return max(1, min(MAX_DEFAULT_WORKERS, share - 1))


def one_thread_per_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every loader: Ctrl-C left to the main process (a terminal sends SIGINT to every process
    of the command: a worker killed by it would turn the main process's clean stop into "DataLoader worker exited
    unexpectedly"). The worker runs one torch thread (the DataLoader sets it) and one OpenCV thread (inherited: see
    :func:`loader_options`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def loader_options(workers: int, device: torch.device | str, persistent: bool = True) -> dict:
    """DataLoader keyword arguments: ``workers`` processes of one thread each, kept between epochs when
    ``persistent`` (no start-up per epoch), :data:`PREFETCH_BATCHES` ready per worker; pinned memory on CUDA, so that
    the copy to the GPU does not wait.

    With workers, OpenCV is set to one thread in this process, before they are forked: they inherit it. (A forked
    worker that set it itself would wait forever on the thread pool its parent had started: those threads did not
    come along.) The loading process's own OpenCV calls then run on one thread too: on a GPU it makes none, and on
    the CPU the model takes the cores."""
    options = {"num_workers": workers, "pin_memory": torch.device(device).type == "cuda"}
    if workers > 0:
        cv2.setNumThreads(1)
        options.update(worker_init_fn=one_thread_per_worker, prefetch_factor=PREFETCH_BATCHES,
                       persistent_workers=persistent)
    return options
