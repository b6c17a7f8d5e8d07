"""Every mistake of a user's first week ends in one line naming the file or flag and the fix, exit status 2 (bad
input) or 1 (a failure while running), no traceback, and nothing the user had is changed."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import interrupt_training_at_epoch, train_command

import test_dlv3p
import train_dlv3p
from cityscapes.paths import image_files, polygon_files
from deeplabv3plus.checkpoint import load_checkpoint
from segdata.files import write_png


def snapshot(*folders):
    """Every file under the folders, with its bytes (to prove nothing was changed)."""
    return {path: path.read_bytes() for folder in folders if Path(folder).exists()
            for path in sorted(Path(folder).rglob("*")) if path.is_file()}


def outcome(module, argv, capsys):
    """(exit status, stderr) of a script's main on argv, parse errors included."""
    try:
        code = module.main(module.get_args_parser().parse_args([str(a) for a in argv]))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line(err, *fragments):
    lines = [line for line in err.strip().splitlines() if line.startswith("error") or ": error: " in line]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def train_argv(tiny_copy, save_dir, *extra):
    return train_command(tiny_copy, save_dir, "--iters", "1", *extra)


def evaluation_argv(trained_run, root, out, *extra):
    return ["--model_weights_path", trained_run / "best.pth", "--data-root", root, "--out", out, "--device", "cpu",
            "--workers", "0", *extra]


TRAIN_FLAGS = [  # (flags, what the one line must say)
    (["--iters", "0"], "argument --iters: must be a positive integer, got 0"),
    (["--iters", "-1"], "argument --iters: must be a positive integer, got -1"),
    (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
    (["--val-every", "0"], "argument --val-every: must be a positive integer, got 0"),
    (["--crop-size", "0", "0"], "argument --crop-size: must be an integer from 1 to 4096, got 0"),
    (["--crop-size", "100000", "100000"], "argument --crop-size: must be an integer from 1 to 4096, got 100000"),
    (["--crop-size", "64", "64", "64"], "argument --crop-size: give one size (square) or two"),
    (["--warmup-iters", "-5"], "argument --warmup-iters: must be an integer >= 0, got -5"),
    (["--scale-range", "2", "0.5"], "argument --scale-range: needs 0 < MIN <= MAX, got 2.0 0.5"),
    (["--lr", "-1"], "argument --lr: must be a positive number, got -1"),
    (["--workers", "-1"], "argument --workers: must be an integer >= 0, got -1"),
    (["--val-batch-size", "0"], "argument --val-batch-size: must be a positive integer, got 0"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--log-every", "0"], "argument --log-every: must be a positive integer, got 0"),
    (["--aux-loss-weight", "-1"], "argument --aux-loss-weight: must be a number >= 0, got -1"),
    (["--device", "gpu"], "argument --device: must be cpu, cuda or cuda:N, got 'gpu'"),
    (["--no-amp", "--amp-dtype", "float16"], "argument --amp-dtype: float16 takes effect only with autocast"),
    (["--batch-size", "4"], "the train split has 3 images, fewer than --batch-size 4"),
]


@pytest.mark.parametrize("flags,message", TRAIN_FLAGS, ids=[" ".join(flags) for flags, _ in TRAIN_FLAGS])
def test_train_flags_are_checked_before_any_work(tiny_copy, tmp_path, capsys, flags, message):
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path / "saved", *flags), capsys)
    assert code == 2
    assert_one_line(err, message)
    assert not (tmp_path / "saved" / "dlv3p_resnet50_os16").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu(tiny_copy, trained_run, tmp_path, capsys):
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path, "--device", "cuda"), capsys)
    assert code == 2
    assert_one_line(err, "argument --device: cuda: no CUDA GPU is available here; use --device cpu")
    code, err = outcome(test_dlv3p, ["--model_weights_path", trained_run / "best.pth", "--device", "cuda"], capsys)
    assert code == 2
    assert_one_line(err, "no CUDA GPU is available here")


def test_output_folders_that_cannot_be_written(tiny_copy, trained_run, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, a_file), capsys)
    assert code == 2
    assert_one_line(err, f"argument --save-dir: {a_file} is a file, not a folder")
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, "/proc/no_such_folder"), capsys)
    assert code == 2
    assert_one_line(err, "argument --save-dir: cannot write in /proc/no_such_folder")
    code, err = outcome(test_dlv3p, evaluation_argv(trained_run, tiny_copy, a_file), capsys)
    assert code == 2
    assert_one_line(err, f"argument --out: {a_file} is a file, not a folder")


TEST_FLAGS = [
    (["--scales", "0"], "argument --scales: must be a scale from 0.125 to 8, got 0"),
    (["--scales", "0.01"], "argument --scales: must be a scale from 0.125 to 8, got 0.01"),
    (["--scales", "0.25"], "argument --scales: 0.25 shrinks a 64x128 image below 32 pixels a side"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--device", "gpu"], "argument --device: must be cpu, cuda or cuda:N"),
    (["--mode", "slide", "--crop", "32", "32", "--stride", "64", "64"], "argument --stride: [64, 64] leaves gaps"),
    (["--workers", "-2"], "argument --workers: must be an integer >= 0, got -2"),
]


@pytest.mark.parametrize("flags,message", TEST_FLAGS, ids=[" ".join(flags) for flags, _ in TEST_FLAGS])
def test_test_flags(trained_run, tiny_copy, tmp_path, capsys, flags, message):
    code, err = outcome(test_dlv3p, evaluation_argv(trained_run, tiny_copy, tmp_path / "out", *flags), capsys)
    assert code == 2
    assert_one_line(err, message)
    assert not (tmp_path / "out" / "tiny").exists()


def test_checkpoints_that_are_not_checkpoints(trained_run, tiny_copy, tmp_path, capsys):
    random_bytes = tmp_path / "random.pth"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    damaged = tmp_path / "run" / "best.pth"
    damaged.parent.mkdir()
    data = bytearray((trained_run / "best.pth").read_bytes())
    data[len(data) // 2:len(data) // 2 + 2048] = bytes(2048)  # a few KB zeroed inside the weights
    damaged.write_bytes(bytes(data))
    for path, message in ((random_bytes, "random.pth: not a checkpoint"), (damaged, "best.pth: damaged"),
                          (tmp_path / "missing.pth", "missing.pth: checkpoint not found")):
        code, err = outcome(
            test_dlv3p,
            ["--model_weights_path", path, "--data-root", tiny_copy, "--out", tmp_path / "out", "--device", "cpu"],
            capsys,
        )
        assert code == 2
        assert_one_line(err, message)
        assert "weights_only" not in err
        code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path / "saved", "--resume", path), capsys)
        assert code == 2
        assert_one_line(err, message)


def test_a_second_run_never_overwrites_the_first(tiny_copy, tmp_path, capsys):
    assert outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)[0] == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    before = snapshot(run)
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path, "--lr", "0.02"), capsys)
    assert code == 2
    assert_one_line(
        err, f"{run}: already holds a run", f"--resume {run / 'last.pth'}", "--run-name NAME", "--overwrite"
    )
    assert snapshot(run) == before
    assert outcome(train_dlv3p, train_argv(tiny_copy, tmp_path, "--run-name", "second"), capsys)[0] == 0
    assert snapshot(run) == before
    assert outcome(train_dlv3p, train_argv(tiny_copy, tmp_path, "--overwrite", "--lr", "0.02"), capsys)[0] == 0
    assert load_checkpoint(run / "last.pth")["args"]["lr"] == 0.02


def test_a_killed_checkpoint_write_leaves_no_temporary_file(tiny_copy, tmp_path, capsys, monkeypatch):
    from deeplabv3plus import checkpoint

    undo = interrupt_training_at_epoch(monkeypatch, 2)
    assert outcome(train_dlv3p, train_argv(tiny_copy, tmp_path, "--iters", "2"), capsys)[0] == 130
    undo()
    run = tmp_path / "dlv3p_resnet50_os16"
    (run / ".best.pth.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a write the kill cut short
    real = checkpoint.write_checkpoint

    def disk_full(path, payload):  # in the background writer, as a real full disk would be
        if Path(path).name == "best.pth":
            raise OSError(28, "No space left on device", str(path))
        return real(path, payload)

    monkeypatch.setattr(checkpoint, "write_checkpoint", disk_full)
    code, err = outcome(
        train_dlv3p, train_argv(tiny_copy, tmp_path, "--resume", run / "last.pth", "--iters", "2"), capsys
    )
    assert code == 1, err
    assert_one_line(err, f"cannot write {run / 'best.pth'}: No space left on device",
                    f"continue with python train_dlv3p.py --resume {run / 'last.pth'}")
    assert not list(run.glob(".*.tmp"))  # the stale temporary file was removed at start
    assert load_checkpoint(run / "last.pth")["iteration"] == 2  # written before best.pth: the run can resume


def test_ctrl_c_during_training_says_how_to_continue(tiny_copy, tmp_path, capsys, monkeypatch):
    interrupt_training_at_epoch(monkeypatch, 2)
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path, "--iters", "3"), capsys)
    run = tmp_path / "dlv3p_resnet50_os16"
    assert code == 130
    assert_one_line(err.replace("interrupted", "error: interrupted"), f"{run / 'last.pth'} holds iteration 1",
                    f"continue with python train_dlv3p.py --resume {run / 'last.pth'}")


def test_damaged_images_found_by_the_loader(tiny_copy, tmp_path, capsys):
    image = image_files(tiny_copy, "train")[1]
    image.write_bytes(image.read_bytes()[:300])  # truncated
    for workers in ("0", "1"):  # in the main process, and re-raised from a loader worker
        code, err = outcome(
            train_dlv3p, train_argv(tiny_copy, tmp_path / workers, "--batch-size", "3", "--workers", workers), capsys
        )
        assert code == 2
        assert_one_line(
            err, f"{image}: cannot be decoded (truncated, empty or not a PNG)", "python -m cityscapes.check"
        )


def test_an_image_that_does_not_match_its_annotation(tiny_copy, trained_run, tmp_path, capsys):
    train_image = image_files(tiny_copy, "train")[0]
    write_png(train_image, np.zeros((32, 64, 3), np.uint8))
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path / "saved", "--iters", "3"), capsys)
    assert code == 2
    assert_one_line(err, f"{train_image}: is 32x64 but its mask", "the image does not match its annotation: re-extract")
    # on the test split the same image would give a wrong-size PNG inside the submission zip
    argv = evaluation_argv(trained_run, tiny_copy, tmp_path / "out", "--split", "test")
    assert outcome(test_dlv3p, argv, capsys)[0] == 0
    before = snapshot(tmp_path / "out")
    test_image = image_files(tiny_copy, "test")[2]
    write_png(test_image, np.zeros((32, 64, 3), np.uint8))
    code, err = outcome(test_dlv3p, argv, capsys)
    assert code == 2
    assert_one_line(err, f"{test_image}: is 32x64 but its annotation says 64x128", "keeps its previous output")
    assert snapshot(tmp_path / "out") == before


def test_an_image_without_its_polygon_file(tiny_copy, tmp_path, capsys):
    annotation = polygon_files(tiny_copy, "train")[2]
    annotation.unlink()
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
    assert code == 2
    assert_one_line(err, f"no {annotation.name}", "re-extract gtFine_trainvaltest.zip")


def test_validation_without_labelled_pixels(tiny_copy, tmp_path, capsys, caplog):
    for path in (tiny_copy / "generated_gt" / "val").glob("*/*_labelTrainIds.png"):
        write_png(path, np.full((64, 128), 255, np.uint8))
    with caplog.at_level("WARNING"):
        code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
    assert code == 0
    assert "the val split has no labelled pixels" in caplog.text and "holds the trained model" in caplog.text
    assert load_checkpoint(tmp_path / "dlv3p_resnet50_os16" / "last.pth")["iteration"] == 1


def test_an_interrupted_evaluation_keeps_the_previous_output(trained_run, tiny_copy, tmp_path, capsys, monkeypatch):
    from segdata.prediction_files import PredictionWriter

    argv = evaluation_argv(trained_run, tiny_copy, tmp_path, "--split", "val")
    assert outcome(test_dlv3p, argv, capsys)[0] == 0
    before = snapshot(tmp_path)
    real, calls = PredictionWriter.__call__, []

    def killed_on_the_second_batch(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(PredictionWriter, "__call__", killed_on_the_second_batch)
    code, err = outcome(test_dlv3p, argv, capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before  # no mix of old and new PNGs, no partial folder left
    monkeypatch.setattr(PredictionWriter, "__call__", real)
    assert outcome(test_dlv3p, [*argv, "--model-name", "other"], capsys)[0] == 0  # a second model: its own folder
    assert snapshot(tmp_path / "tiny") == {k: v for k, v in before.items() if "tiny" in k.parts}


# --- tools outside the three scripts: outputs checked before any work, nothing overwritten they did not make ---

def test_convert_never_replaces_a_file_it_did_not_make(trained_run, tmp_path, capsys):
    from deeplabv3plus import convert

    best = tmp_path / "best.pth"
    best.write_bytes((trained_run / "best.pth").read_bytes())
    before = snapshot(tmp_path)
    source = tmp_path / "mmseg.pth"
    torch.save({"state_dict": {"backbone.stem.0.weight": torch.zeros(1)}}, source)
    code, err = outcome(convert, ["--from", "mmseg", source, best], capsys)
    assert code == 2
    assert_one_line(err, f"argument output: {best} exists and is left as it is", "--overwrite")
    code, err = outcome(convert, ["--from", "mmseg", source, tmp_path], capsys)
    assert code == 2
    assert_one_line(err, f"argument output: {tmp_path} is a folder; name a file")
    code, err = outcome(convert, ["--from", "mmseg", source, "/proc/converted.pth"], capsys)
    assert code == 2
    assert_one_line(err, "argument output: cannot write in /proc")
    assert snapshot(tmp_path) == {**before, source: source.read_bytes()}


def test_random_bytes_are_no_checkpoint_and_need_no_trust(tmp_path, tiny_copy, capsys):
    from deeplabv3plus import convert

    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    code, err = outcome(convert, ["--from", "mmseg", noise, tmp_path / "out.pth"], capsys)
    assert code == 2
    assert_one_line(err, f"{noise}: not a PyTorch checkpoint")
    assert "--trust-pickle" not in err
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path / "runs", "--pretrained-backbone", noise), capsys)
    assert code == 2
    assert_one_line(err, f"{noise}: not a loadable PyTorch state dict", "expected a ResNet state dict")
    assert not (tmp_path / "runs").exists()


def test_export_checks_its_output_before_the_export(trained_run, capsys, tmp_path):
    from deeplabv3plus import export

    code, err = outcome(export, ["--model_weights_path", trained_run / "best.pth", "--out", "/proc/model.onnx"], capsys)
    assert code == 2
    assert_one_line(err, "argument --out: cannot write in /proc")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    code, err = outcome(export, ["--model_weights_path", trained_run / "best.pth", "--out", a_file], capsys)
    assert code == 2
    assert_one_line(err, f"argument --out: {a_file} is a file, not a folder")


def test_generate_gt_and_cache_check_their_output_first(tiny_copy, tmp_path, capsys, monkeypatch):
    from cityscapes import cache, generate_gt
    from segdata import cache as frame_cache

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    before = snapshot(tiny_copy)
    for argv in (["generate", "--data-root", tiny_copy, "--out", a_file],
                 ["generate", "--data-root", tiny_copy, "--out", "/proc/masks"]):
        code, err = outcome(generate_gt, argv, capsys)
        assert code == 2 and "RemoteTraceback" not in err
        assert_one_line(err, "argument --out:")
    code, err = outcome(generate_gt, ["generate", "--data-root", tiny_copy, "--workers", "-3"], capsys)
    assert code == 2
    assert_one_line(err, "argument --workers: must be a positive integer, got -3")
    code, err = outcome(cache, ["--data-root", tiny_copy, "--cache-dir", a_file], capsys)
    assert code == 2
    assert_one_line(err, f"argument --cache-dir: {a_file} is a file, not a folder")
    monkeypatch.setattr(frame_cache, "free_bytes", lambda path: 1000)  # a nearly full disk
    code, err = outcome(cache, ["--data-root", tiny_copy, "--cache-dir", tmp_path / "cache"], capsys)
    assert code == 2
    assert_one_line(err, "the cache needs 0.00 GB and 0.00 GB are free", "--cache-dir")
    assert not (tmp_path / "cache").exists() and snapshot(tiny_copy) == before


def test_a_cache_stopped_by_a_full_disk_keeps_a_true_manifest(tiny_copy, tmp_path, capsys, monkeypatch):
    from cityscapes import cache
    from segdata import cache as frame_cache

    real_write, writes = frame_cache.write_bytes_atomic, []

    def fill_up(path, payload):
        writes.append(path)
        if len(writes) == 3:  # the second frame's image: the disk is full
            raise OSError(28, "No space left on device", str(path))
        real_write(path, payload)

    monkeypatch.setattr(frame_cache, "write_bytes_atomic", fill_up)
    code, err = outcome(cache, ["--data-root", tiny_copy, "--cache-dir", tmp_path / "cache"], capsys)
    assert code == 1
    assert_one_line(err, "No space left on device", "the frames cached so far are kept")
    manifest = json.loads((tmp_path / "cache" / frame_cache.MANIFEST).read_text())
    assert list(manifest["frames"]) == ["train/aachen_000000_000019"]  # the complete frame, not the half-written one


def test_a_start_that_fails_leaves_no_folders(tiny_copy, tmp_path, capsys):
    save_dir = tmp_path / "new" / "runs"
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, save_dir, "--batch-size", "8"), capsys)
    assert code == 2 and not (tmp_path / "new").exists()
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, save_dir, "--resume", tmp_path / "none.pth"), capsys)
    assert code == 2 and not (tmp_path / "new").exists() and "--resume" not in err.split(":", 2)[-1].split(";")[-1]


def test_a_run_stopped_before_its_first_checkpoint_never_advises_resume(tiny_copy, tmp_path, capsys, monkeypatch):
    interrupt_training_at_epoch(monkeypatch, 1)
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path / "runs"), capsys)
    assert code == 130 and "--resume" not in err and "run the same command again" in err
    assert not (tmp_path / "runs").exists()  # no run folder holding only args.json


def test_the_video_maker_checks_its_flags(capsys, tmp_path):
    from deeplabv3plus import media

    with pytest.raises(SystemExit) as exit_:
        media.main([str(tmp_path), str(tmp_path / "clip.mp4"), "--fps", "-3"])
    assert exit_.value.code == 2
    assert_one_line(capsys.readouterr().err, "argument --fps: must be a positive number, got -3")


def test_an_empty_val_image_ends_in_one_line_and_leaves_no_run_folder(tiny_copy, tmp_path, capsys):
    image = image_files(tiny_copy, "val")[1]
    image.write_bytes(b"")
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path / "saved"), capsys)
    assert code == 2
    assert_one_line(err, f"{image}: is empty (0 bytes)", "replace or remove it")
    assert not (tmp_path / "saved").exists()


def test_resume_from_best_names_the_ways_on(trained_run, tmp_path, capsys):
    best = trained_run / "best.pth"
    code, err = outcome(train_dlv3p, ["--resume", best, "--device", "cpu"], capsys)
    assert code == 2
    assert_one_line(err, f"{best}: has no optimizer state",
                    f"resume from the run's last.pth ({trained_run / 'last.pth'})",
                    f"--init-weights {best} --run-name NAME")
