"""Shared fixtures: one tiny synthetic data set (and later one trained model) per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cityscapes.generate_gt import generate
from cityscapes.synthetic import write_dataset

TINY_HEIGHT, TINY_WIDTH = 64, 128


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x128 synthetic data set (3 frames per split) with generated masks; read-only for tests."""
    root = tmp_path_factory.mktemp("tiny") / "cityscapes"
    write_dataset(root, frames_per_split=3, height=TINY_HEIGHT, width=TINY_WIDTH, seed=0)
    generate(root, workers=1, progress=False)
    return root
