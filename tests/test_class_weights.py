"""Class weights for rare classes: median-frequency and inverse frequency on a hand-made mask set with known
weights, a file of weights, the weighted loss, and a run that records and keeps them."""

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers import train_command

import train_dlv3p
from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.loss import SegmentationLoss, cross_entropy_over_labelled_pixels
from segdata.class_weights import count_classes, inverse_frequency, median_frequency, read_weights, weights_for
from segdata.classes import ClassTable
from segdata.files import write_png
from segdata.flags import FlagError
from segdata.folder import FolderSegmentation

THREE = ClassTable("three", ("a", "b", "c"), ((1, 1, 1), (2, 2, 2), (3, 3, 3)), ((0,), (1,), (2,)), ignore=(255,))
MASKS = {  # frame A: 6 px of a, 2 of b; frame B: 2 of a, 4 of c, 2 ignored
    "A": np.array([[0, 0, 0, 0], [0, 0, 1, 1]], np.uint8),
    "B": np.array([[0, 0, 2, 2], [2, 2, 255, 255]], np.uint8),
}


@pytest.fixture
def hand_made(tmp_path):
    for name, mask in MASKS.items():  # each pixel 8x8: frames of 16x32, large enough to train on
        write_png(tmp_path / "images" / "train" / f"{name}.png", np.zeros((16, 32, 3), np.uint8))
        write_png(tmp_path / "masks" / "train" / f"{name}.png", np.kron(mask, np.ones((8, 8), np.uint8)))
    return FolderSegmentation(tmp_path, "train", THREE)


def test_median_frequency_and_inverse_frequency_of_a_hand_made_mask_set(hand_made):
    counts = count_classes(hand_made)
    assert counts.pixels.tolist() == [64 * 8, 64 * 2, 64 * 4]
    assert counts.pixels_of_frames_with.tolist() == [64 * 14, 64 * 8, 64 * 6]
    # freq: a 8/14, b 2/8, c 4/6; median 8/14 = 4/7
    assert median_frequency(counts) == pytest.approx([1.0, float(Fraction(16, 7)), float(Fraction(6, 7))])
    # shares 8/14, 2/14, 4/14 of the labelled pixels; three classes present: even share 1/3
    assert inverse_frequency(counts) == pytest.approx([7 / 12, 7 / 3, 7 / 6])
    assert count_classes(hand_made, workers=1).pixels.tolist() == counts.pixels.tolist()  # in loader workers too


def test_a_class_absent_from_every_mask_weighs_one_and_a_file_gives_one_weight_per_class(hand_made, tmp_path):
    four = ClassTable("four", (*THREE.names, "d"), (*THREE.colors, (4, 4, 4)), (*THREE.values, (3,)))
    hand_made.classes = four
    assert median_frequency(count_classes(hand_made))[3] == 1.0
    (tmp_path / "w.json").write_text("[1, 2.5, 0.5]")
    (tmp_path / "w.txt").write_text("1, 2.5\n0.5\n")
    assert read_weights(tmp_path / "w.json", THREE) == read_weights(tmp_path / "w.txt", THREE) == [1.0, 2.5, 0.5]
    for text, message in (("[1, 2]", "holds 2 weights for the 3 classes of the class table three"),
                          ("[1, 0, 2]", "weights must be positive"), ("one two three", "not a list of numbers")):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(FlagError, match=f"argument --class-weights: {tmp_path / 'bad.txt'}: {message}"):
            read_weights(tmp_path / "bad.txt", THREE)
    with pytest.raises(FlagError, match="no such file; give none, median-frequency, inverse-frequency or a file"):
        weights_for(str(tmp_path / "missing.json"), hand_made)


def test_the_weighted_loss_weighs_each_pixel_by_its_class_and_averages_over_labelled_pixels():
    logits = torch.randn(1, 3, 2, 4, generator=torch.Generator().manual_seed(0))
    target = torch.from_numpy(MASKS["B"]).long()[None]
    weights = torch.tensor([1.0, 2.0, 0.5])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    labelled = target != 255
    expected = (per_pixel * weights[target.clamp(max=2)])[labelled].sum() / labelled.sum()
    assert cross_entropy_over_labelled_pixels(logits, target, weight=weights) == pytest.approx(expected.item())
    assert SegmentationLoss(class_weights=[1.0, 2.0, 0.5])(logits, target) == pytest.approx(expected.item())


def test_a_run_counts_its_weights_once_records_them_and_a_resume_keeps_them(hand_made, tmp_path, caplog):
    caplog.set_level("INFO")
    (tmp_path / "three.json").write_text(json.dumps(THREE.as_dict()))
    argv = train_command(tmp_path, tmp_path / "runs", "--no-tensorboard", dataset="folder",
                         classes=tmp_path / "three.json", class_weights="median-frequency", crop_size=32,
                         run_name="weighted", iters=1, warmup_iters=0, val_frames=1)
    (tmp_path / "masks" / "val").symlink_to(tmp_path / "masks" / "train")
    (tmp_path / "images" / "val").symlink_to(tmp_path / "images" / "train")
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args(argv)) == 0
    assert "class weights (median-frequency, counted on the 2 train masks): a 1, b 2.29, c 0.857" in caplog.text
    run = tmp_path / "runs" / "weighted"
    recorded = json.loads((run / "args.json").read_text())
    assert recorded["class_weights"] == "median-frequency"
    assert recorded["class_weight_values"] == pytest.approx([1.0, 16 / 7, 6 / 7])
    caplog.clear()
    resume = ["--resume", str(run / "last.pth"), "--iters", "2", "--device", "cpu", "--workers", "0"]
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args(resume)) == 0
    assert "class weights" not in caplog.text  # kept, not counted again
    assert load_checkpoint(run / "last.pth")["args"]["class_weight_values"] == pytest.approx([1.0, 16 / 7, 6 / 7])
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args(
        [*resume[:2], "--iters", "3", "--class-weights", "none"])) == 2  # a resumed run keeps its loss
