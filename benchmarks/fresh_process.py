"""Each benchmark configuration in a fresh process, so that one's peak memory, threads and compiled kernels never
mix with another's.

Where the system has it, the processes are forked from a server that imported the benchmark (and torch) once
(multiprocessing's "forkserver"): a configuration starts in a fraction of a second instead of the 4 s an import of
torch and torchvision takes. Elsewhere (Windows) each is spawned.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

__all__ = ["run_in_fresh_process"]


def run_in_fresh_process(function: Callable[[dict], dict], config: dict) -> dict:
    """``function(config)`` in a new process (a module-level function and a picklable config); its result."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([function.__module__])  # no effect once the server runs: it has it already
    else:
        context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, config).result()
