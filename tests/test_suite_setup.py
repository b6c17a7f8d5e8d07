"""The suite's own machinery (tests/conftest.py): as many workers as the cores and the memory allow, the slow tests
it starts first exist, and a folder built once for every xdist worker is built once."""

import ast
from pathlib import Path

from conftest import MEMORY_PER_WORKER, SLOW_FIRST, built_once, workers_for

TESTS = Path(__file__).resolve().parent


def test_every_test_started_first_exists():
    names = {f"{path.name}::{node.name}" for path in TESTS.glob("test_*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
    for slow in SLOW_FIRST:  # a renamed test would silently lose its place at the front
        assert any(slow in name for name in names), f"SLOW_FIRST names {slow!r}, which no test file defines"


class WorkerTemp:
    """tmp_path_factory as an xdist worker sees it: its base folder inside the folder the workers share."""

    def __init__(self, shared: Path) -> None:
        self.base = shared / "popen-gw0"
        self.base.mkdir(parents=True, exist_ok=True)

    def getbasetemp(self) -> Path:
        return self.base

    def mktemp(self, name: str) -> Path:
        (self.base / name).mkdir()
        return self.base / name


def test_a_folder_built_once_is_built_by_the_first_worker_only(tmp_path):
    builds = []
    workers = WorkerTemp(tmp_path)

    def build(folder: Path) -> None:
        builds.append(folder)
        (folder / "made").write_text("once")

    first = built_once(workers, "gw0", "made", build)
    again = built_once(workers, "gw1", "made", build)
    assert first == again == tmp_path / "made" and len(builds) == 1
    assert (first / "made").read_text() == "once"
    alone = built_once(workers, "master", "alone", build)  # one process: a folder of its own
    assert alone == workers.base / "alone" and len(builds) == 2 and (alone / "made").is_file()


def test_auto_workers_are_one_per_core_as_far_as_the_memory_goes():
    assert workers_for(2, 24 * 2**30) == 2  # this project's CI machine
    assert workers_for(16, 16 * 2**30) == 16 // (MEMORY_PER_WORKER // 2**30)  # a laptop with many cores
    assert workers_for(8, MEMORY_PER_WORKER - 1) == 1  # never none
    assert workers_for(4, None) == 4  # memory unknown: the cores
