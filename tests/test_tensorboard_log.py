"""TensorBoard logs of a training run: the tags and steps read back from the event files; --val-interval."""

import json

import helpers
import numpy as np
import pytest
from helpers import interrupt_training_at_epoch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_dlv3p
from cityscapes.labels import CLASS_NAMES
from deeplabv3plus.figures import plot_confusion_matrix
from deeplabv3plus.history import read_history, read_per_class_iou


def train_args(root, save_dir, *extra):
    return helpers.train_args(root, save_dir, *extra, val_every=None, log_every=1, preview_frames=2)


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag):
    return [event.step for event in accumulator.Scalars(tag)]


def test_a_run_writes_scalars_class_iou_and_preview_images(tiny_root, tmp_path, caplog):
    caplog.set_level("INFO")
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "2", "--val-every", "1")) == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    assert f"TensorBoard logs in {run / 'tb'}; view them with: tensorboard --logdir {tmp_path}" in caplog.text
    logged = events(run)
    tags = logged.Tags()
    for tag in ("train/loss", "train/loss_main", "train/loss_aux", "train/lr", "train/data_time",
                "train/compute_time", "train/peak_memory_mib"):
        assert steps(logged, tag) == [1, 2], tag  # every --log-every (1) iterations
    for tag in ("val/loss", "val/miou", "val/mean_dice", "val/pixel_accuracy"):
        assert steps(logged, tag) == [1, 2], tag  # at each validation
    history = read_history(run)
    assert logged.Scalars("val/miou")[-1].value == pytest.approx(history[-1]["miou"])
    class_tags = [tag for tag in tags["scalars"] if tag.startswith("val_class_iou/")]
    assert "val_class_iou/road" in class_tags and set(class_tags) <= {f"val_class_iou/{n}" for n in CLASS_NAMES}
    total, main, aux = (logged.Scalars(tag)[-1].value for tag in ("train/loss", "train/loss_main", "train/loss_aux"))
    assert total == pytest.approx(main + 0.4 * aux, rel=1e-5)  # the recipe's auxiliary weight
    images = [tag for tag in tags["images"] if tag.startswith("val_images/")]
    assert len(images) == 2 and [event.step for event in logged.Images(images[0])] == [1, 2]
    picture = logged.Images(images[0])[0]
    assert picture.width == 3 * 128 and picture.height > 64  # image | prediction | ground truth, with titles


def test_a_resumed_run_appends_without_repeating_steps(tiny_root, tmp_path, monkeypatch):
    undo = interrupt_training_at_epoch(monkeypatch, 3)
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "3", "--val-every", "1")) == 130
    undo()
    last = tmp_path / "dlv3p_resnet50_os16" / "last.pth"
    assert train_dlv3p.main(train_dlv3p.get_args_parser().parse_args(
        ["--device", "cpu", "--workers", "0", "--resume", str(last), "--log-every", "1"])) == 0
    logged = events(last.parent)
    assert steps(logged, "train/loss") == [1, 2, 3] and steps(logged, "val/miou") == [1, 2, 3]


def test_no_tensorboard_writes_nothing(tiny_root, tmp_path):
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--no-tensorboard")) == 0
    assert not (tmp_path / "dlv3p_resnet50_os16" / "tb").exists()


def test_val_interval_validates_in_iterations(learn_root, tmp_path):
    """12 frames in batches of 4: 3 iterations per epoch; every 4 iterations -> the ends of epoch 2 (6 passes 4) and
    epoch 3 (9 passes 8, and the last); not epoch 1 (3)."""
    assert train_dlv3p.main(train_args(learn_root, tmp_path, "--iters", "9", "--val-interval", "4", "--batch-size",
                                       "4", "--no-tensorboard", "--log-every", "20")) == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    assert [row["iteration"] for row in read_history(run)] == [6, 9]
    assert json.loads((run / "args.json").read_text())["val_interval"] == 4
    entry = read_per_class_iou(run)[-1]
    matrix = np.array(entry["confusion_matrix"])
    assert matrix.shape == (19, 19) and matrix.sum() > 0


def test_the_confusion_matrix_figure_normalises_rows_and_marks_the_largest_confusions():
    matrix = np.zeros((19, 19), int)
    matrix[0, 0], matrix[0, 1] = 90, 10  # road: 10% taken for sidewalk
    matrix[13, 13], matrix[13, 14] = 50, 50  # car: half taken for truck
    figure = plot_confusion_matrix(matrix.tolist(), CLASS_NAMES, top=2)
    axis = figure.axes[0]
    assert axis.images[0].get_array()[0, 1] == pytest.approx(0.1) and axis.images[0].get_array()[13, 14] == 0.5
    red = sorted(text.get_text() for text in axis.texts if text.get_color() == "red")
    assert red == ["10", "50"]
    assert [label.get_text() for label in axis.get_yticklabels()] == list(CLASS_NAMES)


def test_a_tensorboard_that_fails_to_import_is_said_in_one_line(tiny_root, tmp_path, monkeypatch, capsys, caplog):
    """Installed but broken (a mismatched protobuf, say): asked for, one line and exit 2 before any work; not asked
    for, a notice and the run goes on without logs."""
    import importlib

    from deeplabv3plus import tensorboard_log

    real = importlib.import_module

    def broken(name, *args):
        if name == "torch.utils.tensorboard":
            raise ImportError("cannot import name 'builder' from 'google.protobuf.internal'")
        return real(name, *args)

    monkeypatch.setattr(tensorboard_log.importlib, "import_module", broken)
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--tensorboard")) == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: argument --tensorboard: the tensorboard package is installed but fails to import "
                           "(ImportError: cannot import name 'builder'")
    assert not (tmp_path / "dlv3p_resnet50_os16").exists()
    with caplog.at_level("INFO"):
        assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1")) == 0
    assert "TensorBoard logging is off: the tensorboard package is installed but fails to import" in caplog.text
    assert not (tmp_path / "dlv3p_resnet50_os16" / "tb").exists()


def test_a_tb_path_that_is_a_file_ends_in_one_line_and_leaves_no_run(tiny_root, tmp_path, capsys):
    run = tmp_path / "dlv3p_resnet50_os16"
    run.mkdir()
    (run / "tb").write_text("not a folder")
    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--tensorboard")) == 2  # bad input
    line, = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert f"{run / 'tb'}" in line and "Traceback" not in line
    assert sorted(path.name for path in run.iterdir()) == ["tb"]  # no args.json of a run that never started


def test_a_tb_that_is_a_file_refuses_the_start_in_one_line(tiny_root, tmp_path, capsys):
    from test_bad_inputs import assert_one_line

    assert train_dlv3p.main(train_args(tiny_root, tmp_path, "--iters", "1", "--run-name", "other")) == 0
    capsys.readouterr()
    (tmp_path / "other" / "tb").rename(tmp_path / "other" / "tb.moved")
    (tmp_path / "other" / "tb").write_text("a file in its place")
    code = train_dlv3p.main(train_dlv3p.get_args_parser().parse_args([
        "--resume", str(tmp_path / "other" / "last.pth"), "--iters", "2", "--device", "cpu", "--workers", "0"]))
    assert code == 2
    assert_one_line(capsys.readouterr().err, f"{tmp_path / 'other' / 'tb'}: TensorBoard logs cannot be written "
                    "there (a file is in its place); move it away or fix its permissions, or train with "
                    "--no-tensorboard")
    assert (tmp_path / "other" / "tb").read_text() == "a file in its place"


def test_a_tb_folder_that_breaks_during_a_run_stops_the_logging_not_the_training(tmp_path, capsys, caplog):
    import shutil
    import threading

    from deeplabv3plus.tensorboard_log import TrainingLog

    hook = threading.excepthook
    log = TrainingLog(tmp_path / "tb")
    log.training(1, {"loss": 1.0})
    log.flush()
    shutil.rmtree(tmp_path / "tb")
    (tmp_path / "tb").write_text("replaced by a file")  # the writer thread's next write fails
    for iteration in range(2, 5):
        log.training(iteration, {"loss": 1.0})
        log.flush()
    log.close()
    warnings = [record.message for record in caplog.records if "TensorBoard logging stopped" in record.message]
    assert len(warnings) == 1 and f"cannot write {tmp_path / 'tb'}" in warnings[0]
    assert "b'" not in warnings[0] and "history.csv keeps its scores" in warnings[0]
    assert "Traceback" not in capsys.readouterr().err  # the writer thread's failure is not printed
    assert threading.excepthook is hook
