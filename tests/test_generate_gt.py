import json
import shutil

import numpy as np
import pytest
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

from cityscapes.generate_gt import generate, main, parse_args
from cityscapes.paths import MASK_KINDS, generated_mask_path, polygon_files, stem_of
from cityscapes.synthetic import write_dataset
from segdata.files import read_png

ENCODINGS = {"labelIds": "ids", "labelTrainIds": "trainIds", "color": "color"}


def official_mask(json_path, kind, tmp_path):
    """What cityscapesscripts itself draws for this annotation."""
    out = tmp_path / f"official_{kind}.png"
    json2labelImg(str(json_path), str(out), ENCODINGS[kind])
    return np.asarray(Image.open(out))


def assert_equal_to_official(root, tmp_path, splits=("train", "val", "test")):
    checked = 0
    for split in splits:
        for json_path in polygon_files(root, split):
            for kind in MASK_KINDS:
                ours = read_png(generated_mask_path(root / "generated_gt", split, stem_of(json_path), kind))
                official = official_mask(json_path, kind, tmp_path)
                assert ours.shape == official.shape and ours.dtype == official.dtype, (json_path, kind)
                assert np.array_equal(ours, official), f"{json_path} {kind}: {np.sum(ours != official)} pixels differ"
                checked += 1
    return checked


@pytest.mark.parametrize("height,width,frames", [(256, 512, 4), (1024, 2048, 1)])
def test_equal_to_cityscapesscripts_on_synthetic_scenes(tmp_path, height, width, frames):
    root = tmp_path / "data"
    write_dataset(root, frames, height, width, seed=11)
    results = generate(root, workers=2, progress=False)
    assert {r.status for r in results} == {"written"} and len(results) == 3 * frames
    assert assert_equal_to_official(root, tmp_path) == 9 * frames


def write_annotation(root, objects, height=20, width=30, stem="aachen_000000_000019", split="train"):
    path = root / "gtFine" / split / "aachen" / f"{stem}_gtFine_polygons.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"imgHeight": height, "imgWidth": width, "objects": objects}))
    return path


EDGE_CASES = {
    "two_point_polygon": [{"label": "pole", "polygon": [[2, 2], [20, 15]]}],
    "self_intersecting": [{"label": "road", "polygon": [[0, 0], [29, 19], [29, 0], [0, 19]]}],
    "entirely_outside": [{"label": "car", "polygon": [[-10, -10], [-2, -10], [-2, -2]]}],
    "past_the_border": [{"label": "sky", "polygon": [[-5, -5], [40, -5], [40, 8], [-5, 8]]}],
    "empty_object_list": [],
    "deleted_object": [{"label": "road", "polygon": [[0, 0], [29, 0], [29, 19]]},
                       {"label": "car", "polygon": [[0, 0], [29, 0], [0, 19]], "deleted": 1}],
    "group_labels": [{"label": "cargroup", "polygon": [[1, 1], [15, 1], [15, 10]]},
                     {"label": "persongroup", "polygon": [[10, 5], [25, 5], [25, 18]]}],
    "license_plate_not_drawn": [{"label": "car", "polygon": [[1, 1], [25, 1], [25, 15], [1, 15]]},
                                {"label": "license plate", "polygon": [[5, 5], [15, 5], [15, 10], [5, 10]]}],
    "later_over_earlier": [{"label": "road", "polygon": [[0, 0], [29, 0], [29, 19], [0, 19]]},
                           {"label": "bicycle", "polygon": [[3, 3], [12, 3], [12, 12]]},
                           {"label": "rider", "polygon": [[5, 1], [9, 1], [9, 10], [5, 10]]}],
    "float_coordinates": [{"label": "building", "polygon": [[1.5, 2.7], [28.2, 3.1], [14.9, 19.9]]}],
}


@pytest.mark.parametrize("case", EDGE_CASES)
def test_equal_to_cityscapesscripts_on_edge_cases(tmp_path, case):
    root = tmp_path / "data"
    write_annotation(root, EDGE_CASES[case])
    assert [r.status for r in generate(root, splits=["train"], workers=1, progress=False)] == ["written"]
    assert assert_equal_to_official(root, tmp_path, splits=["train"]) == 3


def test_edge_case_pixels_by_hand(tmp_path):
    root = tmp_path / "data"
    write_annotation(
        root,
        EDGE_CASES["license_plate_not_drawn"]
        + [{"label": "cargroup", "polygon": [[20, 12], [29, 12], [29, 19], [20, 19]]}],
    )
    generate(root, splits=["train"], workers=1, progress=False)
    stem = "aachen_000000_000019"
    label_ids = read_png(generated_mask_path(root / "generated_gt", "train", stem, "labelIds"))
    train_ids = read_png(generated_mask_path(root / "generated_gt", "train", stem, "labelTrainIds"))
    color = read_png(generated_mask_path(root / "generated_gt", "train", stem, "color"))
    assert label_ids[10, 10] == 26 and train_ids[10, 10] == 13  # plate region stays car
    assert label_ids[19, 0] == 0 and train_ids[19, 0] == 255  # background: unlabeled / ignore
    assert label_ids[18, 25] == 26  # cargroup drawn as car
    assert color.shape == (20, 30, 4) and tuple(color[10, 10]) == (0, 0, 142, 255)


def test_one_point_polygon_is_reported_like_bad_input(tmp_path):
    root = tmp_path / "data"
    path = write_annotation(root, [{"label": "pole", "polygon": [[3, 3]]}])
    with pytest.raises(TypeError):  # the official tool cannot draw it either
        json2labelImg(str(path), str(tmp_path / "x.png"), "ids")
    [result] = generate(root, splits=["train"], workers=1, progress=False)
    assert result.status == "failed" and str(path) in result.error and "at least 2 points" in result.error


BAD_INPUTS = {
    "malformed_json": ('{"imgHeight": 20, "imgWidth": ', "not valid JSON"),
    "unknown_label": (
        json.dumps(
            {"imgHeight": 20, "imgWidth": 30, "objects": [{"label": "dragon", "polygon": [[0, 0], [5, 5], [0, 5]]}]}
        ),
        "unknown label 'dragon'",
    ),
    "missing_keys": (json.dumps({"imgWidth": 30, "objects": []}), "missing key(s) imgHeight"),
    "object_without_polygon": (
        json.dumps({"imgHeight": 20, "imgWidth": 30, "objects": [{"label": "car"}]}),
        "lacks 'label' or 'polygon'",
    ),
    "wrong_image_size": (json.dumps({"imgHeight": 20, "imgWidth": 31, "objects": []}), "is 20x30"),
}


def test_bad_inputs_are_reported_and_the_rest_is_processed(tmp_path, capsys):
    root = tmp_path / "data"
    good = write_annotation(root, EDGE_CASES["group_labels"], stem="aachen_000000_000019")
    image = root / "leftImg8bit" / "train" / "aachen"
    image.mkdir(parents=True)
    for index, (name, (text, _)) in enumerate(BAD_INPUTS.items(), start=1):
        stem = f"aachen_{index:06d}_000019"
        path = root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_polygons.json"
        path.write_text(text)
        Image.new("RGB", (30, 20)).save(image / f"{stem}_leftImg8bit.png")
    before = {p: p.read_bytes() for p in (root / "gtFine").rglob("*")  if p.is_file()}
    status = main(parse_args(["--data-root", str(root), "--splits", "train", "--workers", "2"]))
    captured = capsys.readouterr()
    assert status == 1
    assert "1 written, 0 skipped" in captured.out and "5 failed" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 5
    for index, (name, (_, message)) in enumerate(BAD_INPUTS.items(), start=1):
        line = next(line for line in errors if f"aachen_{index:06d}_000019_gtFine_polygons.json" in line)
        assert message in line, (name, line)
    assert generated_mask_path(root / "generated_gt", "train", stem_of(good), "color").exists()
    assert not list((root / "generated_gt").rglob("aachen_000001*"))
    assert before == {p: p.read_bytes() for p in (root / "gtFine").rglob("*") if p.is_file()}, "gtFine was modified"


def test_skips_existing_outputs_unless_overwrite(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    assert {r.status for r in generate(root, workers=1, progress=False)} == {"skipped"}
    target = generated_mask_path(root / "generated_gt", "val", stem_of(polygon_files(root, "val")[0]), "labelIds")
    target.write_bytes(b"")  # an empty (damaged) mask is rewritten without --overwrite
    statuses = {r.json_path.name: r.status for r in generate(root, workers=1, progress=False)}
    assert (
        list(statuses.values()).count("written") == 1
        and statuses[f"{stem_of(target)}_gtFine_polygons.json"] == "written"
    )
    assert read_png(target).shape == (64, 128)
    assert {r.status for r in generate(root, workers=1, overwrite=True, progress=False)} == {"written"}


def test_masks_older_than_their_annotation_are_regenerated(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    annotation = polygon_files(root, "train")[0]
    annotation.touch()  # edited after the masks were drawn
    results = generate(root, workers=1, progress=False)
    assert [r.json_path for r in results if r.status == "written"] == [annotation]


def test_a_split_without_annotations_is_skipped_and_named(tiny_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    shutil.rmtree(root / "gtFine" / "test")
    shutil.rmtree(root / "generated_gt")
    assert main(parse_args(["--data-root", str(root), "--workers", "1"])) == 0
    captured = capsys.readouterr()
    assert "gtFine/test: no *_gtFine_polygons.json, split skipped" in captured.err
    assert "6 written" in captured.out and not (root / "generated_gt" / "test").exists()
    # asked for explicitly, the missing split is an error
    assert main(parse_args(["--data-root", str(root), "--splits", "test"])) == 2
    assert "gtFine/test: no *_gtFine_polygons.json found" in capsys.readouterr().err


def test_images_without_annotation_are_named(tiny_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    orphan = polygon_files(root, "val")[1]
    orphan.unlink()
    assert main(parse_args(["--data-root", str(root), "--workers", "1"])) == 0
    err = capsys.readouterr().err
    assert f"{stem_of(orphan)}_leftImg8bit.png: no {orphan.name} in gtFine/val (1 val images have no annotation" in err


def test_interrupted_write_leaves_no_broken_png(tiny_root, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    target = generated_mask_path(root / "generated_gt", "train", stem_of(polygon_files(root, "train")[0]), "labelIds")
    old = target.read_bytes()

    def interrupted(source, destination):  # the process dies after writing, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr("segdata.files.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(root, splits=["train"], workers=1, overwrite=True, progress=False)
    assert target.read_bytes() == old
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_refuses_to_write_inside_gtfine(tiny_root, capsys):
    assert main(parse_args(["--data-root", str(tiny_root), "--out", str(tiny_root / "gtFine" / "masks")])) == 2
    assert "refusing to write inside gtFine" in capsys.readouterr().err


def test_missing_annotations_give_a_clear_error(tmp_path, capsys):
    assert main(parse_args(["--data-root", str(tmp_path)])) == 2
    err = capsys.readouterr().err
    assert "gtFine: no *_gtFine_polygons.json in train, val, test; extract gtFine_trainvaltest.zip" in err
    assert len(err.strip().splitlines()) == 1


def test_runs_as_a_file(tiny_root, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "cityscapes" / "generate_gt.py"
    done = subprocess.run([sys.executable, str(script), "--data-root", str(tiny_root), "--splits", "val", "--out",
                           str(tmp_path / "gt"), "--workers", "1"], capture_output=True, text=True, check=True)
    assert "3 written" in done.stdout
