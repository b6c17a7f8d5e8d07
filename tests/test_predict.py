"""predict_dlv3p.py on images of every kind, folders, globs and a video; ONNX export with its parity check."""

import csv
import json

import cv2
import numpy as np
import pytest

import predict_dlv3p
from cityscapes.labels import TRAIN_ID_TO_COLOR
from cityscapes.paths import image_files
from segdata.files import read_png


def run(trained_run, *arguments):
    return predict_dlv3p.main(predict_dlv3p.get_args_parser().parse_args(
        ["--model_weights_path", str(trained_run / "best.pth"), "--device", "cpu", *map(str, arguments)]))


@pytest.fixture(scope="module")
def inputs(learn_root, tmp_path_factory):
    """A folder with an RGB PNG, a grey JPEG and an RGBA PNG of another size in a subfolder, and a broken file."""
    folder = tmp_path_factory.mktemp("photos")
    image = read_png(image_files(learn_root, "val")[0])
    cv2.imwrite(str(folder / "street.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "grey.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    (folder / "trip").mkdir()
    rgba = np.dstack([cv2.resize(image, (101, 57)), np.full((57, 101), 200, np.uint8)])
    cv2.imwrite(str(folder / "trip" / "odd.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    return folder


@pytest.fixture(scope="module")
def video(learn_root, tmp_path_factory):
    """A 6-frame MP4 made from demo frames at 5 frames per second."""
    from deeplabv3plus.media import images_to_video

    return images_to_video(
        image_files(learn_root, "val")[:6], tmp_path_factory.mktemp("video") / "dashcam.mp4", fps=5.0
    )


def test_images_of_every_kind_mirror_their_names(trained_run, inputs, tmp_path):
    assert run(trained_run, inputs, "--out", tmp_path, "--save-ids", "--batch-size", "2") == 0
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.png"))
    assert written == sorted(f"{stem}_{kind}.png" for stem in ("grey", "street", "trip/odd")
                             for kind in ("color", "overlay", "trainIds", "labelIds"))
    odd = read_png(tmp_path / "trip" / "odd_color.png")
    assert odd.shape == (57, 101, 3)  # any size, alpha dropped
    train_ids = read_png(tmp_path / "trip" / "odd_trainIds.png")
    assert np.array_equal(odd, TRAIN_ID_TO_COLOR[train_ids])  # the colour mask is the prediction in the palette
    assert read_png(tmp_path / "grey_overlay.png").shape == (64, 128, 3)
    with open(tmp_path / "class_shares.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["name"] for row in rows] == ["grey.jpg", "street.png", "trip/odd.png"]
    assert all(sum(float(row[name]) for name in row if name != "name") == pytest.approx(1.0) for row in rows)


def test_a_video_becomes_an_mp4_at_its_frame_rate(trained_run, video, tmp_path):
    assert run(trained_run, video, "--out", tmp_path, "--batch-size", "4") == 0
    capture = cv2.VideoCapture(str(tmp_path / "dashcam_overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (128, 64)
    capture.release()
    with open(tmp_path / "dashcam_class_shares.csv") as stream:
        assert len(list(csv.DictReader(stream))) == 6
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed
    # the side-by-side video's class shares (of other predictions: sliding windows) would replace the first's
    assert run(trained_run, video, "--out", tmp_path, "--side-by-side", "--mode", "slide", "--crop", "64", "64",
               "--stride", "32", "32", "--overwrite") == 0
    capture = cv2.VideoCapture(str(tmp_path / "dashcam_side_by_side.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 2 * 128
    capture.release()


def test_unreadable_files_are_named_and_skipped(trained_run, inputs, video, tmp_path, capsys):
    broken = tmp_path / "in" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"not an image")
    fake_video = tmp_path / "in" / "fake.mp4"
    fake_video.write_bytes(b"not a video")
    assert run(trained_run, inputs / "street.png", broken, fake_video, str(tmp_path / "nothing-*.png"),
               "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"error: {broken}: cannot be read as an image" in err
    assert (
        f"error: {fake_video}: cannot be opened as a video" in err
        or f"error: {fake_video}: holds no readable frame" in err
    )
    assert "nothing-*.png: matches no file" in err
    assert (tmp_path / "out" / "street_color.png").exists()  # the others are still done


def test_checkpoint_and_flag_errors(trained_run, inputs, tmp_path, capsys):
    args = predict_dlv3p.get_args_parser().parse_args(["--model_weights_path", str(tmp_path / "none.pth"), str(inputs),
                                                       "--device", "cpu"])
    assert predict_dlv3p.main(args) == 2
    assert "none.pth: checkpoint not found" in capsys.readouterr().err
    assert run(trained_run, inputs, "--alpha", "2") == 2
    assert "argument --alpha: must be from 0 to 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        predict_dlv3p.get_args_parser().parse_args(["--model_weights_path", "x.pth", "a.png", "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "argument --batch-size: must be a positive integer, got 0" in capsys.readouterr().err


def test_onnx_export_matches_pytorch(trained_run, learn_root, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime
    import torch

    from deeplabv3plus import export
    from deeplabv3plus.inference import load_trained_model

    for extra in (["--height", "64", "--width", "128"], ["--dynamic", "--height", "64", "--width", "128"]):
        args = export.get_args_parser().parse_args(["--model_weights_path", str(trained_run / "best.pth"), "--out",
                                                    str(tmp_path), "--data-root", str(learn_root), "--num-images", "2",
                                                    *extra])
        assert export.main(args) == 0
        report = json.loads((tmp_path / "tiny.onnx.parity.json").read_text())
        assert report["images"] == 2 and report["argmax_agreement"] >= 0.9999 and report["meets_goal"]
        assert report["max_abs_logit_difference"] < 1e-3 and report["exporter"] == "dynamo"
    # the dynamic graph takes another batch and size
    session = onnxruntime.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, 57, 101)
    logits = session.run(["logits"], {"images": images.numpy()})[0]
    with torch.no_grad():
        expected = load_trained_model(trained_run / "best.pth")(images).numpy()
    assert logits.shape == (3, 19, 57, 101) and np.abs(logits - expected).max() < 1e-3


def test_export_without_onnx_says_what_to_install(trained_run, monkeypatch, capsys):
    import builtins

    from deeplabv3plus import export

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    args = export.get_args_parser().parse_args(["--model_weights_path", str(trained_run / "best.pth")])
    assert export.main(args) == 2
    assert "onnxruntime not installed; run pip install -r requirements-export.txt" in capsys.readouterr().err


def test_ctrl_c_during_a_video_leaves_no_partial_file(trained_run, video, tmp_path, capsys, monkeypatch):
    calls = []
    real = predict_dlv3p.Predictor.__call__

    def interrupted_on_the_second_batch(self, frames):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, frames)

    monkeypatch.setattr(predict_dlv3p.Predictor, "__call__", interrupted_on_the_second_batch)
    assert run(trained_run, video, "--out", tmp_path, "--batch-size", "2") == 130
    err = capsys.readouterr().err
    assert "interrupted: the files written to" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the MP4 nor its temporary file


def test_outputs_already_in_out_are_never_replaced_without_overwrite(trained_run, inputs, tmp_path, capsys):
    from test_bad_inputs import snapshot

    assert run(trained_run, inputs / "street.png", "--out", tmp_path) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert run(trained_run, inputs / "street.png", "--out", tmp_path, "--alpha", "0.9") == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'street_color.png'}: exists and is left as it is (and 2 more outputs of these " \
           "inputs); write elsewhere with --out DIR, or replace them with --overwrite" in err
    assert snapshot(tmp_path) == before
    assert run(trained_run, inputs / "street.png", "--out", tmp_path, "--alpha", "0.9", "--overwrite") == 0
    assert (tmp_path / "street_overlay.png").read_bytes() != before[tmp_path / "street_overlay.png"]
