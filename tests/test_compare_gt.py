import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from cityscapes.compare_gt import MaskComparison, compare_split
from cityscapes.generate_gt import main, parse_args
from cityscapes.paths import generated_mask_path, provided_mask_path, stem_of
from segdata.files import read_png, write_png


def test_counts_on_hand_made_masks():
    comparison = MaskComparison("val")
    provided = np.array([[7, 7, 26, 26], [7, 7, 26, 0]], np.uint8)
    generated = np.array([[7, 7, 26, 7], [7, 7, 26, 26]], np.uint8)
    comparison.add("frame", provided, generated)
    assert comparison.pixel_agreement == pytest.approx(6 / 8)
    rows = {row["name"]: row for row in comparison.per_class()}
    assert rows["road"]["iou"] == pytest.approx(4 / 5) and rows["road"]["recall"] == 1.0
    assert rows["car"]["iou"] == pytest.approx(2 / 4) and rows["car"]["recall"] == pytest.approx(2 / 3)
    assert rows["unlabeled"]["generated_pixels"] == 0 and rows["unlabeled"]["iou"] == 0.0
    assert comparison.per_image == [{"image": "frame", "pixels": 8, "agreeing_pixels": 6, "agreement": 0.75}]


def test_planted_difference_is_measured_exactly(tiny_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    # Make the provided masks equal the generated ones, then plant 100 pixels of 'bus' in one image.
    stems = []
    for generated in sorted((root / "generated_gt" / "val").glob("*/*_labelIds.png")):
        stem = stem_of(generated)
        stems.append(stem)
        shutil.copy(generated, provided_mask_path(root, "val", stem))
    planted = provided_mask_path(root, "val", stems[1])
    mask = read_png(planted)
    mask[10:20, 10:20] = 28
    original = read_png(generated_mask_path(root / "generated_gt", "val", stems[1], "labelIds"))
    differing = int(np.sum(original[10:20, 10:20] != 28))
    write_png(planted, mask)

    assert (
        main(parse_args(["compare", "--data-root", str(root), "--split", "val", "--out", str(tmp_path / "out")])) == 0
    )
    printed = capsys.readouterr().out
    total = 3 * 64 * 128
    assert f"pixel agreement {100 * (total - differing) / total:.3f}%" in printed
    with open(tmp_path / "out" / "generated_vs_provided_val_images.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["image"] for row in rows] == stems
    assert [int(row["agreeing_pixels"]) for row in rows] == [8192, 8192 - differing, 8192]
    with open(tmp_path / "out" / "generated_vs_provided_val_classes.csv") as stream:
        bus = next(row for row in csv.DictReader(stream) if row["name"] == "bus")
    assert int(bus["provided_pixels"]) - int(bus["generated_pixels"]) == differing
    assert Image.open(tmp_path / "out" / "generated_vs_provided_val.png").size[0] > 500


def test_synthetic_provided_masks_differ_only_slightly(tiny_root):
    comparison = compare_split(tiny_root, "val")
    assert 0.97 < comparison.pixel_agreement < 1.0


def test_missing_generated_masks_say_what_to_run(tiny_root, tmp_path, capsys):
    assert main(parse_args(["compare", "--data-root", str(tiny_root), "--generated", str(tmp_path / "none"),
                            "--out", str(tmp_path)])) == 2
    assert "run python -m cityscapes.generate_gt first" in capsys.readouterr().err
