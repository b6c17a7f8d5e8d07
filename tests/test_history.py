import math

import pytest

from deeplabv3plus.figures import find_runs, training_summary
from deeplabv3plus.history import HISTORY_COLUMNS, read_history, read_per_class_iou, write_history


def row(epoch, miou, iou):
    return {"epoch": epoch, "iteration": 10 * epoch, "lr": 0.01, "train_loss": 1.0 / epoch, "val_loss": 0.5,
            "miou": miou, "mean_dice": 0.6, "pixel_accuracy": 0.9, "mean_class_accuracy": 0.7, "seconds": 3.5,
            "iou": iou}


def test_round_trip(tmp_path):
    write_history(tmp_path, [row(1, 0.4, [0.5, math.nan]), row(2, 0.6, [0.7, 0.1])], ["road", "train"])
    history = read_history(tmp_path)
    assert [list(r) for r in history] == [HISTORY_COLUMNS] * 2
    assert history[1]["iteration"] == 20 and history[1]["miou"] == 0.6 and isinstance(history[0]["epoch"], int)
    assert read_per_class_iou(tmp_path)[0] == {"epoch": 1, "iteration": 10, "iou": {"road": 0.5, "train": None}}
    assert training_summary({"run": history})[0]["best_miou"] == 0.6


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="history.csv: no training history; train with train_dlv3p.py"):
        read_history(tmp_path)
    with pytest.raises(FileNotFoundError, match="no run with a history.csv"):
        find_runs(tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "history.csv").write_text("")
    (tmp_path / "a" / "history.csv").write_text("")
    assert [p.name for p in find_runs(tmp_path)] == ["a", "b"]  # sorted
