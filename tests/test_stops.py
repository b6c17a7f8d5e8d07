"""Every stop leaves a run that can go on or start again: one run per folder (a lock), nothing left by a run that
never wrote a checkpoint, one line however often Ctrl-C is pressed, no truncated video under its final name."""

import multiprocessing
import os
import signal
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import interrupt_training_at_epoch
from test_bad_inputs import assert_one_line, outcome, train_argv

import train_dlv3p
from deeplabv3plus import media
from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.run_folder import RunFolder
from segdata import files
from segdata.flags import FlagError
from segdata.loading import loader_options


def test_a_second_training_on_a_run_name_in_use_stops_in_one_line_naming_the_first(tiny_copy, tmp_path, capsys):
    first = RunFolder.claim(tmp_path, "dlv3p_resnet50_os16", None, False)  # another training holds the folder
    try:
        code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
        assert code == 2
        assert_one_line(err, "dlv3p_resnet50_os16: another training is using this run folder right now "
                        f"(pid {os.getpid()}, started ", "start this one with --run-name NAME")
        assert sorted(path.name for path in first.path.iterdir()) == [".lock"]  # nothing of the second one
    finally:
        first.release()
    assert not first.path.exists()  # the lock's folder, made for it and empty, is gone with it
    second = RunFolder.claim(tmp_path, "dlv3p_resnet50_os16", None, False)  # free again
    second.release()


def _claim_and_die(save_dir: Path) -> None:
    RunFolder.claim(save_dir, "run", None, False)
    os._exit(0)  # killed: no release, the lock file stays


def test_a_dead_training_does_not_block_its_run_folder(tmp_path):
    child = multiprocessing.get_context("fork").Process(target=_claim_and_die, args=(tmp_path,))
    child.start()
    child.join()
    assert (tmp_path / "run" / ".lock").read_text().startswith(f"pid {child.pid}")
    folder = RunFolder.claim(tmp_path, "run", None, False)  # the system dropped the dead process's lock
    folder.release()


def test_the_lock_refuses_a_second_claim_in_one_line(tmp_path):
    first = RunFolder.claim(tmp_path, "run", None, False)
    with pytest.raises(FlagError, match=r"run: another training is using this run folder right now \(pid \d+"):
        RunFolder.claim(tmp_path, "run", None, False)
    first.release()


def test_a_run_stopped_before_its_first_checkpoint_is_started_again_by_the_same_command(tiny_copy, tmp_path, capsys,
                                                                                     monkeypatch):
    run = tmp_path / "dlv3p_resnet50_os16"
    undo = interrupt_training_at_epoch(monkeypatch, 1)
    assert outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)[0] == 130
    undo()
    assert not run.exists()  # nothing of the stopped start: no args.json, no folder
    # leftovers of a start killed harder (kill -9 after args.json, inside the first save): not a run to protect
    run.mkdir()
    (run / "args.json").write_text("{}")
    (run / "tb").mkdir()
    (run / ".last.pth.k1ll3d.tmp").write_bytes(b"a whole checkpoint never renamed")
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
    assert code == 0, err
    assert (run / "last.pth").exists() and not list(run.glob(".*.tmp"))


def test_ctrl_c_pressed_again_while_the_run_stops_still_ends_in_one_line(tiny_copy, tmp_path, capsys, monkeypatch):
    undo = interrupt_training_at_epoch(monkeypatch, 1)
    real = RunFolder.discard_unstarted

    def impatient(self):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the first one's stop is cleaning up
        real(self)

    monkeypatch.setattr(RunFolder, "discard_unstarted", impatient)
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
    undo()
    assert code == 130 and "Traceback" not in err and err.strip().splitlines() == ["interrupted: no checkpoint was "
                                                                                   "written yet: run the same command "
                                                                                   "again"]


def test_a_loader_worker_that_dies_ends_in_one_line(tiny_copy, tmp_path, capsys, monkeypatch):
    from deeplabv3plus import engine

    def worker_killed(*args, **kwargs):
        raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")

    monkeypatch.setattr(engine, "train_one_epoch", worker_killed)
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
    assert code == 1
    assert_one_line(err, "a data loading worker died (DataLoader worker (pid(s) 4242) exited unexpectedly); the "
                    "machine may be short of memory: lower --workers")


class SignalHandling(torch.utils.data.Dataset):
    """One sample: whether the process that made it ignores SIGINT."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return int(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


def test_loader_workers_leave_ctrl_c_to_the_main_process():
    """A terminal's Ctrl-C reaches every process of the command: workers ignore it, the main process stops them."""
    from torch.utils.data import DataLoader

    assert [int(value) for value in DataLoader(SignalHandling(), batch_size=None, **loader_options(1, "cpu"))] == [1]


REAL_VIDEO_WRITER = cv2.VideoWriter


class FullDiskVideoWriter:
    """cv2.VideoWriter on a disk that fills after two frames: it says nothing, as OpenCV's does."""

    def __init__(self, *args):
        self.inner, self.frames = REAL_VIDEO_WRITER(*args), 0

    def isOpened(self):
        return self.inner.isOpened()

    def write(self, frame):
        self.frames += 1
        if self.frames <= 2:
            self.inner.write(frame)

    def release(self):
        self.inner.release()


def frames_folder(tmp_path, count=5):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(count):
        files.write_png(folder / f"{index}.png", np.full((32, 48, 3), 40 * index, np.uint8))
    return folder


def test_a_video_cut_short_by_a_full_disk_is_not_put_in_place(tmp_path, capsys, monkeypatch):
    folder = frames_folder(tmp_path)
    monkeypatch.setattr(media.cv2, "VideoWriter", FullDiskVideoWriter)
    assert media.main([str(folder), str(tmp_path / "clip.mp4")]) == 1
    err = capsys.readouterr().err
    assert_one_line(err, f"cannot write {tmp_path / 'clip.mp4'}: the video came out incomplete (2 of 5 frames could "
                    "be read back")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames"]  # no video, no temporary file


def test_the_video_maker_refuses_to_replace_or_to_write_over_a_folder(tmp_path, capsys):
    folder = frames_folder(tmp_path)
    assert media.main([str(folder), str(tmp_path / "clip.mp4")]) == 0
    assert "wrote" in capsys.readouterr().out
    before = (tmp_path / "clip.mp4").read_bytes()
    assert media.main([str(folder), str(tmp_path / "clip.mp4"), "--frames", "2"]) == 2
    assert_one_line(capsys.readouterr().err, f"argument out: {tmp_path / 'clip.mp4'} exists and is left as it is",
                    "--overwrite")
    assert (tmp_path / "clip.mp4").read_bytes() == before
    assert media.main([str(folder), str(tmp_path / "clip.mp4"), "--frames", "2", "--overwrite"]) == 0
    assert "(replaced)" in capsys.readouterr().out
    assert media.main([str(folder), str(folder)]) == 2
    assert_one_line(capsys.readouterr().err, f"argument out: {folder} is a folder; name a file")


def test_written_files_get_the_mode_open_would_give_under_the_umask(tmp_path):
    """mkstemp makes 0600 files; every output gets what a plain open() would (checkpoints, JSON, PNGs, figures,
    videos)."""
    from matplotlib.figure import Figure

    from deeplabv3plus.checkpoint import save_checkpoint
    from segdata.pictures import save_figure

    def modes():
        files.new_file_mode.cache_clear()
        files.write_json(tmp_path / "m.json", {})
        files.write_png(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
        save_figure(Figure(), tmp_path / "f.png")
        save_checkpoint(tmp_path / "c.pth", Tiny())
        writer = media.VideoWriter(tmp_path / "v.mp4", 4, (16, 16))
        writer.write(np.zeros((16, 16, 3), np.uint8))
        writer.close()
        return {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("m.json", "m.png", "f.png",
                                                                                   "c.pth", "v.mp4")}

    previous = os.umask(0o022)
    try:
        assert set(modes().values()) == {0o644}
        os.umask(0o027)
        assert set(modes().values()) == {0o640}
    finally:
        os.umask(previous)
        files.new_file_mode.cache_clear()


class Tiny(torch.nn.Module):
    config = {"backbone": "tiny"}

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)


def test_a_finished_runs_record_is_kept_when_its_checkpoints_were_moved_away(tiny_copy, tmp_path, capsys):
    from test_bad_inputs import snapshot

    assert outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)[0] == 0
    run = tmp_path / "dlv3p_resnet50_os16"
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("best.pth", "last.pth"):
        (run / name).rename(shipped / name)  # shipped, or moved to free the disk: the record stays
    before = snapshot(run)
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
    assert code == 2
    assert_one_line(err, f"{run}: holds files of a run without its checkpoints (args.json, history.csv, "
                    "per_class_iou.json", "--run-name NAME", "--overwrite")
    assert snapshot(run) == before and before  # byte for byte, every file of the record


def test_a_start_may_replace_only_what_a_start_leaves(tmp_path):
    run = tmp_path / "run"
    (run / "tb").mkdir(parents=True)
    (run / "tb" / "events.out.tfevents.1.host.1.0").write_bytes(b"events of a start")
    (run / "args.json").write_text('{"lr": 0.01, "resumes": []}')
    (run / ".last.pth.x1.tmp").write_bytes(b"a write cut short")
    RunFolder.claim(tmp_path, "run", None, False).release()  # the leftovers of a start: started again
    for name, content in (("notes.txt", "mine"), ("run.onnx", "an export")):
        (run / name).write_text(content)
        with pytest.raises(FlagError, match=f"without its checkpoints \\(args.json, {name}, tb/\\)"):
            RunFolder.claim(tmp_path, "run", None, False)
        (run / name).unlink()
    (run / "args.json").write_text('{"lr": 0.01, "resumes": [{"from_iteration": 2}]}')  # a resumed run's record
    with pytest.raises(FlagError, match=r"\(args.json, tb/\)"):
        RunFolder.claim(tmp_path, "run", None, False)
    RunFolder.claim(tmp_path, "run", None, True).release()  # --overwrite


def test_a_lock_that_is_a_folder_or_a_run_folder_that_cannot_be_written_is_one_line(tiny_copy, tmp_path, capsys,
                                                                                    monkeypatch):
    (tmp_path / "dlv3p_resnet50_os16" / ".lock").mkdir(parents=True)
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
    assert code == 2
    assert_one_line(err, f"{tmp_path / 'dlv3p_resnet50_os16' / '.lock'}: is a folder where this project keeps its "
                    "lock file; remove it")
    (tmp_path / "dlv3p_resnet50_os16" / ".lock").rmdir()
    real_open = os.open

    def read_only(path, flags, *mode):
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Read-only file system", str(path))
        return real_open(path, flags, *mode)

    monkeypatch.setattr(files.os, "open", read_only)  # root passes every permission check: a read-only disk, faked
    code, err = outcome(train_dlv3p, train_argv(tiny_copy, tmp_path), capsys)
    assert code == 2
    assert_one_line(err, f"{tmp_path / 'dlv3p_resnet50_os16'}: cannot be written (Read-only file system); a training "
                    "writes its checkpoints there: choose a writable --save-dir")


def test_a_resumed_run_goes_on_in_another_folder_when_its_own_cannot_be_written(tiny_copy, tmp_path, capsys,
                                                                                 monkeypatch):
    assert outcome(train_dlv3p, train_argv(tiny_copy, tmp_path / "ro"), capsys)[0] == 0
    last = tmp_path / "ro" / "dlv3p_resnet50_os16" / "last.pth"
    real_open = os.open

    def read_only(path, flags, *mode):
        if str(path).startswith(str(tmp_path / "ro")) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(30, "Read-only file system", str(path))
        return real_open(path, flags, *mode)

    monkeypatch.setattr(files.os, "open", read_only)
    code, err = outcome(train_dlv3p, ["--resume", last, "--iters", "2", "--device", "cpu", "--workers", "0"], capsys)
    assert code == 2
    assert_one_line(err, "(Read-only file system)", f"continue the run in a writable folder with --resume {last} "
                    "--save-dir DIR")
    code, err = outcome(train_dlv3p, ["--resume", last, "--iters", "2", "--device", "cpu", "--workers", "0",
                                      "--save-dir", tmp_path / "rw"], capsys)
    assert code == 0, err
    moved = load_checkpoint(tmp_path / "rw" / "dlv3p_resnet50_os16" / "last.pth")
    assert moved["iteration"] == 2 and [row["iteration"] for row in moved["history"]] == [1, 2]


def _claim_fork_a_worker_and_get_killed(save_dir: Path, worker_started) -> None:
    RunFolder.claim(save_dir, "run", None, False)
    worker = os.fork()
    if worker == 0:  # a loader worker: forked while the lock is held, alive after its parent dies
        signal.pause()
        os._exit(0)
    (save_dir / "worker.pid").write_text(str(worker))
    worker_started.set()
    os.kill(os.getpid(), signal.SIGKILL)  # the out-of-memory killer


def test_a_killed_trainings_loader_workers_do_not_hold_its_run_folder(tmp_path):
    context = multiprocessing.get_context("fork")
    started = context.Event()
    child = context.Process(target=_claim_fork_a_worker_and_get_killed, args=(tmp_path, started))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL and started.is_set()
    worker = int((tmp_path / "worker.pid").read_text())
    try:
        os.kill(worker, 0)  # the orphaned worker is still alive
        folder = RunFolder.claim(tmp_path, "run", None, False)  # and the run folder is free at once
        folder.release()
    finally:
        os.kill(worker, signal.SIGKILL)
