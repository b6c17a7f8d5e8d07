import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import built_once
from helpers import interrupt_training_at_epoch, train_args, train_command

import train_dlv3p
from deeplabv3plus import assembly
from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.history import HISTORY_COLUMNS, read_history
from deeplabv3plus.precision import precision_from_flags
from segdata.files import read_png, write_png

REPO = Path(__file__).resolve().parent.parent


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
        assert {"epoch", "iteration", "best_miou", "history", "args", "classes"} <= set(checkpoint)
        assert not any(key.startswith(("module.", "_orig_mod.")) for key in checkpoint["model"])
        resume_point = {"optimizer", "scheduler", "scaler"} & set(checkpoint)
        assert resume_point == ({"optimizer", "scheduler", "scaler"} if name == "last.pth" else set())
    assert load_checkpoint(run / "last.pth")["iteration"] == 2
    # best.pth, the model to share, is about half of last.pth (no momentum buffers)
    assert (run / "best.pth").stat().st_size < 0.6 * (run / "last.pth").stat().st_size


def test_epochs_instead_of_iterations(tiny_root, tmp_path):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--epochs", "2", "--val-every", "2")) == 0
    history = read_history(tmp_path / "dlv3p_resnet50_os16")
    assert [(row["epoch"], row["iteration"]) for row in history] == [(2, 2)]  # 3 images, batch 2: 1 step per epoch
    assert history[0]["lr"] == 0.0  # the poly schedule ends with the last epoch


def test_mixed_precision_and_channels_last(tiny_root, tmp_path):
    """bfloat16 autocast on the CPU (float16 + GradScaler on CUDA) with channels_last memory."""
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2", "--amp", "--channels-last",
                                       "--val-frames", "1")) == 0  # bfloat16 is slow on a CPU without it
    run = tmp_path / "dlv3p_resnet50_os16"
    assert json.loads((run / "args.json").read_text())["amp_dtype"] == "bfloat16"
    history = read_history(run)
    assert len(history) == 2 and all(row["seconds"] > 0 and row["val_loss"] > 0 for row in history)
    assert torch.isfinite(torch.tensor([row["train_loss"] for row in history])).all()


def test_resume_continues_exactly(tiny_root, tmp_path, monkeypatch):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path / "straight", "--iters", "3")) == 0

    undo = interrupt_training_at_epoch(monkeypatch, 3)  # the machine goes down mid-run
    assert (
        train_dlv3p.main(train_args(tiny_root, tmp_path / "resumed", "--iters", "3")) == 130
    )  # interrupted: last.pth keeps the last complete epoch
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


@pytest.fixture(scope="module")
def uninterrupted_with_workers(learn_root, tmp_path_factory, worker_id):
    """6 iterations (2 epochs of 3) with 2 loader workers (persistent, one epoch stream), validated every epoch;
    trained once for every xdist worker (the two kinds of interruption may run on different workers)."""
    def train(save_dir):
        assert train_dlv3p.main(worker_args(learn_root, save_dir)) == 0

    save_dir = built_once(tmp_path_factory, worker_id, "straight_with_workers", train)
    return load_checkpoint(save_dir / "dlv3p_resnet50_os16" / "last.pth")


def worker_args(root, save_dir, *extra):
    return train_args(root, save_dir, *extra, batch_size=4, workers=2, iters=6)  # 2 workers: samples may arrive
    # out of order


def interrupt_at_step(monkeypatch, step):
    """Ctrl-C in the middle of an epoch: the loss of the given training step (1-based) raises KeyboardInterrupt."""
    build_criterion, steps = assembly.build_criterion, []

    def interrupting(config):
        criterion = build_criterion(config)

        def loss(outputs, target):
            steps.append(1)
            if len(steps) == step:
                raise KeyboardInterrupt
            return criterion(outputs, target)

        return loss

    monkeypatch.setattr(assembly, "build_criterion", interrupting)
    return lambda: monkeypatch.setattr(assembly, "build_criterion", build_criterion)


@pytest.mark.parametrize("kill", ["epoch boundary", "mid-epoch"])
def test_resume_with_loader_workers_repeats_the_uninterrupted_run(uninterrupted_with_workers, learn_root, tmp_path,
                                                                  monkeypatch, kill):
    undo = (
        interrupt_training_at_epoch(monkeypatch, 2) if kill == "epoch boundary" else interrupt_at_step(monkeypatch, 5)
    )
    assert train_dlv3p.main(worker_args(learn_root, tmp_path)) == 130
    undo()
    last = tmp_path / "dlv3p_resnet50_os16" / "last.pth"
    assert load_checkpoint(last)["iteration"] == 3
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args(["--device", "cpu", "--resume", str(last)])) == 0
    resumed, straight = load_checkpoint(last), uninterrupted_with_workers
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    timings = ("seconds", "data_time", "compute_time", "peak_memory_mib")
    drop_time = lambda rows: [{k: v for k, v in row.items() if k not in timings} for row in rows]  # noqa: E731
    assert repr(drop_time(straight["history"])) == repr(drop_time(resumed["history"]))


def test_non_finite_loss_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch, capsys):
    undo = interrupt_training_at_epoch(monkeypatch, 2)
    assert (
        train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "3")) == 130
    )  # interrupted: last.pth keeps the last complete epoch
    undo()
    last = tmp_path / "dlv3p_resnet50_os16" / "last.pth"
    before = last.read_bytes()

    class NanLoss(torch.nn.Module):
        def forward(self, outputs, target):
            return outputs["out"].mean() * float("inf")

    monkeypatch.setattr(assembly, "build_criterion", lambda config: NanLoss())
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "3", "--resume", str(last))) == 1
    message = capsys.readouterr().err
    assert "training loss is" in message and "last.pth keeps the last good state" in message
    assert last.read_bytes() == before


def test_resume_refuses_a_flag_that_contradicts_the_run(tiny_root, tmp_path, capsys):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1")) == 0
    last = tmp_path / "dlv3p_resnet50_os16" / "last.pth"
    for flag, value in (("--output-stride", "8"), ("--lr", "0.5"), ("--weight-decay", "0.0"), ("--momentum", "0.5"),
                        ("--batch-size", "3")):
        args = train_dlv3p.get_args_parser().parse_args(["--data-root", str(tiny_root), "--workers", "0", "--device",
                                                         "cpu", "--resume", str(last), flag, value])
        assert train_dlv3p.main(args) == 2, flag
        message = capsys.readouterr().err
        assert f"argument {flag}: {value}" in message and "a resumed run keeps its settings" in message, message


def test_resume_refuses_a_length_the_run_has_passed_or_counts_otherwise(tiny_root, tmp_path, capsys):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2")) == 0
    last = tmp_path / "dlv3p_resnet50_os16" / "last.pth"
    for flag, value, message in (("--iters", "1", "is at 2 iters already"), ("--iters", "2", "is at 2 iters already"),
                                 ("--epochs", "5", "counts its length in iters; give --iters")):
        args = train_dlv3p.get_args_parser().parse_args(["--workers", "0", "--device", "cpu", "--resume", str(last),
                                                         flag, value])
        if value == "2":  # the same length: nothing to change, nothing to refuse
            assert train_dlv3p.main(args) == 0
            continue
        assert train_dlv3p.main(args) == 2, (flag, value)
        assert f"argument {flag}: " in (err := capsys.readouterr().err) and message in err, err


def test_resume_makes_a_run_longer_with_the_schedule_for_the_new_length(tiny_root, tmp_path):
    from deeplabv3plus.optimizer import poly_lr_factor

    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2", "--lr", "0.02")) == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    assert load_checkpoint(run / "last.pth")["history"][-1]["lr"] == 0.0  # a finished poly schedule
    args = train_dlv3p.get_args_parser().parse_args(["--workers", "0", "--device", "cpu", "--resume",
                                                     str(run / "last.pth"), "--iters", "4"])
    assert train_dlv3p.main(args) == 0
    history = read_history(run)
    assert [row["iteration"] for row in history] == [1, 2, 3, 4]
    backbone_lr = [group["lr"] for group in load_checkpoint(run / "last.pth")["optimizer"]["param_groups"]]
    assert backbone_lr[0] == pytest.approx(0.02 * poly_lr_factor(4, 4, 0.9, 1)) and history[2]["lr"] > 0
    record = json.loads((run / "args.json").read_text())
    assert record["iters"] == 4 and len(record["resumes"]) == 1
    assert record["resumes"][0]["from_iteration"] == 2 and record["resumes"][0]["given"]["iters"] == 4
    assert record["resumes"][0]["changed"][0].startswith("--iters: 2 -> 4")


def test_resume_alone_continues_from_anywhere_and_keeps_what_the_run_used(tiny_root, tmp_path, monkeypatch):
    """--resume alone: the data root (recorded absolute) and --val-every come back; a data set that moved may be
    given again; args.json keeps the first start's settings (a run from scratch stays 'none') plus each resume."""
    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    monkeypatch.chdir(tmp_path)
    args = train_dlv3p.get_args_parser().parse_args([
        "--data-root", "data", "--output_stride", "16", "--pretrained-backbone", "none", "--batch-size", "2",
        "--crop-size", "32", "64", "--workers", "0", "--device", "cpu", "--save-dir", str(tmp_path / "runs"),
        "--warmup-iters", "1", "--val-every", "1", "--iters", "3"])
    undo = interrupt_training_at_epoch(monkeypatch, 2)
    assert train_dlv3p.main(args) == 130
    undo()
    last = tmp_path / "runs" / "dlv3p_resnet50_os16" / "last.pth"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no ./data here
    resume = lambda *extra: train_dlv3p.get_args_parser().parse_args(  # noqa: E731
        ["--workers", "0", "--device", "cpu", "--resume", str(last), *extra])
    undo = interrupt_training_at_epoch(monkeypatch, 2)
    assert train_dlv3p.main(resume()) == 130  # iteration 2 done with the recorded data root, then killed again
    undo()
    moved = tmp_path / "moved"
    data.rename(moved)
    assert train_dlv3p.main(resume("--data-root", str(moved))) == 0
    history = read_history(last.parent)
    assert [row["iteration"] for row in history] == [1, 2, 3]  # --val-every 1 came back: every epoch validated
    record = json.loads((last.parent / "args.json").read_text())
    assert record["pretrained_backbone"] == "none" and record["val_every"] == 1
    assert record["data_root"] == str(moved.resolve())
    assert [entry["from_iteration"] for entry in record["resumes"]] == [1, 2]
    assert record["resumes"][0]["changed"] == [] and record["resumes"][1]["changed"] == [
        f"--data-root: {data.resolve()} -> {moved.resolve()}"]


def test_resume_takes_the_run_settings_from_the_checkpoint(tiny_root, tmp_path):
    """Only --resume (and where the data is): stride, LR, crop... come from the checkpoint; args.json says so."""
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2", "--lr", "0.02", "--seed", "3")) == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    checkpoint = torch.load(run / "last.pth", weights_only=True)
    args = train_dlv3p.get_args_parser().parse_args(
        ["--data-root", str(tiny_root), "--workers", "0", "--device", "cpu", "--resume", str(run / "last.pth")])
    assert train_dlv3p.main(args) == 0  # already complete: nothing to train, but the flags resolve
    saved = json.loads((run / "args.json").read_text())
    assert (saved["output_stride"], saved["lr"], saved["seed"], saved["crop_size"], saved["iters"]) == (
        16,
        0.02,
        3,
        [32, 64],
        2,
    )
    assert saved["run_name"] == "dlv3p_resnet50_os16" and checkpoint["args"]["lr"] == 0.02


def test_amp_dtype_with_no_amp_is_refused(tiny_root, tmp_path, capsys):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--no-amp", "--amp-dtype", "float16")) == 2
    assert "argument --amp-dtype: float16 takes effect only with autocast; drop --no-amp" in capsys.readouterr().err
    assert not (tmp_path / "dlv3p_resnet50_os16").exists()


def all_ignore_root(source, tmp_path):
    """A copy of a synthetic set with every train mask all 255 (val keeps its labels)."""
    root = tmp_path / "data"
    shutil.copytree(source, root)
    for path in (root / "generated_gt" / "train").glob("*/*_labelTrainIds.png"):
        write_png(path, np.full(read_png(path).shape, 255, np.uint8))
    return root


def test_a_train_split_without_labelled_pixels_is_named_before_and_stops_training(tiny_root, tmp_path, capsys):
    """Masks all 255 train to nothing: the data check names them, and training stops with one line (exit 2) at the
    end of the first epoch instead of running to a useless model; no run folder is left behind."""
    from cityscapes import check

    root = all_ignore_root(tiny_root, tmp_path)
    assert check.main(check.get_args_parser().parse_args(["--data-root", str(root), "--splits", "train", "val"])) == 1
    out, err = capsys.readouterr()
    assert "train images 3, polygon files 3, shipped labelIds 3, generated masks 3, labelled pixels 0.0%" in out
    assert "_gtFine_labelTrainIds.png: has no labelled pixel" in err and "(and 2 more in train)" in err
    assert "labelled pixels 8" in out.splitlines()[1]  # val keeps its labels (85%)
    assert train_dlv3p.main(train_args(root, tmp_path / "runs", "--iters", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no labelled pixel in this pass's 1 training batches") and "epoch 1" in err[-1]
    assert "Traceback" not in "".join(err) and not (tmp_path / "runs").exists()


def test_batches_without_labelled_pixels_under_ddp(learn_root, tmp_path):
    """torchrun, 2 gloo processes, every batch all-ignore: both ranks stop together after the first epoch."""
    root = all_ignore_root(learn_root, tmp_path)
    done = subprocess.run(
        torchrun_train(root, tmp_path, "--iters", "2", "--batch-size", "4", "--crop-size", "32", "64"),
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0, done.stderr[-3000:]
    assert done.stderr.count("error: no labelled pixel in this pass's 2 training batches") == 2  # each rank says it
    assert not (tmp_path / "ddp" / "last.pth").exists()


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
    """From scratch, 60 iterations on 12 synthetic 64x128 frames.

    Chance on this val split: predicting the most frequent class (sky) everywhere
    gives mIoU 0.018 and pixel accuracy 0.317; uniform guessing mIoU 0.016. Four
    seeds (0-3) of this run ended at mIoU 0.206-0.226 and pixel accuracy
    0.797-0.801 (2026-12-05; 90 iterations reached 0.25-0.27: small classes are a
    few pixels at this size). The thresholds, mIoU > 0.15 (8x chance) and pixel
    accuracy > 0.7, leave a wide margin for CPU and library differences yet fail
    for a model that did not learn.
    """
    history = read_history(trained_run)
    assert [row["iteration"] for row in history] == [30, 60]
    final = history[-1]
    assert final["miou"] > 0.15 and final["pixel_accuracy"] > 0.7
    assert final["train_loss"] < history[0]["train_loss"]
    assert load_checkpoint(trained_run / "best.pth")["best_miou"] == max(row["miou"] for row in history)


def torchrun_train(root, save_dir, *extra, processes=2, device="cpu"):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            str(REPO / "train_dlv3p.py"), *train_command(root, save_dir, *extra, device=device, run_name="ddp",
                                                         batch_size=None, crop_size=None, warmup_iters=None)]


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
                                                                     "last.pth", "per_class_iou.json", "tb"]
    assert len(list((tmp_path / "ddp" / "tb").iterdir())) == 1  # one event file: rank 0's alone


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
    assert (
        saved["val_protocol"]["description"]
        == "val, 3 images, whole 64x128, OS16, float32, ground truth: generated from polygons"
    )


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
    assert (
        f"not in the cache {tiny_root / 'cache'}; build it with python -m cityscapes.cache" in capsys.readouterr().err
    )


def test_jitter_on_the_device_trains_the_same_weights(tiny_root, tmp_path):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path / "loader", "--iters", "2", "--no-jitter-on-device")) == 0
    assert train_dlv3p.main(train_args(tiny_root, tmp_path / "device", "--iters", "2", "--jitter-on-device")) == 0
    in_loader = load_checkpoint(tmp_path / "loader" / "dlv3p_resnet50_os16" / "last.pth")["model"]
    on_device = load_checkpoint(tmp_path / "device" / "dlv3p_resnet50_os16" / "last.pth")["model"]
    assert all(torch.allclose(in_loader[key].float(), on_device[key].float(), atol=1e-6) for key in in_loader)


def test_cudnn_autotuning_on_cuda_unless_deterministic():
    try:
        assembly.configure_kernels(torch.device("cuda"), deterministic=False)  # flags only: no GPU needed
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        assembly.configure_kernels(torch.device("cuda"), deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
        assembly.configure_kernels(torch.device("cpu"), deterministic=False)
        assert not torch.backends.cudnn.benchmark
    finally:
        assembly.configure_kernels(torch.device("cpu"), deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_float16_on_the_cpu_is_warned_about(caplog):
    """The scripts decide precision with precision_from_flags alone (train, test and predict), so it is tested here."""
    with caplog.at_level("WARNING"):
        assert precision_from_flags(True, "float16", "cpu").dtype == torch.float16
    assert "float16 autocast on the CPU is many times slower than float32; use --amp-dtype bfloat16" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        precision_from_flags(True, "bfloat16", "cpu")
        precision_from_flags(False, None, "cpu")
    assert "float16 autocast" not in caplog.text


def test_a_run_that_ended_inside_an_epoch_trains_the_iterations_it_is_lengthened_by(learn_root, tmp_path):
    """12 frames, batch 2: a 2-iteration run ends inside its first epoch of 6; --iters 3 trains its third batch."""
    assert train_dlv3p.main(train_args(learn_root, tmp_path, "--iters", "2", "--val-frames", "1")) == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args([
        "--workers", "0", "--device", "cpu", "--resume", str(run / "last.pth"), "--iters", "3"])) == 0
    last = load_checkpoint(run / "last.pth")
    assert last["iteration"] == 3 and last["epoch"] == 1  # still the first epoch, now 3 of its 6 batches trained
    assert [(row["epoch"], row["iteration"]) for row in read_history(run)] == [(1, 2), (1, 3)]
    record = json.loads((run / "args.json").read_text())
    assert record["iters"] == 3 and record["resumes"][0]["from_iteration"] == 2
