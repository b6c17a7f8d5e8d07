import json
import re

import numpy as np
import pytest

from cityscapes.labels import resolve_label
from cityscapes.synthetic import CITIES, MARKER_FILE, get_args_parser, main, write_dataset
from segdata.files import read_png

SPECIAL_LABELS = {"cargroup", "persongroup", "license plate", "ego vehicle", "rectification border", "out of roi"}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, frames_per_split=6, height=64, width=128, seed=3)
    return root


def test_layout_and_names(small_root):
    for split, cities in CITIES.items():
        images = sorted((small_root / "leftImg8bit" / split).glob("*/*"))
        jsons = sorted((small_root / "gtFine" / split).glob("*/*_gtFine_polygons.json"))
        assert len(images) == len(jsons) == 6
        for image, annotation in zip(images, jsons):
            match = re.fullmatch(r"([a-z]+)_(\d{6})_(\d{6})_leftImg8bit\.png", image.name)
            assert match and match.group(1) in cities and image.parent.name == match.group(1)
            assert annotation.name == image.name.replace("leftImg8bit.png", "gtFine_polygons.json")
            for kind in ("labelIds", "instanceIds", "color"):
                assert annotation.with_name(annotation.name.replace("polygons.json", f"{kind}.png")).exists()
        assert {image.parent.name for image in images} == set(cities)


def test_images_and_json_schema(small_root):
    for annotation in sorted((small_root / "gtFine").glob("*/*/*.json")):
        data = json.loads(annotation.read_text())
        assert set(data) == {"imgHeight", "imgWidth", "objects"}
        assert (data["imgHeight"], data["imgWidth"]) == (64, 128)
        for obj in data["objects"]:
            assert set(obj) <= {"label", "polygon", "deleted"}
            assert resolve_label(obj["label"]) is not None
            assert len(obj["polygon"]) >= 3 and all(
                len(p) == 2 and all(isinstance(c, int) for c in p) for p in obj["polygon"]
            )
        image = read_png(small_root / "leftImg8bit" / annotation.parts[-3] / annotation.parts[-2]
                         / annotation.name.replace("gtFine_polygons.json", "leftImg8bit.png"))
        assert image.shape == (64, 128, 3) and image.dtype == np.uint8


def test_every_special_case_occurs(small_root):
    objects = [
        obj for path in (small_root / "gtFine").glob("*/*/*.json") for obj in json.loads(path.read_text())["objects"]
    ]
    labels = {obj["label"] for obj in objects}
    assert SPECIAL_LABELS <= labels
    assert any(obj.get("deleted") for obj in objects)
    assert any(x < 0 or x > 128 for obj in objects for x, _ in obj["polygon"]), "some polygon must cross the border"
    assert {"car", "person", "rider", "bicycle", "pole", "traffic sign", "road", "sky", "building"} <= labels


def test_test_split_holds_only_what_cityscapes_test_annotations_hold(small_root):
    for path in (small_root / "gtFine" / "test").glob("*/*.json"):
        labels = {obj["label"] for obj in json.loads(path.read_text())["objects"]}
        assert labels == {"ego vehicle", "rectification border", "out of roi"}


def test_deterministic_for_a_seed(tmp_path):
    write_dataset(tmp_path / "a", 2, 64, 128, seed=7)
    write_dataset(tmp_path / "b", 2, 64, 128, seed=7)
    write_dataset(tmp_path / "c", 2, 64, 128, seed=8)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files_a)


def test_full_cityscapes_resolution(tmp_path):
    write_dataset(tmp_path, 1, 1024, 2048, seed=0, splits=("val",))
    image = read_png(next((tmp_path / "leftImg8bit" / "val").glob("*/*.png")))
    assert image.shape == (1024, 2048, 3)


def test_refuses_to_write_over_other_data(tmp_path, capsys):
    (tmp_path / "gtFine").mkdir()
    (tmp_path / "gtFine" / "real.json").write_text("{}")
    assert main(get_args_parser().parse_args(["--out", str(tmp_path), "--frames-per-split", "1"])) == 2
    assert "refusing to write a synthetic data set into a folder that holds other files" in capsys.readouterr().err
    assert not (tmp_path / MARKER_FILE).exists()


def test_an_out_that_is_a_file_or_a_full_disk_ends_in_one_line(tmp_path, capsys, monkeypatch):
    from cityscapes import synthetic

    (tmp_path / "file").write_text("mine")
    assert main(get_args_parser().parse_args(["--out", str(tmp_path / "file"), "--frames-per-split", "1"])) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: argument --out: {tmp_path / 'file'} is a file, not a folder; name a "
                                        "folder"]
    assert (tmp_path / "file").read_text() == "mine"

    def full(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(synthetic, "write_png", full)
    assert main(get_args_parser().parse_args(["--out", str(tmp_path / "d"), "--frames-per-split", "1", "--height",
                                              "32", "--width", "64"])) == 1
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: cannot write {tmp_path / 'd'}") and "No space left on device" in line


def test_cli_writes_requested_size(tmp_path, capsys):
    assert main(get_args_parser().parse_args(["--out", str(tmp_path / "d"), "--frames-per-split", "1",
                                              "--height", "32", "--width", "64", "--seed", "1"])) == 0
    assert "wrote 3 synthetic frames" in capsys.readouterr().out
    assert read_png(next((tmp_path / "d" / "leftImg8bit").glob("*/*/*.png"))).shape == (32, 64, 3)
