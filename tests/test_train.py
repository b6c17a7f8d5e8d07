import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import shutil

import numpy as np
import torch

import train_dlv3p
from cityscapes.files import read_png, write_png
from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.history import HISTORY_COLUMNS, read_history
from helpers import interrupt_training_at_epoch

REPO = Path(__file__).resolve().parent.parent


def train_args(root, save_dir, *extra):
    return train_dlv3p.get_args_parser().parse_args([
        "--data-root", str(root), "--output_stride", "16", "--pretrained-backbone", "none", "--batch-size", "2",
        "--crop-size", "32", "64", "--workers", "0", "--device", "cpu", "--save-dir", str(save_dir),
        "--warmup-iters", "1", "--val-every", "1", *extra,
    ])


def test_two_iterations_write_history_and_both_checkpoints(tiny_root, tmp_path):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2")) == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    history = read_history(run)
    assert [row["iteration"] for row in history] == [1, 2] and [row["epoch"] for row in history] == [1, 2]
    with open(run / "history.csv") as stream:
        assert next(csv.reader(stream)) == HISTORY_COLUMNS
    assert len(json.loads((run / "per_class_iou.json").read_text())[0]["iou"]) == 19
    assert json.loads((run / "args.json").read_text())["iters"] == 2
    for name in ("last.pth", "best.pth"):
        checkpoint = torch.load(run / name, weights_only=True)
        assert checkpoint["model_config"] == {"backbone": "resnet50", "output_stride": 16, "num_classes": 19,
                                              "aux_head": True,  # the recipe's auxiliary head (weight 0.4)
                                              "stem": "7x7", "head": "dense"}
        assert any(key.startswith("aux_head.") for key in checkpoint["model"])
        assert {"optimizer", "scheduler", "scaler", "epoch", "iteration", "best_miou", "history", "args"} <= set(checkpoint)
        assert not any(key.startswith(("module.", "_orig_mod.")) for key in checkpoint["model"])
    assert load_checkpoint(run / "last.pth")["iteration"] == 2


def test_epochs_instead_of_iterations(tiny_root, tmp_path):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--epochs", "2", "--val-every", "2")) == 0
    history = read_history(tmp_path / "dlv3p_resnet50_os16")
    assert [(row["epoch"], row["iteration"]) for row in history] == [(2, 2)]  # 3 images, batch 2: 1 step per epoch
    assert history[0]["lr"] == 0.0  # the poly schedule ends with the last epoch


def test_mixed_precision_and_channels_last(tiny_root, tmp_path):
    """bfloat16 autocast on the CPU (float16 + GradScaler on CUDA) with channels_last memory."""
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2", "--amp", "--channels-last")) == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    assert json.loads((run / "args.json").read_text())["amp_dtype"] == "bfloat16"
    history = read_history(run)
    assert len(history) == 2 and all(row["seconds"] > 0 and row["val_loss"] > 0 for row in history)
    assert torch.isfinite(torch.tensor([row["train_loss"] for row in history])).all()


def test_resume_continues_exactly(tiny_root, tmp_path, monkeypatch):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path / "straight", "--iters", "3")) == 0

    undo = interrupt_training_at_epoch(monkeypatch, 3)  # the machine goes down mid-run
    assert train_dlv3p.main(train_args(tiny_root, tmp_path / "resumed", "--iters", "3")) == 130  # interrupted: last.pth keeps the last complete epoch
    undo()
    last = tmp_path / "resumed" / "dlv3p_resnet50_os16" / "last.pth"
    assert load_checkpoint(last)["iteration"] == 2
    resume = train_dlv3p.get_args_parser().parse_args([  # no --save-dir / --run-name: the run's own folder
        "--data-root", str(tiny_root), "--output_stride", "16", "--batch-size", "2", "--crop-size", "32", "64",
        "--workers", "0", "--device", "cpu", "--warmup-iters", "1", "--val-every", "1", "--iters", "3",
        "--resume", str(last)])
    assert train_dlv3p.main(resume) == 0

    straight = load_checkpoint(tmp_path / "straight" / "dlv3p_resnet50_os16" / "last.pth")
    resumed = load_checkpoint(last)
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert straight["scheduler"] == resumed["scheduler"]
    for index, state in straight["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][index]["momentum_buffer"])
    timings = ("seconds", "data_time", "compute_time", "peak_memory_mib")
    drop_time = lambda rows: [{k: v for k, v in row.items() if k not in timings} for row in rows]  # noqa: E731
    assert repr(drop_time(straight["history"])) == repr(drop_time(resumed["history"]))  # NaN-safe
    assert len(read_history(last.parent)) == 3


def test_non_finite_loss_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch, capsys):
    undo = interrupt_training_at_epoch(monkeypatch, 2)
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "3")) == 130  # interrupted: last.pth keeps the last complete epoch
    undo()
    last = tmp_path / "dlv3p_resnet50_os16" / "last.pth"
    before = last.read_bytes()

    class NanLoss(torch.nn.Module):
        def forward(self, outputs, target):
            return outputs["out"].mean() * float("inf")

    monkeypatch.setattr(train_dlv3p, "build_criterion", lambda args: NanLoss())
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "3", "--resume", str(last))) == 1
    message = capsys.readouterr().err
    assert "training loss is" in message and "last.pth keeps the last good state" in message
    assert last.read_bytes() == before


def test_resume_refuses_a_flag_that_contradicts_the_run(tiny_root, tmp_path, capsys):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1")) == 0
    last = tmp_path / "dlv3p_resnet50_os16" / "last.pth"
    for flag, value in (("--output-stride", "8"), ("--lr", "0.5"), ("--weight-decay", "0.0"), ("--momentum", "0.5"),
                        ("--iters", "2"), ("--batch-size", "3")):
        args = train_dlv3p.get_args_parser().parse_args(["--data-root", str(tiny_root), "--workers", "0", "--device",
                                                         "cpu", "--resume", str(last), flag, value])
        assert train_dlv3p.main(args) == 2, flag
        message = capsys.readouterr().err
        assert f"argument {flag}: {value}" in message and "a resumed run keeps its settings" in message, message


def test_resume_takes_the_run_settings_from_the_checkpoint(tiny_root, tmp_path):
    """Only --resume (and where the data is): stride, LR, crop... come from the checkpoint; args.json says so."""
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2", "--lr", "0.02", "--seed", "3")) == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    checkpoint = torch.load(run / "last.pth", weights_only=True)
    args = train_dlv3p.get_args_parser().parse_args(
        ["--data-root", str(tiny_root), "--workers", "0", "--device", "cpu", "--resume", str(run / "last.pth")])
    assert train_dlv3p.main(args) == 0  # already complete: nothing to train, but the flags resolve
    saved = json.loads((run / "args.json").read_text())
    assert (saved["output_stride"], saved["lr"], saved["seed"], saved["crop_size"], saved["iters"]) == (16, 0.02, 3, [32, 64], 2)
    assert saved["run_name"] == "dlv3p_resnet50_os16" and checkpoint["args"]["lr"] == 0.02


def test_amp_dtype_without_amp_is_refused(tiny_root, tmp_path, capsys):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--amp-dtype", "float16")) == 2
    assert "argument --amp-dtype: float16 takes effect only with --amp" in capsys.readouterr().err
    assert not (tmp_path / "dlv3p_resnet50_os16").exists()


def all_ignore_root(source, tmp_path):
    """A copy of a synthetic set with every train mask all 255 (val keeps its labels)."""
    root = tmp_path / "data"
    shutil.copytree(source, root)
    for path in (root / "generated_gt" / "train").glob("*/*_labelTrainIds.png"):
        write_png(path, np.full(read_png(path).shape, 255, np.uint8))
    return root


def test_batches_without_labelled_pixels_train_on(tiny_root, tmp_path):
    """A zero loss, not NaN: the run completes instead of stopping at its NaN guard."""
    root = all_ignore_root(tiny_root, tmp_path)
    assert train_dlv3p.main(train_args(root, tmp_path, "--iters", "2")) == 0
    history = read_history(tmp_path / "dlv3p_resnet50_os16")
    assert [row["train_loss"] for row in history] == [0.0, 0.0]


def test_batches_without_labelled_pixels_under_ddp(learn_root, tmp_path):
    """torchrun, 2 gloo processes, every batch all-ignore: both ranks go on identically and finish."""
    root = all_ignore_root(learn_root, tmp_path)
    done = subprocess.run(torchrun_train(root, tmp_path, "--iters", "2", "--batch-size", "4", "--crop-size", "32", "64"),
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["train_loss"] for row in read_history(tmp_path / "ddp")] == [0.0]


def test_history_shows_where_time_goes(tiny_root, tmp_path):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2")) == 0
    for row in read_history(tmp_path / "dlv3p_resnet50_os16"):
        assert row["data_time"] >= 0 and row["compute_time"] > 0 and row["peak_memory_mib"] > 100
        assert row["data_time"] + row["compute_time"] <= row["seconds"]


def test_bad_flags_and_data_are_clear_errors(tiny_root, tmp_path, capsys):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--batch-size", "8")) == 2
    assert "fewer than --batch-size 8" in capsys.readouterr().err
    assert train_dlv3p.main(train_args(tmp_path / "nowhere", tmp_path, "--iters", "1")) == 2
    assert "nowhere: no such folder; fix: pass --data-root" in capsys.readouterr().err


def test_the_model_learns(trained_run):
    """From scratch, 90 iterations on 12 synthetic 64x128 frames.

    Chance on this val split: predicting the most frequent class (sky) everywhere
    gives mIoU 0.018 and pixel accuracy 0.317; uniform guessing mIoU 0.016. Three
    runs with different LR and augmentation all ended at mIoU 0.25-0.26 and pixel
    accuracy 0.83-0.84 (small classes are a few pixels at this size). The
    thresholds, mIoU > 0.15 (8x chance) and pixel accuracy > 0.7, leave a wide
    margin for CPU and library differences yet fail for a model that did not learn.
    """
    history = read_history(trained_run)
    assert [row["iteration"] for row in history] == [30, 60, 90]
    final = history[-1]
    assert final["miou"] > 0.15 and final["pixel_accuracy"] > 0.7
    assert final["train_loss"] < history[0]["train_loss"]
    assert load_checkpoint(trained_run / "best.pth")["best_miou"] == max(row["miou"] for row in history)


def torchrun_train(root, save_dir, *extra, processes=2, device="cpu"):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            str(REPO / "train_dlv3p.py"), "--data-root", str(root), "--output-stride", "16", "--pretrained-backbone",
            "none", "--workers", "0", "--device", device, "--save-dir", str(save_dir), "--run-name", "ddp",
            "--val-every", "1", *extra]


def test_ddp_training_on_two_gloo_processes(learn_root, tmp_path):
    """torchrun with 2 CPU processes: trains, and only rank 0 writes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = torchrun_train(learn_root, tmp_path, "--batch-size", "4", "--crop-size", "32", "64", "--iters", "2")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = read_history(tmp_path / "ddp")
    assert [row["iteration"] for row in history] == [2]  # 12 images / batch 4 = 3 steps per epoch, capped at 2
    assert load_checkpoint(tmp_path / "ddp" / "last.pth")["iteration"] == 2
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["args.json", "best.pth", "history.csv",
                                                                     "last.pth", "per_class_iou.json"]


def test_without_the_auxiliary_head(tiny_root, tmp_path):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--aux-loss-weight", "0")) == 0
    checkpoint = load_checkpoint(tmp_path / "dlv3p_resnet50_os16" / "last.pth")
    assert checkpoint["model_config"]["aux_head"] is False
    assert not any(key.startswith("aux_head.") for key in checkpoint["model"])


def test_square_crop_and_a_warm_up_longer_than_the_run(tiny_root, tmp_path, caplog):
    args = train_dlv3p.get_args_parser().parse_args([
        "--data-root", str(tiny_root), "--output-stride", "16", "--pretrained-backbone", "none", "--batch-size", "2",
        "--crop-size", "48", "--workers", "0", "--device", "cpu", "--save-dir", str(tmp_path), "--iters", "10",
        "--val-every", "100"])
    with caplog.at_level("WARNING"):
        assert train_dlv3p.main(args) == 0
    saved = json.loads((tmp_path / "dlv3p_resnet50_os16" / "args.json").read_text())
    assert saved["crop_size"] == [48, 48]
    assert saved["warmup_iters"] == 1  # the default 1000 is longer than the run: a tenth of the 10 iterations
    assert "--warmup-iters 1000 is not shorter than the run (10 iterations); using 1" in caplog.text
    assert saved["val_protocol"]["description"] == "val, 3 images, whole 64x128, OS16, float32, ground truth: generated from polygons"


def test_training_from_the_cache_equals_training_from_pngs(tiny_root, tmp_path):
    from cityscapes.cache import build_cache

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    build_cache(root, ["train"], progress=False)
    assert train_dlv3p.main(train_args(root, tmp_path / "png", "--iters", "2")) == 0
    assert train_dlv3p.main(train_args(root, tmp_path / "cache", "--iters", "2", "--cache")) == 0
    png = load_checkpoint(tmp_path / "png" / "dlv3p_resnet50_os16" / "last.pth")["model"]
    cached = load_checkpoint(tmp_path / "cache" / "dlv3p_resnet50_os16" / "last.pth")["model"]
    assert all(torch.equal(png[key], cached[key]) for key in png)


def test_cache_flag_without_a_cache_names_the_command(tiny_root, tmp_path, capsys):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--cache")) == 2
    assert f"not in the cache {tiny_root / 'cache'}; build it with python -m cityscapes.cache" in capsys.readouterr().err


def test_jitter_on_the_device_trains_the_same_weights(tiny_root, tmp_path):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path / "loader", "--iters", "2", "--no-jitter-on-device")) == 0
    assert train_dlv3p.main(train_args(tiny_root, tmp_path / "device", "--iters", "2", "--jitter-on-device")) == 0
    in_loader = load_checkpoint(tmp_path / "loader" / "dlv3p_resnet50_os16" / "last.pth")["model"]
    on_device = load_checkpoint(tmp_path / "device" / "dlv3p_resnet50_os16" / "last.pth")["model"]
    assert all(torch.allclose(in_loader[key].float(), on_device[key].float(), atol=1e-6) for key in in_loader)


def test_cudnn_autotuning_on_cuda_unless_deterministic():
    try:
        train_dlv3p.configure_kernels(torch.device("cuda"), deterministic=False)  # flags only: no GPU needed
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        train_dlv3p.configure_kernels(torch.device("cuda"), deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
        train_dlv3p.configure_kernels(torch.device("cpu"), deterministic=False)
        assert not torch.backends.cudnn.benchmark
    finally:
        train_dlv3p.configure_kernels(torch.device("cpu"), deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_float16_on_the_cpu_is_warned_about(tiny_root, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--amp", "--amp-dtype", "float16")) == 0
    assert "float16 autocast on the CPU is many times slower than float32; use --amp-dtype bfloat16" in caplog.text
