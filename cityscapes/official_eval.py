"""Run cityscapesscripts' own ``evalPixelLevelSemanticLabeling`` on prediction files.

cityscapesscripts 2.3.0 calls ``np.in1d``, which numpy 2.4 removed; the module
is given a numpy whose ``in1d`` is ``np.isin`` (flattened, as ``in1d`` returned)
for the duration of the call, without touching numpy for anyone else.
"""

from __future__ import annotations

import contextlib
import copy
import io
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["evaluate_official"]


def _in1d(ar1, ar2, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert)


@contextlib.contextmanager
def _numpy_with_in1d(module: types.ModuleType) -> Iterator[None]:
    original = module.np
    if hasattr(original, "in1d"):
        yield
        return
    patched = types.ModuleType("numpy")
    patched.__dict__.update(original.__dict__)
    patched.in1d = _in1d
    module.np = patched
    try:
        yield
    finally:
        module.np = original


def evaluate_official(prediction_files: Sequence[Path], ground_truth_files: Sequence[Path],
                      export_file: Path | None = None) -> dict:
    """The official result dict (``averageScoreClasses`` = mIoU, ``classScores``, ``categoryScores``...).

    Files are paired in order: labelIds predictions with ``*_gtFine_labelIds.png``
    ground truth. Instance-level scores are skipped (they need instanceIds files).
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    if len(prediction_files) != len(ground_truth_files):
        raise ValueError(f"{len(prediction_files)} predictions but {len(ground_truth_files)} ground-truth files")
    args = copy.copy(official.args)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    args.JSONOutput = export_file is not None
    if export_file is not None:
        args.exportFile = str(export_file)
    with _numpy_with_in1d(official), contextlib.redirect_stdout(io.StringIO()):
        return official.evaluateImgLists([str(p) for p in prediction_files], [str(p) for p in ground_truth_files], args)
