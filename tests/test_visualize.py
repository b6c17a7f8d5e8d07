import numpy as np
import pytest
from PIL import Image

from cityscapes.labels import CITYSCAPES_CLASSES
from cityscapes.visualize import colorize_train_ids
from deeplabv3plus.figures import plot_training_curve
from segdata.pictures import overlay, save_figure, save_gif, side_by_side


def test_colorize_uses_the_official_palette():
    colours = colorize_train_ids(np.array([[0, 13, 255]], np.uint8))
    assert colours.tolist() == [[[128, 64, 128], [0, 0, 142], [0, 0, 0]]]


def test_overlay_blends_exactly():
    image = np.full((1, 2, 3), 100, np.uint8)
    mask = np.full((1, 2, 3), 200, np.uint8)
    assert overlay(image, mask, alpha=0.25).tolist() == [[[125] * 3, [125] * 3]]


def test_side_by_side_frame_layout():
    palette = CITYSCAPES_CLASSES.palette()
    frame = side_by_side(
        np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60), np.uint8), np.full((40, 60), 255, np.uint8), palette
    )
    assert frame.shape == (56, 180, 3)  # a 16-pixel title bar over three panels
    assert frame[20, 70].tolist() == [128, 64, 128]  # prediction panel: road
    assert frame[20, 130].tolist() == [0, 0, 0]  # ground truth: ignore is black
    assert side_by_side(np.zeros((40, 60, 3), np.uint8), np.zeros((40, 60), np.uint8), None, palette).shape == (
        56, 120, 3)


def test_gif_and_figure_files(tmp_path):
    frames = [np.full((8, 10, 3), value, np.uint8) for value in (0, 120, 240)]
    with Image.open(save_gif(frames, tmp_path / "a.gif", frame_ms=100)) as gif:
        assert gif.n_frames == 3 and gif.size == (10, 8) and gif.info["loop"] == 0
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "b.gif")
    history = [
        {"iteration": 10, "train_loss": 1.0, "val_loss": 0.9},
        {"iteration": 20, "train_loss": 0.5, "val_loss": 0.6},
    ]
    figure = plot_training_curve({"os8": history, "os16": history}, ("train_loss", "val_loss"), "loss")
    assert len(figure.axes) == 2  # the two runs side by side
    with Image.open(save_figure(figure, tmp_path / "loss.png")) as image:
        assert image.format == "PNG"


def test_each_figure_names_its_class_table_and_its_runs(tmp_path):
    import json

    from cityscapes.synthetic_layouts import STREET_CLASSES
    from deeplabv3plus.figures import save_training_figures
    from deeplabv3plus.history import write_history

    def run(name, classes):
        row = {"epoch": 1, "iteration": 10, "lr": 0.01, "train_loss": 1.0, "val_loss": 0.9, "miou": 0.5,
               "mean_dice": 0.6, "pixel_accuracy": 0.7, "mean_class_accuracy": 0.5, "seconds": 1.0,
               "iou": [0.5] * classes.num_classes}
        write_history(tmp_path / "saved" / name, [row], classes.names)
        (tmp_path / "saved" / name / "args.json").write_text(json.dumps({"class_table": classes.as_dict()}))

    for name, classes in (("os8", CITYSCAPES_CLASSES), ("os16", CITYSCAPES_CLASSES), ("own", STREET_CLASSES)):
        run(name, classes)
    captions = {}
    written = save_training_figures(tmp_path / "saved", tmp_path / "out", captions=captions)
    assert captions[tmp_path / "out" / "dlv3p_loss_cityscapes.png"] == "class table cityscapes: os16, os8"
    own = f"class table {STREET_CLASSES.name}: own"
    assert captions[tmp_path / "out" / f"dlv3p_miou_{STREET_CLASSES.name}.png"] == own
    assert captions[tmp_path / "out" / "own_class_iou_over_validations.png"] == own
    assert set(captions) <= set(written)
