"""The GPU tier: the CUDA path end to end. Skipped without a GPU; ``make test-gpu`` runs exactly these.

Each test is small (64x128 synthetic frames, tens of iterations) so the tier
takes minutes on one GPU. ``pytest -m cuda --fake-cuda`` runs them on the fake
CUDA device of tests/fake_cuda.py instead (those marked ``gpu_hardware`` skip).
"""

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import interrupt_training_at_epoch, train_args

import test_dlv3p
import train_dlv3p
from deeplabv3plus import assembly
from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.history import read_history

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parent.parent
ITERATIONS = 20


STEPS_PER_EPOCH = 6  # learn_root's 12 train frames in batches of 2


def train(root, save_dir, run_name, *extra, workers: int | None = 2):
    """train_dlv3p on the GPU at a small size; ``workers=None``: the default number of loader workers."""
    return train_dlv3p.main(train_args(root, save_dir, *extra, batch_size=4, crop_size=(64, 128), workers=workers,
                                       device="cuda", run_name=run_name, warmup_iters=2, val_every=5, log_every=5))


def on_the_fake_device() -> bool:
    return torch.cuda.get_device_name().startswith("fake")


def initial_parameters(checkpoint: dict) -> dict:
    """The parameters the run started from (training seeds torch, then builds the model on the CPU)."""
    from deeplabv3plus.model import model_from_config

    torch.manual_seed(checkpoint["args"]["seed"])
    model = model_from_config(checkpoint["model_config"], aux_head=checkpoint["model_config"]["aux_head"])
    return dict(model.named_parameters())


@pytest.mark.parametrize("extra", [
    ["--amp-dtype", "float16"],                  # float16 + GradScaler
    ["--amp", "--amp-dtype", "bfloat16", "--no-channels-last"],
    ["--no-amp", "--channels-last"],
    [],                                          # the defaults: bfloat16 + channels_last on a GPU that runs bf16
    pytest.param(["--compile"], marks=pytest.mark.gpu_hardware),  # inductor
], ids=["fp16-scaler", "bf16", "fp32-channels-last", "defaults", "compile"])
def test_training_on_the_gpu(learn_root, tmp_path, extra):
    assert train(learn_root, tmp_path, "gpu", "--iters", str(ITERATIONS), *extra) == 0
    history = read_history(tmp_path / "gpu")
    assert history[-1]["iteration"] == ITERATIONS
    assert all(torch.isfinite(torch.tensor([row["train_loss"], row["val_loss"]])).all() for row in history)
    peak = history[-1]["peak_memory_mib"]
    assert (math.isnan(peak) if on_the_fake_device() else peak > 0) and history[-1]["compute_time"] > 0
    path = tmp_path / "gpu" / "last.pth"
    raw = torch.load(path, weights_only=True)  # no map_location: a GPU run's file must still load on a CPU
    assert all(value.device.type == "cpu" for value in raw["model"].values())
    checkpoint = load_checkpoint(path)
    assert checkpoint["optimizer"]["state"]  # momentum buffers: the optimizer stepped
    start = initial_parameters(checkpoint)
    moved = [name for name, value in start.items() if not torch.equal(value, checkpoint["model"][name])]
    assert len(moved) > len(start) // 2  # the GradScaler did not skip every step
    assert torch.backends.cudnn.benchmark  # fixed crops: autotuned kernels


@pytest.mark.parametrize("extra", [["--amp", "--amp-dtype", "float16"], ["--amp", "--amp-dtype", "bfloat16"],
                                   ["--no-amp", "--channels-last"], []],
                         ids=["fp16-scaler", "bf16", "fp32-channels-last", "defaults"])
def test_a_training_step_makes_no_synchronizing_call(learn_root, tmp_path, monkeypatch, extra):
    """Sync debug mode "error" from the 2nd step's loss to the last step's of an epoch, with the default workers: a
    synchronizing call there raises at once, and its stack is the failure. (Turning the mode on warns that it is a
    prototype, in words that say "synchronizing": that warning is not a sync.)"""
    losses = []
    build_criterion = assembly.build_criterion

    def watched(config):
        criterion = build_criterion(config)

        def loss(outputs, target):
            losses.append(1)
            if len(losses) == 2:
                torch.cuda.set_sync_debug_mode("error")
            if len(losses) == STEPS_PER_EPOCH:
                torch.cuda.set_sync_debug_mode("default")
            return criterion(outputs, target)

        return loss

    monkeypatch.setattr(assembly, "build_criterion", watched)
    try:  # 12 frames in batches of 2: one epoch (its end reads the loss and saves)
        assert train(learn_root, tmp_path, "gpu", "--iters", str(STEPS_PER_EPOCH), "--log-every", "100",
                     "--batch-size", "2", *extra, workers=None) == 0
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(losses) == STEPS_PER_EPOCH


def test_resume_on_the_gpu(learn_root, tmp_path, monkeypatch):
    undo = interrupt_training_at_epoch(monkeypatch, 2)
    assert train(learn_root, tmp_path, "gpu", "--iters", "6", "--amp") == 130
    undo()
    last = tmp_path / "gpu" / "last.pth"
    assert load_checkpoint(last)["iteration"] == 3
    args = train_dlv3p.get_args_parser().parse_args(["--data-root", str(learn_root), "--workers", "2", "--device",
                                                     "cuda", "--resume", str(last)])
    assert train_dlv3p.main(args) == 0
    assert load_checkpoint(last)["iteration"] == 6


@pytest.mark.gpu_hardware
def test_torchrun_nccl_with_sync_batch_norm(learn_root, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        str(REPO / "train_dlv3p.py"),
        "--data-root",
        str(learn_root),
        "--output-stride",
        "16",
        "--pretrained-backbone",
        "none",
        "--batch-size",
        "4",
        "--crop-size",
        "64",
        "128",
        "--workers",
        "2",
        "--device",
        "cuda",
        "--iters",
        "4",
        "--save-dir",
        str(tmp_path),
        "--run-name",
        "nccl",
        "--val-every",
        "1",
        "--sync-bn",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(tmp_path / "nccl" / "last.pth")["iteration"] == 4


@pytest.fixture(scope="module")
def gpu_run(learn_root, tmp_path_factory, request):
    from conftest import fake_cuda_if_asked

    save_dir = tmp_path_factory.mktemp("gpu_saved")
    with fake_cuda_if_asked(request.config):
        assert train(learn_root, save_dir, "gpu", "--iters", str(ITERATIONS), "--amp") == 0
    return save_dir / "gpu"


def test_evaluation_and_submission_on_the_gpu(gpu_run, learn_root, tmp_path):
    common = ["--model_weights_path", str(gpu_run / "best.pth"), "--data-root", str(learn_root), "--out",
              str(tmp_path), "--workers", "2", "--device", "cuda"]
    val = test_dlv3p.get_args_parser().parse_args([*common, "--split", "val", "--official-eval", "--flip", "--scales",
                                                   "0.75", "1.0", "--amp"])
    assert test_dlv3p.main(val) == 0
    metrics = json.loads((tmp_path / "gpu" / "val" / "metrics.json").read_text())
    assert metrics["images"] == 12 and len(metrics["category_iou"]) == 7
    assert metrics["mean_iou"] == pytest.approx(metrics["official_mean_iou"], abs=1e-6)
    test = test_dlv3p.get_args_parser().parse_args([*common, "--split", "test", "--batch-size", "4"])
    assert test_dlv3p.main(test) == 0
    with zipfile.ZipFile(tmp_path / "gpu" / "test" / "gpu_test_labelIds.zip") as archive:
        assert len(archive.namelist()) == 12


def test_save_predictions_on_the_gpu(gpu_run, learn_root, tmp_path):
    from deeplabv3plus.figures import GifOptions, save_prediction_gif

    gif = save_prediction_gif(gpu_run / "best.pth", learn_root, tmp_path / "gpu.gif",
                              GifOptions(num_frames=3, device="cuda"))
    assert gif.stat().st_size > 1000


@pytest.mark.gpu_hardware
def test_benchmarks_at_a_small_size(learn_root, tmp_path):
    for script, extra in (("inference.py", ["--backbones", "resnet50", "--height", "256", "--width", "512",
                                            "--warmup", "1", "--runs", "2"]),
                          ("train_throughput.py", ["--backbones", "resnet50", "--crop", "128", "128", "--warmup", "2",
                                                   "--steps", "3", "--modes", "model", "loader", "--data-root",
                                                   str(learn_root), "--workers", "2"])):
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--device", "cuda", *extra,
                               "--csv", str(tmp_path / f"{script}.csv"), "--plot", str(tmp_path / f"{script}.png")],
                              cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ})
        assert done.returncode == 0, done.stderr[-3000:]
        assert (tmp_path / f"{script}.csv").read_text().count("\n") >= 3
