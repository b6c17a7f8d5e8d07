"""Shared fixtures: one tiny synthetic data set (and later one trained model) per session."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cityscapes.generate_gt import generate
from cityscapes.synthetic import write_dataset
from segdata.loading import available_cpus

TINY_HEIGHT, TINY_WIDTH = 64, 128
MEMORY_PER_WORKER = 5 * 2**30
"""What one test worker may hold at its peak (the suite's largest process reached 4.0-4.4 GiB on 2026-12-08, by the
order of the tests: the float64 training steps against mmsegmentation's on a worker that had exported ONNX before;
the workers train ResNet-50s and serialise their checkpoints): -n auto starts no more workers than the memory
holds."""


def workers_for(cores: int, memory: int | None) -> int:
    """How many workers -n auto starts: one per core, at most one per MEMORY_PER_WORKER of ``memory`` (bytes;
    None where the system does not say), at least one."""
    by_memory = cores if memory is None else memory // MEMORY_PER_WORKER
    return max(1, min(cores, by_memory))


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # a system without these names (Windows)
        return None


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """-n auto (make test): :func:`workers_for` the cores this process may use and the machine's memory, unless
    PYTEST_XDIST_AUTO_NUM_WORKERS says how many (xdist reads it)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return workers_for(available_cpus(), _physical_memory())


def _one_share_of_the_cores_per_worker() -> None:
    """Under pytest-xdist each worker (and every process it starts) computes on its share of the cores: torch's
    default of one thread per core in every worker would oversubscribe the machine, and OpenMP threads waiting
    for a core spin."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, available_cpus() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_one_share_of_the_cores_per_worker()


@pytest.fixture
def tmp_path(tmp_path: Path):
    """pytest's tmp_path, deleted when the test ends: each training run writes two ~330 MB checkpoints (ResNet-50
    weights and momentum), and the suite would otherwise hold about 19 GB of them until the session ends."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fake-cuda", action="store_true",
                     help="run the tests marked cuda on the fake CUDA device of tests/fake_cuda.py (no GPU needed)")


SLOW_FIRST = ("test_the_gpu_check_runs_every_stage", "test_train_throughput_model_loader",
              "test_onnx_export", "test_three_training_steps_equal_mmsegmentations_own",
              "test_bad_inputs.py::test_cuda_without_a_gpu",
              "test_ddp_training_on_two_gloo_processes", "test_batches_without_labelled_pixels_under_ddp",
              "test_resume_on_cuda", "test_resume_continues_exactly", "test_resume_with_loader_workers_repeats")
"""The tests that take most time, started first so that the workers end together: make test hands tests to its
workers in this order, two at a time, so the first worker starts on the two slowest that need no trained model
while the second trains it (trained_run, about 75 s) for the next two."""


def _slowness_rank(item: pytest.Item) -> int:
    """The item's place in SLOW_FIRST; every other test after them, in collection order."""
    return next((rank for rank, name in enumerate(SLOW_FIRST) if name in item.nodeid), len(SLOW_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slowest tests first (see SLOW_FIRST). Tests marked ``cuda`` skip cleanly where no GPU is present (make
    test-gpu runs them on one), unless --fake-cuda runs them on the fake device; those that need the hardware itself
    still skip then."""
    items.sort(key=_slowness_rank)
    if torch.cuda.is_available():
        return
    fake = config.getoption("--fake-cuda")
    for item in items:
        if item.get_closest_marker("cuda") is None:
            continue
        if not fake:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (make test-gpu)"))
        elif item.get_closest_marker("gpu_hardware") is not None:
            item.add_marker(pytest.mark.skip(reason="needs the GPU itself (inductor, NCCL or a subprocess)"))


@contextlib.contextmanager
def fake_cuda_if_asked(config: pytest.Config):
    """The fake CUDA harness with --fake-cuda where no GPU is present; nothing otherwise (module fixtures use it)."""
    if not config.getoption("--fake-cuda") or torch.cuda.is_available():
        yield None
        return
    from fake_cuda import fake_cuda as harness

    with pytest.MonkeyPatch.context() as monkeypatch, harness(monkeypatch) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _cuda_tests_on_the_fake_device(request: pytest.FixtureRequest):
    """With --fake-cuda and no GPU, a test marked cuda runs inside the fake CUDA harness."""
    if request.node.get_closest_marker("cuda") is None:
        yield
        return
    with fake_cuda_if_asked(request.config):
        yield


def built_once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
               build: Callable[[Path], None]) -> Path:
    """A folder ``build(folder)`` fills, made once for the whole run: under pytest-xdist (make test) the first
    worker to ask builds it in the folder the workers share, under a file lock, and the others wait and reuse it;
    in a single process it is an ordinary session folder."""
    if worker_id == "master":
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """xdist's worker id (gw0, gw1, ...), or "master" when the suite runs in one process (without xdist too)."""
    return getattr(request.config, "workerinput", {}).get("workerid", "master")


def synthetic_with_masks(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str, frames: int,
                         seed: int) -> Path:
    """A 64x128 synthetic data set with generated masks."""

    def build(folder: Path) -> None:
        write_dataset(folder / "cityscapes", frames_per_split=frames, height=TINY_HEIGHT, width=TINY_WIDTH, seed=seed)
        generate(folder / "cityscapes", workers=1, progress=False)

    return built_once(tmp_path_factory, worker_id, name, build) / "cityscapes"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """3 frames per split; read-only for tests (copy it to change it)."""
    return synthetic_with_masks(tmp_path_factory, worker_id, "tiny", frames=3, seed=0)


@pytest.fixture(scope="session")
def learn_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """12 frames per split, enough for a model to learn from."""
    return synthetic_with_masks(tmp_path_factory, worker_id, "learn", frames=12, seed=1)


@pytest.fixture
def tiny_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny data set, for tests that damage or change it."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_root, copy)
    return copy


TRAINED_ITERATIONS = 60


@pytest.fixture(scope="session")
def trained_run(learn_root: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The one trained model of the suite: ResNet-50 OS16 from scratch, a short CPU run (trained once for every
    xdist worker); its run folder."""
    return built_once(tmp_path_factory, worker_id, "saved", lambda save_dir: _train_tiny(learn_root, save_dir)) / "tiny"


def _train_tiny(learn_root: Path, save_dir: Path) -> None:
    from helpers import train_args

    import train_dlv3p

    args = train_args(learn_root, save_dir, "--no-tensorboard",  # its logs are tested on runs of their own
                      backbone="resnet50", iters=TRAINED_ITERATIONS, batch_size=4, crop_size=(64, 128),
                      scale_range=(0.75, 1.5), lr=0.02, warmup_iters=5, val_every=10, run_name="tiny")
    assert train_dlv3p.main(args) == 0


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    """The CUDA code path on the CPU (tests/fake_cuda.py): tensors say cuda:0, synchronisations are recorded."""
    from fake_cuda import fake_cuda as harness

    with harness(monkeypatch) as fake:
        yield fake
