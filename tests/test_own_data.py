"""Own data: class tables, folder data sets (index and colour masks), PASCAL VOC, the check, the scripts end to end,
fine-tuning across class tables, and every mistake ending in one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import built_once
from helpers import run_flags
from PIL import Image

import predict_dlv3p
import test_dlv3p
import train_dlv3p
from cityscapes.labels import CITYSCAPES_CLASSES, LABEL_ID_TO_TRAIN_ID
from cityscapes.synthetic_layouts import STREET_CLASSES, write_folder_dataset, write_voc_dataset
from deeplabv3plus.assembly import load_initial_weights
from deeplabv3plus.checkpoint import checkpoint_classes, load_checkpoint
from deeplabv3plus.model import build_model
from run_notebook import execute_notebook
from segdata import cache, check
from segdata.cache import CacheError
from segdata.classes import VOC_CLASSES, ClassTable, ClassTableError, load_class_table
from segdata.files import read_png, write_png
from segdata.folder import FolderSegmentation
from segdata.masks import MaskValueError, to_train_ids
from segdata.transforms import train_transforms
from segdata.voc import VOCSegmentation

REPO = Path(__file__).resolve().parent.parent
SMALL = run_flags("--no-tensorboard", iters=2, crop_size=64, warmup_iters=0)


@pytest.fixture(scope="session")
def own_root(tmp_path_factory, worker_id):
    def write(folder):
        write_folder_dataset(folder / "street", frames_per_split=4)

    return built_once(tmp_path_factory, worker_id, "own", write) / "street"


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit"
    write_voc_dataset(root, frames_per_split=4)
    return root


@pytest.fixture(scope="session")
def folder_run(own_root, tmp_path_factory, worker_id):
    """A 5-class run on the synthetic folder data set (index masks with values 10-50), trained once for every xdist
    worker: its run folder."""

    def train_street(save_dir):
        args = train_dlv3p.get_args_parser().parse_args([
            "--dataset", "folder", "--data-root", str(own_root), "--classes", str(own_root / "classes.json"),
            "--save-dir", str(save_dir), "--run-name", "street", *SMALL])
        assert train_dlv3p.main(args) == 0

    return built_once(tmp_path_factory, worker_id, "own_runs", train_street) / "street"


def copy_of(root, tmp_path):
    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data"


def train(root, tmp_path, *extra, classes=None):
    classes = ["--classes", str(classes or root / "classes.json")] if classes is not False else []
    return train_dlv3p.main(train_dlv3p.get_args_parser().parse_args([
        "--dataset", "folder", "--data-root", str(root), *classes, "--save-dir", str(tmp_path / "runs"), *SMALL,
        *extra]))


# class tables

def test_class_tables_load_from_json_and_csv_and_round_trip(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"classes": [
        {"name": "bg", "color": [0, 0, 0]}, {"name": "crack", "color": [255, 0, 0], "values": [255]}]}))
    (tmp_path / "t.csv").write_text("name,r,g,b,values\nbg,0,0,0,0\ncrack,255,0,0,255\n")
    from_json, from_csv = load_class_table(tmp_path / "t.json"), load_class_table(tmp_path / "t.csv")
    assert from_json == from_csv and from_json.names == ("bg", "crack") and from_json.values == ((0,), (255,))
    lookup = from_json.value_lookup()
    assert lookup[0] == 0 and lookup[255] == 1 and lookup[7] == -1  # 255 is a class here, not ignored
    assert ClassTable.from_dict(STREET_CLASSES.as_dict()) == STREET_CLASSES
    assert from_json.mask_values()[[0, 1, 255]].tolist() == [0, 255, 255]


@pytest.mark.parametrize(("content", "message"), [
    ('{"classes": [{"name": "a", "color": [0, 0, 0]}, {"name": "b", "color": [1, 1, 1], "values": [0]}]}',
     "the mask value 0 is given to more than one class"),
    ('{"classes": [{"name": "a", "color": [0, 0, 0]}, {"name": "a", "color": [1, 1, 1]}]}',
     "the class name a is given to more than one class"),
    ('{"classes": [{"name": "a"}]}', "not a class table"),
    ("[1, 2]", "a class table is a JSON object"),
    ("{not json", "not readable as JSON or CSV"),
])
def test_a_broken_class_table_is_named_with_its_fix(tmp_path, content, message):
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(ClassTableError, match=message) as error:
        load_class_table(tmp_path / "t.json")
    assert str(tmp_path / "t.json") in str(error.value)


def test_cityscapes_and_voc_are_class_tables():
    assert CITYSCAPES_CLASSES.num_classes == 19 and CITYSCAPES_CLASSES.names[13] == "car"
    assert (CITYSCAPES_CLASSES.value_lookup()[:34] == LABEL_ID_TO_TRAIN_ID[:34]).all()
    assert CITYSCAPES_CLASSES.mask_values()[[0, 13, 255]].tolist() == [7, 26, 0]  # road, car, unlabeled
    assert VOC_CLASSES.num_classes == 21 and VOC_CLASSES.names[15] == "person"
    assert VOC_CLASSES.colors[:4] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))  # VOC's palette
    assert VOC_CLASSES.colors[15] == (192, 128, 128)


# masks

def test_index_and_colour_masks_map_to_the_same_train_ids():
    values = np.array([[10, 20, 21], [50, 0, 255]], np.uint8)
    expected = [[0, 1, 1], [4, 255, 255]]
    assert to_train_ids(values, STREET_CLASSES).tolist() == expected
    palette = {10: (128, 64, 128), 20: (70, 70, 70), 21: (70, 70, 70), 50: (70, 130, 180), 0: (0, 0, 0),
               255: (0, 0, 0)}
    colours = np.array([[palette[value] for value in row] for row in values.tolist()], np.uint8)
    assert to_train_ids(colours, STREET_CLASSES).tolist() == expected


@pytest.mark.parametrize(("mask", "table", "message"), [
    (np.array([[0, 255], [255, 255]], np.uint8), ClassTable("cracks", ("bg", "crack"), ((0, 0, 0), (255, 0, 0)),
                                                             ((0,), (1,)), ignore=()),
     r"mask values not in the class table \(255: 3 px\); a binary mask saved as 0/255\?"),
    (np.array([[7, 26], [33, 1]], np.uint8), ClassTable.from_dict({"classes": [
        {"name": name, "color": [index, 0, 0]} for index, name in enumerate(CITYSCAPES_CLASSES.names)]}),
     "Cityscapes labelIds .* where train ids .* are expected"),
    (np.dstack([np.full((2, 2), 3, np.uint8)] * 3), STREET_CLASSES, r"ids saved as RGB \(all three channels equal\)"),
    (np.full((2, 2), 99, np.uint8), STREET_CLASSES, r"\(99: 4 px\); add them to a class's \"values\""),
])
def test_values_outside_the_table_name_the_file_and_the_likely_cause(mask, table, message):
    with pytest.raises(MaskValueError, match=message) as error:
        to_train_ids(mask, table, "masks/train/a.png")
    assert str(error.value).startswith("masks/train/a.png: ")


# data sets

def test_folder_data_set_with_index_or_colour_masks(own_root, tmp_path):
    classes = load_class_table(own_root / "classes.json")
    index = FolderSegmentation(own_root, "val", classes)
    write_folder_dataset(tmp_path / "colour", frames_per_split=4, colour_masks=True)
    colour = FolderSegmentation(tmp_path / "colour", "val", classes)
    assert read_png(colour.masks[0]).ndim == 3 and read_png(index.masks[0]).ndim == 2
    assert len(index) == len(colour) == 4 and index.stem(0) == "street_0/frame_000"
    for position in range(4):
        assert (index.load_arrays(position)[1] == colour.load_arrays(position)[1]).all()
    image, mask, meta = index[0]
    assert image.shape == (3, 64, 128) and mask.dtype == torch.uint8 and set(mask.unique().tolist()) <= {0, 1, 2, 3, 4,
                                                                                                          255}
    test = FolderSegmentation(own_root, "test", classes)
    assert not test.has_labels and test[0][1].unique().tolist() == [255]


def test_folder_split_list_files(own_root, tmp_path):
    root = copy_of(own_root, tmp_path)
    (root / "splits").mkdir()
    (root / "splits" / "mine.txt").write_text("train/street_0/frame_000\nval/street_1/frame_001.png\n")
    data = FolderSegmentation(root, "mine", load_class_table(root / "classes.json"))
    assert data.stems == ["train/street_0/frame_000", "val/street_1/frame_001"] and data.has_labels


def test_voc_layout_with_borders_and_the_augmented_set(voc_root):
    train = VOCSegmentation(voc_root, "train")  # found under VOCdevkit/VOC2012
    assert len(train) == 4 and train.images[0].suffix == ".jpg"
    with Image.open(train.masks[0]) as palette_mask:
        assert palette_mask.mode == "P"  # indices read as they are, not the palette's colours
    _, mask = train.load_arrays(0)
    assert 255 in mask and set(np.unique(mask).tolist()) <= set(range(21)) | {255}
    assert (VOCSegmentation(voc_root, "aug").load_arrays(0)[1] == mask).all()  # greyscale SegmentationClassAug


def test_the_check_lists_every_problem_and_draws_class_frequencies(own_root, tmp_path, capsys):
    root = copy_of(own_root, tmp_path)
    (root / "masks" / "train" / "street_0" / "frame_000.png").unlink()
    write_png(root / "masks" / "train" / "orphan.png", np.full((64, 128), 10, np.uint8))
    bad = root / "masks" / "val" / "street_0" / "frame_000.png"
    write_png(bad, np.where(read_png(bad) == 30, 99, read_png(bad)).astype(np.uint8))
    args = ["--data-root", str(root), "--classes", str(root / "classes.json"), "--figure", str(tmp_path / "f.png")]
    assert check.main(check.get_args_parser().parse_args(args)) == 1
    out, err = capsys.readouterr()
    assert "frame_000.png: has no mask" in err and "orphan.png: a mask without an image" in err
    assert f"{bad}: mask values not in the class table (99:" in err
    assert "val: 4 frames" in out and Image.open(tmp_path / "f.png").size[0] > 0
    assert check.main(check.get_args_parser().parse_args(["--data-root", str(own_root), "--classes",
                                                          str(own_root / "classes.json"), "--figure",
                                                          str(tmp_path / "g.png")])) == 0


# the scripts end to end

def test_the_class_table_travels_into_test_predict_and_the_gif_notebook(folder_run, own_root, tmp_path, capsys):
    checkpoint = load_checkpoint(folder_run / "last.pth")
    assert checkpoint_classes(checkpoint) == STREET_CLASSES and checkpoint["model_config"]["num_classes"] == 5
    assert checkpoint["args"]["dataset"] == "folder"
    # test_dlv3p needs no class table: the checkpoint says which data set and which classes
    assert test_dlv3p.main(test_dlv3p.get_args_parser().parse_args([
        "--model-weights-path", str(folder_run / "last.pth"), "--data-root", str(own_root), "--workers", "0",
        "--out", str(tmp_path / "out"), "--save-color"])) == 0
    split = tmp_path / "out" / "street" / "val"
    metrics = json.loads((split / "metrics.json").read_text())
    assert list(metrics["class_iou"]) == list(STREET_CLASSES.names) and "category_iou" not in metrics
    ids = read_png(split / "ids" / "street_0" / "frame_000_ids.png")
    assert set(np.unique(ids).tolist()) <= {10, 20, 30, 40, 50}  # the data set's own values
    colour = read_png(split / "color" / "street_0" / "frame_000_color.png")
    assert {tuple(pixel) for pixel in colour.reshape(-1, 3).tolist()} <= set(STREET_CLASSES.colors)
    assert not list(split.glob("*.zip"))  # no server submission outside Cityscapes
    assert "flat" in capsys.readouterr().out
    # predict: names and colours of the table
    assert predict_dlv3p.main(predict_dlv3p.get_args_parser().parse_args([
        str(own_root / "images" / "test"), "--model-weights-path", str(folder_run / "last.pth"), "--out",
        str(tmp_path / "pred"), "--save-ids"])) == 0
    assert (tmp_path / "pred" / "class_shares.csv").read_text().splitlines()[0] == "name,flat,construction,nature," \
                                                                                   "traffic,sky"
    assert set(np.unique(read_png(tmp_path / "pred" / "street_1" / "frame_001_ids.png")).tolist()) <= {10, 20, 30,
                                                                                                        40, 50}
    # the GIF notebook: from the checkpoint alone (its data set and palette)
    gif = tmp_path / "p.gif"
    execute_notebook(REPO / "save_predictions.ipynb", {"checkpoint": str(folder_run / "last.pth"),
                     "data_root": str(own_root), "num_frames": 2, "out_path": str(gif)}, cwd=REPO)
    with Image.open(gif) as frames:
        assert frames.n_frames == 2 and frames.size == (3 * 128, 64 + 16)
        prediction = np.asarray(frames.convert("RGB"))[16:, 128:256].reshape(-1, 3)
    assert {tuple(pixel) for pixel in prediction.tolist()} <= set(STREET_CLASSES.colors) | {(0, 0, 0)}


def test_both_notebooks_work_on_a_saved_folder_that_mixes_class_tables(trained_run, folder_run, own_root, learn_root,
                                                                      tmp_path, monkeypatch):
    """A Cityscapes run beside an own-data run (what fine-tuning leaves): each table's runs get their own figures,
    each run's curves its own colours, and each run's GIF its own name."""
    from deeplabv3plus.figures import GifOptions, run_classes, save_prediction_gif

    saved = tmp_path / "saved"
    for run in (trained_run, folder_run):
        shutil.copytree(run, saved / run.name, ignore=shutil.ignore_patterns("*.pth", "tb"))
    out = tmp_path / "figures"
    execute_notebook(REPO / "visualize_training.ipynb", {"save_dir": str(saved), "out_dir": str(out)}, cwd=REPO)
    for table in ("cityscapes", STREET_CLASSES.name):
        for stem in ("dlv3p_loss", "dlv3p_miou", "dlv3p_class_iou"):
            assert (out / f"{stem}_{table}.png").stat().st_size > 1000
    for run in (trained_run.name, folder_run.name):
        for figure in ("class_iou_over_validations", "confusion_matrix"):
            assert (out / f"{run}_{figure}.png").exists()
    assert not (out / "dlv3p_class_iou.png").exists()  # no figure mixes the two tables
    summary = (out / "dlv3p_summary.csv").read_text()
    assert f"\n{trained_run.name},cityscapes," in summary and f"\n{folder_run.name},{STREET_CLASSES.name}," in summary
    assert run_classes(saved / folder_run.name) == STREET_CLASSES and run_classes(saved / trained_run.name).name == \
        "cityscapes"
    # the GIFs: named after their runs, so the second does not replace the first
    monkeypatch.chdir(tmp_path)
    execute_notebook(REPO / "save_predictions.ipynb", {"checkpoint": str(folder_run / "last.pth"),
                     "data_root": str(own_root), "num_frames": 2}, cwd=tmp_path)
    save_prediction_gif(trained_run / "best.pth", learn_root, options=GifOptions(num_frames=2))
    assert sorted(path.name for path in (tmp_path / "outputs").iterdir()) == [f"{folder_run.name}.gif",
                                                                              f"{trained_run.name}.gif"]


def test_voc_trains_and_refuses_what_only_cityscapes_has(voc_root, tmp_path, capsys):
    args = ["--dataset", "voc", "--data-root", str(voc_root), "--save-dir", str(tmp_path), "--run-name", "voc", *SMALL]
    args[args.index("--iters") + 1] = "1"
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args(args)) == 0
    assert checkpoint_classes(load_checkpoint(tmp_path / "voc" / "last.pth")) == VOC_CLASSES
    capsys.readouterr()
    assert test_dlv3p.main(test_dlv3p.get_args_parser().parse_args([
        "--model-weights-path", str(tmp_path / "voc" / "last.pth"), "--data-root", str(voc_root), "--workers", "0",
        "--out", str(tmp_path / "out"), "--official-eval"])) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: argument --official-eval: is for Cityscapes only; the voc data set is scored by this "
                   "project's metrics (val scores, per-class IoU, PNGs and figures): drop the flag")
    assert not (tmp_path / "out").exists()


def test_fine_tuning_from_19_cityscapes_classes_onto_5(trained_run, caplog):
    model = build_model("resnet50", 16, STREET_CLASSES.num_classes, aux_head=True)
    with caplog.at_level("INFO"):
        afresh = load_initial_weights(model, trained_run / "best.pth")
    assert sorted(afresh) == ["aux_head.4.bias", "aux_head.4.weight", "decoder.classifier.bias",
                              "decoder.classifier.weight"]
    assert "fine-tuning from 19 to 5 classes" in caplog.text and "decoder.classifier.weight" in caplog.text
    source = load_checkpoint(trained_run / "best.pth")["model"]
    ours = model.state_dict()
    deep = [key for key in source if key.startswith("backbone.") and key.endswith("conv3.weight")][-1]
    assert torch.equal(ours[deep], source[deep])
    assert ours["decoder.classifier.weight"].shape[0] == 5


def test_fine_tuning_through_the_script(trained_run, own_root, tmp_path):
    assert train(own_root, tmp_path, "--init-weights", str(trained_run / "best.pth"), "--iters", "1") == 0
    assert load_checkpoint(tmp_path / "runs" / "dlv3p_resnet50_os16" / "last.pth")["model_config"]["num_classes"] == 5


# every mistake: one line, exit 2, nothing written

def break_a_mask(root, change):
    path = root / "masks" / "train" / "street_0" / "frame_000.png"
    change(path)


@pytest.mark.parametrize(("mistake", "message"), [
    ("values", "frame_000.png: mask values not in the class table (99:"),
    ("missing", "frame_000.png: has no mask (expected"),
    ("size", "frame_000.png: is 64x128 but its mask"),
    ("no table", "argument --classes: --dataset folder needs a class table"),
    ("binary", "a binary mask saved as 0/255?"),
])
def test_own_data_mistakes_end_in_one_line(own_root, tmp_path, capsys, mistake, message):
    root = copy_of(own_root, tmp_path)
    mask = root / "masks" / "train" / "street_0" / "frame_000.png"
    classes = None
    if mistake == "values":
        write_png(mask, np.full((64, 128), 99, np.uint8))
    elif mistake == "missing":
        mask.unlink()
    elif mistake == "size":
        write_png(mask, np.full((32, 64), 10, np.uint8))
    elif mistake == "no table":
        classes = False
    elif mistake == "binary":
        classes = tmp_path / "binary.json"
        classes.write_text(json.dumps({"classes": [{"name": "bg", "color": [0, 0, 0], "values": [0]},
                                                   {"name": "thing", "color": [9, 9, 9], "values": [1]}],
                                       "ignore": []}))
        write_png(mask, np.where(read_png(mask) > 20, 255, 0).astype(np.uint8))
    assert train(root, tmp_path, classes=classes) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pth"))


def test_resuming_with_another_class_count_is_refused(folder_run, own_root, tmp_path, capsys):
    three = tmp_path / "three.json"
    three.write_text(json.dumps({"classes": [{"name": name, "color": [index, 0, 0], "values": [value]}
                                             for index, (name, value) in enumerate([("a", 10), ("b", 20),
                                                                                    ("c", 30)])],
                                 "ignore": [0, 21, 40, 50, 255]}))
    last = folder_run / "last.pth"
    before = last.read_bytes()
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args([
        "--resume", str(last), "--classes", str(three), "--workers", "0", "--device", "cpu"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument --classes:") and "other classes than the run" in err
    assert f"fine-tune its weights on these classes in a new run: --init-weights {last} --run-name NAME" in err
    assert last.read_bytes() == before
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args([
        "--resume", str(last), "--dataset", "voc", "--workers", "0", "--device", "cpu"])) == 2
    assert f"start a new run from them: --init-weights {last} --run-name NAME" in capsys.readouterr().err


def test_the_recipe_crop_is_fitted_to_small_frames_and_a_given_one_refused(own_root, tmp_path, capsys, caplog):
    """480x360-like frames with the Cityscapes recipe: its 768x768 crop would be padding mostly."""
    from deeplabv3plus.setting_values import crop_for_frames

    assert crop_for_frames((768, 768), [(64, 128)] * 3, (0.5, 2.0), given=False) == (64, 128)
    assert crop_for_frames((96, 200), [(64, 128)], (0.5, 2.0), given=True) == (96, 200)  # reachable when scaled
    recipe_crop = [flag for flag in SMALL if flag not in ("--crop-size", "64")]

    def train_without_crop(*extra):
        return train_dlv3p.main(train_dlv3p.get_args_parser().parse_args([
            "--dataset", "folder", "--data-root", str(own_root), "--classes", str(own_root / "classes.json"),
            "--save-dir", str(tmp_path / "runs"), *recipe_crop, *extra]))

    assert train_without_crop("--crop-size", "512") == 2
    assert "argument --crop-size: 512x512 is larger than every train frame even at the largest random scale " \
           "(frames at most 64x128, x2); give a crop of at most 64x128" in capsys.readouterr().err
    with caplog.at_level("INFO"):
        assert train_without_crop("--val-frames", "1", "--run-name", "fitted") == 0
    assert "the recipe's 768x768 crop is larger than every train frame (at most 64x128): training on 64x128" \
        in caplog.text
    record = json.loads((tmp_path / "runs" / "fitted" / "args.json").read_text())
    assert record["crop_size"] == [64, 128] and record["val_frames"] == 1
    assert record["val_protocol"]["images"] == 1 and record["val_protocol"]["of_images"] == 4
    assert record["val_protocol"]["description"].startswith("val, 1 of 4 images (a fixed subset), whole 64x128")
    assert record["class_table"] == STREET_CLASSES.as_dict()


def test_evaluation_finds_the_data_the_checkpoint_was_trained_on_and_counts_every_png(folder_run, tmp_path, caplog):
    with caplog.at_level("INFO"):
        assert test_dlv3p.main(test_dlv3p.get_args_parser().parse_args([  # no --data-root
            "--model-weights-path", str(folder_run / "last.pth"), "--workers", "0", "--out", str(tmp_path),
            "--save-color"])) == 0
    trained_on = load_checkpoint(folder_run / "last.pth")["args"]["data_root"]
    assert f"data root: {trained_on} (the one {folder_run / 'last.pth'} was trained on" in caplog.text
    split = tmp_path / folder_run.name / "val"
    assert f"4 ids PNGs in {split / 'ids'}, 4 color PNGs in {split / 'color'}, 4 overlay PNGs in " \
           f"{split / 'overlay'}" in caplog.text


def test_the_decoded_cache_serves_own_data_too(own_root, tmp_path):
    root = copy_of(own_root, tmp_path)
    args = ["--data-root", str(root), "--classes", str(root / "classes.json"), "--splits", "train", "val"]
    assert cache.main(cache.get_args_parser().parse_args(args)) == 0
    transforms = train_transforms((32, 48), (0.5, 2.0))
    from_files = FolderSegmentation(root, "train", STREET_CLASSES, transforms)
    from_cache = FolderSegmentation(root, "train", STREET_CLASSES, transforms, cache_root=root / "cache")
    for index in range(4):
        first, second = from_files[(index, 99 + index)], from_cache[(index, 99 + index)]
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    remapped = ClassTable.from_dict({**STREET_CLASSES.as_dict(), "ignore": [0, 21, 255]} | {"classes": [
        {**entry, "values": entry["values"][:1]} for entry in STREET_CLASSES.as_dict()["classes"]]})
    with pytest.raises(CacheError, match="the class table's mapping of mask values \\(or colours\\) to classes changed "
                                         "since it was cached; rebuild with python -m segdata.cache --dataset "
                                         f"folder --data-root {root}"):
        FolderSegmentation(root, "train", remapped, cache_root=root / "cache")  # masks are mapped by the table
    renamed = ClassTable.from_dict({**STREET_CLASSES.as_dict(), "classes": [
        {**entry, "name": entry["name"].upper()} for entry in STREET_CLASSES.as_dict()["classes"]]})
    FolderSegmentation(root, "train", renamed, cache_root=root / "cache")  # new names, same masks: the cache serves
    assert train(root, tmp_path, "--cache", "--iters", "1") == 0


def test_the_onnx_parity_check_reads_the_checkpoints_own_data_set(folder_run, own_root):
    from deeplabv3plus.export import _parity_split, parity_inputs
    from deeplabv3plus.inference import TrainedRun

    split = _parity_split(TrainedRun.load(folder_run / "last.pth"), own_root, "val")
    assert isinstance(split, FolderSegmentation) and len(split) == 4
    inputs = list(parity_inputs(split, 3, (32, 64), resize=True))
    assert len(inputs) == 3 and all(image.shape == (1, 3, 32, 64) for image in inputs)


def test_own_data_flags_end_in_one_line(own_root, tmp_path, capsys):
    """A split that is not there (training, the check, the cache) and a missing class table for the cache."""
    assert train(own_root, tmp_path, "--train-split", "nope") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {own_root / 'images' / 'nope'}: no such folder"), err
    table = str(own_root / "classes.json")
    for module, argv in ((check, ["--data-root", str(own_root), "--classes", table, "--splits", "nope", "--figure",
                                  str(tmp_path / "f.png")]),
                         (cache, ["--data-root", str(own_root), "--classes", table, "--splits", "nope", "--cache-dir",
                                  str(tmp_path / "c")]),
                         (cache, ["--data-root", str(own_root), "--cache-dir", str(tmp_path / "c")])):
        assert module.main(module.get_args_parser().parse_args(argv)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and ("nope" in err[0] or "--classes" in err[0]), err
    assert not (tmp_path / "c").exists() and not (tmp_path / "runs").exists()


def test_a_value_outside_the_table_in_any_train_mask_stops_the_run_in_the_loader(own_root, tmp_path, capsys):
    """The start-up check reads each split's first mask; the loader (with the default workers) checks every frame
    where it maps it, and the first bad one ends the run in one line, before any checkpoint."""
    from test_bad_inputs import assert_one_line

    root = copy_of(own_root, tmp_path)
    second = FolderSegmentation(root, "train", STREET_CLASSES).masks[1]
    mask = read_png(second)
    mask[:3, :5] = 99
    write_png(second, mask)
    at = SMALL.index("--workers")
    argv = SMALL[:at] + SMALL[at + 2:]  # the default loader workers
    capsys.readouterr()
    code = train_dlv3p.main(train_dlv3p.get_args_parser().parse_args([
        "--dataset", "folder", "--data-root", str(root), "--classes", str(root / "classes.json"), "--save-dir",
        str(tmp_path / "runs"), *argv]))
    assert code == 2
    assert_one_line(capsys.readouterr().err, f"error: {second}: mask values not in the class table (99: 15 px)")
    assert not (tmp_path / "runs").exists()  # no checkpoint, no record: the same command runs once it is fixed


def test_a_segnet_style_root_trains_as_it_ships_and_the_run_says_where_its_frames_come_from(own_root, tmp_path,
                                                                                            caplog):
    from test_folder import segnet_layout

    caplog.set_level("INFO")
    shipped = segnet_layout(own_root, tmp_path / "CamVid")  # lists of another machine's absolute paths at the root
    assert train(shipped, tmp_path, "--iters", "1", "--val-frames", "1", classes=own_root / "classes.json") == 0
    assert (f"data: train: 4 frames from the list {shipped / 'train.txt'}; val: 4 frames from the list "
            f"{shipped / 'val.txt'}") in caplog.text
