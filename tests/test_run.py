"""A run's settings on plain dicts: the recipe, a resumed run's own settings, what may change on resume."""

from pathlib import Path

import pytest

from deeplabv3plus.cli import FlagError
from deeplabv3plus.config import (
    DEFAULT_ITERATIONS,
    DEVICE_DEFAULTS,
    HYPERPARAMETERS,
    default_run_name,
    resolve_settings,
    resume_record,
    run_location,
)


def checkpoint(epoch=2, iteration=20, **args):
    return {"model_config": {"backbone": "resnet101", "output_stride": 16, "aux_head": True},
            "epoch": epoch, "iteration": iteration,
            "args": {**HYPERPARAMETERS, "backbone": "resnet101", "output_stride": 16, "lr": 0.02, "iters": 40,
                     "epochs": None, "data_root": "/data/cityscapes", "val_every": 1, "pretrained_backbone": "none",
                     "init_weights": None, **args}}


def test_a_new_run_takes_the_recipe_and_what_is_given():
    settings, notes = resolve_settings({"lr": 0.05, "crop_size": [512]})
    assert settings["lr"] == 0.05 and settings["crop_size"] == [512, 512] and settings["output_stride"] == 8
    assert settings["iters"] == DEFAULT_ITERATIONS and settings["epochs"] is None
    assert settings["val_every"] == 10 and settings["pretrained_backbone"] == "imagenet" and notes == []


def test_a_resumed_run_keeps_everything_it_used():
    settings, notes = resolve_settings({}, checkpoint(), "last.pth")
    assert (settings["backbone"], settings["output_stride"], settings["lr"], settings["iters"]) == ("resnet101", 16,
                                                                                                    0.02, 40)
    assert (settings["data_root"], settings["val_every"], settings["pretrained_backbone"]) == ("/data/cityscapes", 1,
                                                                                              "none")
    assert notes == []


def test_a_new_run_on_a_bfloat16_gpu_is_fast_by_default_and_a_resumed_run_keeps_how_it_started():
    gpu, _ = resolve_settings({}, device_defaults=DEVICE_DEFAULTS)
    assert gpu["amp"] is True and gpu["amp_dtype"] is None and gpu["channels_last"] is True  # bfloat16: see precision
    told, _ = resolve_settings({"amp": False, "channels_last": False}, device_defaults=DEVICE_DEFAULTS)
    assert told["amp"] is False and told["channels_last"] is False
    assert resolve_settings({"amp_dtype": "float16"})[0]["amp"] is True  # --amp-dtype alone implies --amp
    cpu, _ = resolve_settings({})
    assert cpu["amp"] is False and cpu["channels_last"] is False
    # a run started in float32 on the CPU, resumed on the GPU: float32 and its memory format, as it started
    resumed, notes = resolve_settings({}, checkpoint(amp=False, amp_dtype=None, channels_last=False), "last.pth",
                                          DEVICE_DEFAULTS)
    assert resumed["amp"] is False and resumed["channels_last"] is False and notes == []
    started_fast = checkpoint(amp=True, amp_dtype="bfloat16", channels_last=True)
    assert resolve_settings({}, started_fast, "last.pth")[0]["amp_dtype"] == "bfloat16"
    with pytest.raises(FlagError, match="argument --amp: False differs from True"):
        resolve_settings({"amp": False}, started_fast, "last.pth")
    _, notes = resolve_settings({"channels_last": False}, started_fast, "last.pth")
    assert notes == ["--channels-last: True -> False"]  # a memory format may change, and the change is recorded


@pytest.mark.parametrize("flag, value", [("lr", 0.5), ("output_stride", 8), ("batch_size", 4), ("seed", 3)])
def test_a_flag_that_contradicts_the_resumed_run_is_refused(flag, value):
    with pytest.raises(FlagError, match=f"argument --{flag.replace('_', '-')}: {value} differs from .* last.pth"):
        resolve_settings({flag: value}, checkpoint(), "last.pth")


def test_a_moved_data_set_and_a_new_validation_period_are_taken_and_said(tmp_path):
    settings, notes = resolve_settings({"data_root": tmp_path, "val_every": 2}, checkpoint(), "last.pth")
    assert settings["data_root"] == str(tmp_path.resolve()) and settings["val_every"] == 2
    assert notes == [f"--data-root: /data/cityscapes -> {tmp_path.resolve()}", "--val-every: 1 -> 2"]


def test_a_run_can_be_made_longer_not_shorter_than_where_it_is():
    settings, notes = resolve_settings({"iters": 80}, checkpoint(), "last.pth")
    assert settings["iters"] == 80 and notes[0].startswith("--iters: 40 -> 80 (the poly LR")
    with pytest.raises(FlagError, match="argument --iters: .* is at 20 iters already"):
        resolve_settings({"iters": 20}, checkpoint(), "last.pth")
    with pytest.raises(FlagError, match="argument --epochs: .* counts its length in iters"):
        resolve_settings({"epochs": 9}, checkpoint(), "last.pth")
    by_epochs = checkpoint(iters=None, epochs=4)
    assert resolve_settings({"epochs": 6}, by_epochs, "last.pth")[0]["epochs"] == 6
    with pytest.raises(FlagError, match="is at 2 epochs already"):
        resolve_settings({"epochs": 2}, by_epochs, "last.pth")


def test_checkpoints_older_than_the_aux_head_and_arch_presets():
    old = checkpoint()
    del old["args"]["aux_loss_weight"], old["args"]["arch"]
    old["model_config"].update(aux_head=False, stem="deep")
    settings, _ = resolve_settings({}, old, "last.pth")
    assert settings["aux_loss_weight"] == 0.0 and settings["arch"] == "mmseg"


def test_a_resume_record_says_when_from_where_and_what():
    record = resume_record({"iters": 80}, 20, ["--iters: 40 -> 80"])
    assert (
        record["from_iteration"] == 20
        and record["given"] == {"iters": 80}
        and record["changed"] == ["--iters: 40 -> 80"]
    )
    assert record["time"][:2] == "20" and "T" in record["time"]


def test_run_location_of_a_new_and_of_a_resumed_run(tmp_path):
    assert run_location(None, None, None, default_run_name("resnet101", 8)) == (Path("saved"), "dlv3p_resnet101_os8")
    assert default_run_name("resnet101", 8, "mmseg-r101-d8-512x1024-80k") == "mmseg-r101-d8-512x1024-80k"
    last = tmp_path / "runs" / "mine" / "last.pth"
    assert run_location(None, None, last, default_run_name("resnet50", 16)) == (tmp_path / "runs", "mine")  # its own
    assert run_location(tmp_path, "other", last, default_run_name("resnet50", 16)) == (tmp_path, "other")
