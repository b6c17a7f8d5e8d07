import zipfile

import numpy as np
import torch

from cityscapes.labels import CITYSCAPES_CLASSES
from cityscapes.submission import make_submission_zip
from segdata.files import read_png
from segdata.prediction_files import PredictionWriter, prediction_path


def test_writer_converts_to_label_ids_and_zip_is_reproducible(tmp_path):
    writer = PredictionWriter(tmp_path / "out", CITYSCAPES_CLASSES, "labelIds")
    predictions = torch.tensor([[[0, 13], [18, 10]], [[1, 2], [3, 4]]])
    writer(predictions, {"stem": ["bonn_000001_000019", "berlin_000000_000019"], "image_path": ["-", "-"]})
    written = writer.close()
    assert [p.name for p in written] == ["berlin_000000_000019_labelIds.png", "bonn_000001_000019_labelIds.png"]
    assert read_png(prediction_path(tmp_path / "out", "bonn_000001_000019")).tolist() == [[7, 26], [33, 23]]
    first = make_submission_zip(written, tmp_path / "a.zip").read_bytes()
    second = make_submission_zip(list(reversed(written)), tmp_path / "b.zip").read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert archive.namelist() == [p.name for p in written]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "b.zip", "out"]  # no partial file left


def test_writer_saves_colour_and_overlay(tmp_path):
    image_path = tmp_path / "img.png"
    from segdata.files import write_png
    write_png(image_path, np.zeros((2, 2, 3), np.uint8))
    writer = PredictionWriter(tmp_path / "out", CITYSCAPES_CLASSES, "labelIds", save_color=True)
    writer(torch.zeros(1, 2, 2, dtype=torch.long), {"stem": ["aachen_000000_000019"], "image_path": [str(image_path)]})
    writer.close()
    assert read_png(prediction_path(tmp_path / "out", "aachen_000000_000019", "color"))[0, 0].tolist() == [128, 64, 128]
    assert read_png(prediction_path(tmp_path / "out", "aachen_000000_000019", "overlay"))[0, 0].tolist() == [64, 32, 64]
