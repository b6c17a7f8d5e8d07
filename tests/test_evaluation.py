import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels, trainId2label
from PIL import Image

import test_dlv3p
from cityscapes.official_eval import evaluate_official
from cityscapes.paths import image_files, stem_of
from cityscapes.submission import train_ids_to_label_ids
from segdata.files import read_png

REPO = Path(__file__).resolve().parent.parent
VALID_LABEL_IDS = {label.id for label in labels if 0 <= label.trainId < 255}


def run(trained_run, root, out, *extra):
    args = test_dlv3p.get_args_parser().parse_args([
        "--model_weights_path", str(trained_run / "best.pth"), "--data-root", str(root), "--out", str(out),
        "--workers", "0", "--device", "cpu", *extra])
    return test_dlv3p.main(args)


def test_train_id_to_label_id_for_every_class():
    train_ids = np.arange(19, dtype=np.uint8).reshape(1, 19)
    assert train_ids_to_label_ids(train_ids).tolist() == [[trainId2label[t].id for t in range(19)]]
    with pytest.raises(ValueError, match="trainIds 0..18"):
        train_ids_to_label_ids(np.array([[255]], np.uint8))


@pytest.fixture(scope="module")
def val_outputs(trained_run, learn_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    assert run(trained_run, learn_root, out, "--split", "val", "--official-eval", "--save-color") == 0
    return out / "tiny" / "val"


def test_val_predictions_are_full_size_label_ids(val_outputs, learn_root):
    stems = [stem_of(path) for path in image_files(learn_root, "val")]
    written = sorted((val_outputs / "labelIds").iterdir())
    assert [path.name for path in written] == [f"{stem}_labelIds.png" for stem in stems]
    for path in written:
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (128, 64)
            values = set(np.unique(np.asarray(image)).tolist())
        assert values <= VALID_LABEL_IDS, values  # labelIds only: no 255, no trainIds like 0..6
    assert len(list((val_outputs / "color").iterdir())) == len(list((val_outputs / "overlay").iterdir())) == 12
    with Image.open(val_outputs / "confusion_matrix.png") as figure:  # the matrix of metrics.json as a picture
        assert figure.format == "PNG" and figure.size[0] > 600


def test_our_miou_equals_cityscapesscripts(val_outputs):
    report = json.loads((val_outputs / "metrics.json").read_text())
    assert report["images"] == 12 and 0 < report["mean_iou"] < 1
    assert report["mean_iou"] == pytest.approx(report["official_mean_iou"], abs=1e-12)
    assert report["category_mean_iou"] == pytest.approx(report["official_category_mean_iou"], abs=1e-12)
    official = json.loads((val_outputs / "official_eval.json").read_text())
    for name, iou in report["class_iou"].items():
        expected = official["classScores"][name]
        assert (iou is None and np.isnan(expected)) or iou == pytest.approx(expected, abs=1e-12), name
    for name, iou in report["category_iou"].items():
        assert iou == pytest.approx(official["categoryScores"][name], abs=1e-12), name
    assert len(report["category_iou"]) == 7


def test_official_evaluation_runs_with_this_numpy(tmp_path):
    """cityscapesscripts calls np.in1d (gone in numpy 2.4); the wrapper must still score correctly."""
    ground_truth = np.array([[7, 7, 26, 0], [7, 8, 26, 26]], np.uint8)
    prediction = np.array([[7, 8, 26, 7], [7, 8, 26, 7]], np.uint8)
    Image.fromarray(ground_truth).save(tmp_path / "frankfurt_000000_000019_gtFine_labelIds.png")
    Image.fromarray(prediction).save(tmp_path / "frankfurt_000000_000019_pred.png")
    result = evaluate_official([tmp_path / "frankfurt_000000_000019_pred.png"],
                               [tmp_path / "frankfurt_000000_000019_gtFine_labelIds.png"])
    assert result["classScores"]["road"] == pytest.approx(2 / 4)  # tp 2, fn 1 (as sidewalk), fp 1 (on car)
    assert result["classScores"]["car"] == pytest.approx(2 / 3)
    assert result["classScores"]["sidewalk"] == pytest.approx(1 / 2)
    assert np.isnan(result["classScores"]["sky"])
    assert not hasattr(np, "in1d") or np.__version__ < "2.4"  # numpy itself is left alone


def test_test_split_gives_a_zip_of_exactly_the_test_images(trained_run, learn_root, tmp_path, capsys):
    stale = tmp_path / "tiny" / "test" / "labelIds" / "aachen_000099_000019_labelIds.png"  # from an earlier run
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    assert run(trained_run, learn_root, tmp_path, "--split", "test", "--batch-size", "4") == 0
    archive = tmp_path / "tiny" / "test" / "tiny_test_labelIds.zip"
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        first = np.asarray(Image.open(opened.open(names[0])))
    assert names == [f"{stem_of(path)}_labelIds.png" for path in image_files(learn_root, "test")]
    assert first.shape == (64, 128) and set(np.unique(first).tolist()) <= VALID_LABEL_IDS
    printed = capsys.readouterr().out
    assert "ms per image" in printed and "peak memory" in printed and "mIoU" not in printed


def test_flip_and_multi_scale_run(trained_run, tiny_root, tmp_path):  # tiny_root: 3 val frames, as cheap as any
    assert run(trained_run, tiny_root, tmp_path, "--split", "val", "--flip", "--scales", "0.75", "1.0") == 0
    assert json.loads((tmp_path / "tiny" / "val" / "metrics.json").read_text())["mean_iou"] > 0


def test_checkpoint_errors(trained_run, learn_root, tmp_path, capsys):
    assert run(trained_run, learn_root, tmp_path, "--output_stride", "8") == 2
    assert "was trained with output_stride=16 but --output-stride is 8" in capsys.readouterr().err
    args = test_dlv3p.get_args_parser().parse_args(["--model_weights_path", str(tmp_path / "none.pth"),
                                                    "--data-root", str(learn_root), "--device", "cpu"])
    assert test_dlv3p.main(args) == 2
    assert "none.pth: checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists(), "nothing may be written without a model"


def test_ddp_evaluation_equals_one_process(trained_run, learn_root, val_outputs, tmp_path):
    """torchrun, 2 gloo processes with unequal shards (12 images, batch 5): the same confusion matrix."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "test_dlv3p.py"), "--model_weights_path", str(trained_run / "best.pth"),
               "--data-root", str(learn_root), "--out", str(tmp_path), "--workers", "0", "--device", "cpu",
               "--batch-size", "5"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    distributed = json.loads((tmp_path / "tiny" / "val" / "metrics.json").read_text())
    single = json.loads((val_outputs / "metrics.json").read_text())
    assert distributed["confusion_matrix"] == single["confusion_matrix"]
    assert distributed["mean_iou"] == single["mean_iou"] and distributed["images"] == 12
    assert distributed["protocol"] == single["protocol"]  # both against the shipped labelIds
    assert len(list((tmp_path / "tiny" / "val" / "labelIds").iterdir())) == 12


def test_scores_against_the_shipped_label_ids_by_default(val_outputs, learn_root):
    """As the server: our mIoU equals cityscapesscripts' score of our PNGs against
    gtFine/val/*/*_gtFine_labelIds.png."""
    report = json.loads((val_outputs / "metrics.json").read_text())
    assert report["protocol"]["ground_truth"] == "gtFine labelIds (as the server)"
    predictions = sorted((val_outputs / "labelIds").iterdir())
    shipped = sorted((learn_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    assert [stem_of(p) for p in predictions] == [stem_of(p) for p in shipped]
    official = evaluate_official(predictions, shipped)
    assert report["mean_iou"] == pytest.approx(official["averageScoreClasses"], abs=1e-6)


def test_the_protocol_is_stated_with_every_score(val_outputs, trained_run):
    from deeplabv3plus.checkpoint import load_checkpoint, weights_digest

    protocol = json.loads((val_outputs / "metrics.json").read_text())["protocol"]
    checkpoint = load_checkpoint(trained_run / "best.pth")
    assert protocol["description"] == (
        f"val, 12 images, whole 64x128, OS16, float32, ground truth: gtFine labelIds (as the server), "
        f"checkpoint iteration {checkpoint['iteration']}, weights {weights_digest(checkpoint['model'])}")
    assert (protocol["mode"], protocol["flip"], protocol["scales"], protocol["image_size"]) == (
        "whole",
        False,
        [1.0],
        "64x128",
    )
    assert (protocol["train_output_stride"], protocol["test_output_stride"], protocol["amp_dtype"]) == (16, 16, None)


def test_generated_ground_truth_on_request(trained_run, learn_root, val_outputs, tmp_path, capsys):
    assert (
        run(trained_run, learn_root, tmp_path, "--split", "val", "--ground-truth", "generated", "--official-eval") == 0
    )
    assert capsys.readouterr().out.startswith("protocol: val, 12 images, whole 64x128, OS16, float32, ground truth: "
                                              "generated from polygons")
    generated = json.loads((tmp_path / "tiny" / "val" / "metrics.json").read_text())
    provided = json.loads((val_outputs / "metrics.json").read_text())
    assert generated["mean_iou"] == pytest.approx(generated["official_mean_iou"], abs=1e-6)
    redrawn = sorted((learn_root / "generated_gt" / "val").glob("*/*_gtFine_labelIds.png"))
    official = evaluate_official(sorted((tmp_path / "tiny" / "val" / "labelIds").iterdir()), redrawn)
    assert generated["mean_iou"] == pytest.approx(official["averageScoreClasses"], abs=1e-6)
    assert generated["confusion_matrix"] != provided["confusion_matrix"]  # the two ground truths differ by design


def test_falls_back_to_generated_masks_with_a_notice(trained_run, learn_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(learn_root, root, ignore=shutil.ignore_patterns("train", "test"))
    removed = sorted((root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))[3]
    removed.unlink()
    assert run(trained_run, root, tmp_path / "out", "--split", "val") == 0
    captured = capsys.readouterr()
    assert (
        f"notice: 1 of 12 val frames have no shipped gtFine labelIds (first: {removed}); scoring against the masks "
        "generated from the polygons" in captured.err
    )
    report = json.loads((tmp_path / "out" / "tiny" / "val" / "metrics.json").read_text())
    assert report["protocol"]["ground_truth"] == "generated from polygons"
    assert run(trained_run, root, tmp_path / "out", "--split", "val", "--ground-truth", "provided") == 2
    assert f"{removed}: 1 of 12 val masks are missing" in capsys.readouterr().err


def test_evaluation_at_output_stride_8_of_a_model_trained_at_16(trained_run, tiny_root, tmp_path, capsys):
    assert run(trained_run, tiny_root, tmp_path, "--split", "val", "--eval-output-stride", "8", "--flip",
               "--scales", "0.75", "1.0", "1.25") == 0
    assert capsys.readouterr().out.startswith(
        "protocol: val, 3 images, whole 64x128, OS8 (trained OS16), flip, scales 0.75 1.0 1.25, float32")
    protocol = json.loads((tmp_path / "tiny" / "val" / "metrics.json").read_text())["protocol"]
    assert (protocol["train_output_stride"], protocol["test_output_stride"], protocol["scales"]) == (
        16,
        8,
        [0.75, 1.0, 1.25],
    )


def test_sliding_window_evaluation(trained_run, tiny_root, tmp_path, capsys):
    assert run(trained_run, tiny_root, tmp_path, "--split", "val", "--mode", "slide", "--crop", "64", "64",
               "--stride", "32", "32") == 0
    assert capsys.readouterr().out.startswith(
        "protocol: val, 3 images, slide 64x64 windows every 32x32 over 64x128, OS16"
    )
    protocol = json.loads((tmp_path / "tiny" / "val" / "metrics.json").read_text())["protocol"]
    assert (protocol["mode"], protocol["window"], protocol["stride"]) == ("slide", [64, 64], [32, 32])
    assert run(trained_run, tiny_root, tmp_path, "--split", "val", "--mode", "slide", "--crop", "64", "64",
               "--stride", "80", "32") == 2
    assert "argument --stride: [80, 32] leaves gaps between --crop [64, 64] windows" in capsys.readouterr().err


def test_a_second_evaluation_into_the_same_output_waits_its_turn_and_nothing_is_lost(trained_run, tiny_root,
                                                                                      tmp_path, capsys):
    from segdata.files import StagedOutput

    assert run(trained_run, tiny_root, tmp_path, "--split", "val") == 0
    final = tmp_path / "tiny" / "val"
    complete = {path: path.read_bytes() for path in sorted(final.rglob("*")) if path.is_file()}
    first = StagedOutput(final)  # another terminal's test_dlv3p.py, writing this output right now
    work = first.stage()
    (work / "labelIds").mkdir()
    (work / "labelIds" / "half.png").write_bytes(b"being written")
    capsys.readouterr()
    assert run(trained_run, tiny_root, tmp_path, "--split", "val") == 2
    err = capsys.readouterr().err
    assert f"error: {final}: another command is writing this output right now (pid {os.getpid()}, started " in err
    assert "Traceback" not in err and "PNGs in" not in err  # no file reported that is not there
    assert (work / "labelIds" / "half.png").read_bytes() == b"being written"  # the first's work is left alone
    assert {path: path.read_bytes() for path in sorted(final.rglob("*")) if path.is_file()} == complete
    first.commit()
    assert sorted(path.name for path in final.rglob("*")) == ["half.png", "labelIds"]
    assert run(trained_run, tiny_root, tmp_path, "--split", "val") == 0  # the output is free again


def test_frames_scores_a_fixed_part_of_the_split_and_says_so(trained_run, tiny_root, tmp_path):
    assert run(trained_run, tiny_root, tmp_path, "--split", "val", "--frames", "2") == 0
    metrics = json.loads((tmp_path / "tiny" / "val" / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["protocol"]["images"] == 2 and metrics["protocol"]["of_images"] == 3
    assert metrics["protocol"]["description"].startswith("val, 2 of 3 images (a fixed subset), whole 64x128")
    stems = [stem_of(path) for path in image_files(tiny_root, "val")]
    written = sorted(path.name for path in (tmp_path / "tiny" / "val" / "labelIds").rglob("*.png"))
    assert written == sorted(f"{stem}_labelIds.png" for stem in (stems[0], stems[1]))  # frames 0 and int(1.5)


def test_a_test_scale_rescales_the_images_and_scores_them_at_their_own_size(trained_run, tiny_root, tmp_path):
    """--test-scale W H: within the frames' own size nothing changes; at half of it the model sees 32x64 images and
    the label maps and scores are still of the 64x128 frames."""
    metrics = {}
    for name, extra in (("plain", ()), ("same", ("--test-scale", "128", "64")), ("half", ("--test-scale", "64", "40"))):
        assert run(trained_run, tiny_root, tmp_path / name, "--split", "val", *extra) == 0
        metrics[name] = json.loads((tmp_path / name / "tiny" / "val" / "metrics.json").read_text())
    assert metrics["same"]["confusion_matrix"] == metrics["plain"]["confusion_matrix"]
    assert metrics["half"]["confusion_matrix"] != metrics["plain"]["confusion_matrix"]
    assert metrics["half"]["protocol"]["test_scale"] == [64, 40] and metrics["plain"]["protocol"]["test_scale"] is None
    described = metrics["half"]["protocol"]["description"]
    assert described.startswith("val, 3 images, whole 64x128 rescaled within 64x40 (WxH)")
    assert sum(map(sum, metrics["half"]["confusion_matrix"])) == sum(map(sum, metrics["plain"]["confusion_matrix"]))
    written = next((tmp_path / "half" / "tiny" / "val" / "labelIds").rglob("*.png"))
    assert read_png(written).shape == (64, 128)


def test_a_score_report_names_the_loss_after_its_split():
    from deeplabv3plus.engine import EvaluationResult
    from deeplabv3plus.evaluation import score_report
    from deeplabv3plus.metrics import ConfusionMatrix
    from deeplabv3plus.protocol import EvaluationProtocol
    from segdata.classes import VOC_CLASSES

    confusion = ConfusionMatrix(VOC_CLASSES.num_classes, 255, "cpu")
    result = EvaluationResult(confusion, loss=0.5, images=1, seconds_per_image=0.1, peak_memory_mb=1.0)
    report = score_report(result, EvaluationProtocol(split="test", images=1, image_size="4x4"), VOC_CLASSES)
    assert report["test_loss"] == 0.5 and "val_loss" not in report
