"""python -m cityscapes.check: each problem, made on a copy of the tiny synthetic root, gives its message and exit
code."""

import os
import shutil

import numpy as np
import pytest

from cityscapes.check import DataCheckError, check_before_run, check_data, get_args_parser, main
from cityscapes.paths import generated_mask_path, image_files, polygon_files, provided_mask_path, stem_of
from segdata.files import read_png, write_png


def run(tiny_copy, capsys, *extra):
    code = main(get_args_parser().parse_args(["--data-root", str(tiny_copy), *extra]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_complete_root_passes(tiny_copy, capsys):
    code, out, err = run(tiny_copy, capsys)
    assert code == 0 and err == ""
    assert "train images 3, polygon files 3, shipped labelIds 3, generated masks 3" in out
    assert (
        "disk: generated masks" in out and "decoded cache (python -m cityscapes.cache) 0.3 MB" in out
    )  # 9 x 64x128x4 bytes
    assert "all checks passed" in out


def first_problem(tiny_copy, capsys, *extra):
    code, _, err = run(tiny_copy, capsys, *extra)
    assert code == 1
    return err.strip().splitlines()[-1]


def test_image_without_annotation(tiny_copy, capsys):
    polygon_files(tiny_copy, "train")[0].unlink()
    line = first_problem(tiny_copy, capsys)
    assert "_leftImg8bit.png: no" in line and "1 train images have no annotation" in line
    assert "fix: re-extract gtFine_trainvaltest.zip" in line


def test_annotation_without_image(tiny_copy, capsys):
    image_files(tiny_copy, "val")[2].unlink()
    line = first_problem(tiny_copy, capsys)
    assert "_gtFine_polygons.json: no image for this annotation (1 in val)" in line
    assert "fix: re-extract leftImg8bit_trainvaltest.zip" in line


def test_missing_and_stale_generated_masks(tiny_copy, capsys):
    mask = generated_mask_path(
        tiny_copy / "generated_gt", "train", stem_of(image_files(tiny_copy, "train")[1]), "labelTrainIds"
    )
    mask.unlink()
    line = first_problem(tiny_copy, capsys)
    assert f"{mask}: missing (1 of 3 train frames lack up-to-date generated masks)" in line
    assert f"fix: python -m cityscapes.generate_gt --data-root {tiny_copy}" in line
    write_png(mask, np.zeros((64, 128), np.uint8))
    annotation = polygon_files(tiny_copy, "train")[1]
    os.utime(annotation, (mask.stat().st_mtime + 10,) * 2)  # the annotation was edited after the masks were drawn
    assert "older than its polygon file or empty" in first_problem(tiny_copy, capsys)


def test_image_that_does_not_match_its_annotation(tiny_copy, capsys):
    image = image_files(tiny_copy, "val")[0]
    write_png(image, np.zeros((32, 64, 3), np.uint8))
    line = first_problem(tiny_copy, capsys)
    assert f"{image}: is 32x64 but its annotation says 64x128; the image does not match its annotation" in line
    assert "re-extract leftImg8bit_trainvaltest.zip" in line
    assert run(tiny_copy, capsys, "--fast")[0] == 0  # the fast part opens no file


def test_truncated_image(tiny_copy, capsys):
    image = image_files(tiny_copy, "train")[2]
    image.write_bytes(image.read_bytes()[:200])
    assert f"{image}: cannot be decoded (truncated or not a PNG)" in first_problem(tiny_copy, capsys)


def test_label_values_outside_the_table(tiny_copy, capsys):
    mask = generated_mask_path(
        tiny_copy / "generated_gt", "val", stem_of(image_files(tiny_copy, "val")[0]), "labelTrainIds"
    )
    values = read_png(mask)
    values[0, 0] = 40
    write_png(mask, values)
    line = first_problem(tiny_copy, capsys)
    assert f"{mask}: holds values that are not trainIds" in line and "--overwrite" in line
    provided = provided_mask_path(tiny_copy, "val", stem_of(image_files(tiny_copy, "val")[1]))
    label_ids = read_png(provided)
    label_ids[0, 0] = 250
    write_png(provided, label_ids)
    _, _, err = run(tiny_copy, capsys)
    assert f"{provided}: size or label values do not fit" in err


def test_missing_shipped_label_ids(tiny_copy, capsys):
    provided = provided_mask_path(tiny_copy, "val", stem_of(image_files(tiny_copy, "val")[0]))
    provided.unlink()
    assert f"{provided}: missing (1 val frames lack their shipped labelIds)" in first_problem(tiny_copy, capsys)


def test_counts_against_the_full_set(tiny_copy):
    report = check_data(tiny_copy, ["train"], pixels=False)[0]
    assert "(full set" not in report.counts_line()  # 3 images: the demo, not a partial extraction
    report.images = 2000
    assert report.counts_line().startswith("train images 2000 (full set: 2975)")


def test_the_fast_check_before_a_run(tiny_copy):
    check_before_run(tiny_copy, ["train", "val"], needs_masks=["train", "val"])
    shutil.rmtree(tiny_copy / "generated_gt" / "val")
    with pytest.raises(DataCheckError, match="missing .*generate_gt --data-root.*python -m cityscapes.check"):
        check_before_run(tiny_copy, ["train", "val"], needs_masks=["train", "val"])
    check_before_run(
        tiny_copy, ["val"], needs_masks=[]
    )  # scoring against the shipped labelIds needs no generated masks
