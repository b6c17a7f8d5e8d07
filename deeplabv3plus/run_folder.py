"""A training run's folder, ``saved/{run}/``: its file names, claiming it, its args.json record, and what a run
that stops leaves behind. A run is the parent folder of its checkpoints; its name names its outputs.

A folder holds a run when it holds a checkpoint (last.pth or best.pth); what a
run that stopped before its first checkpoint left (args.json, logs) is replaced
by the next start. While a training uses the folder it holds an exclusive lock
on ``{run}/.lock`` (``fcntl.flock``: the system drops it when the process ends,
however it ends), so a second training on the same run name stops at once.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
from pathlib import Path

from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.cli import output_folder
from deeplabv3plus.run import KEPT_DEFAULTS, LENGTH_KEYS
from deeplabv3plus.tensorboard_log import TB_DIR
from segdata.files import missing_folders, remove_empty_folders, remove_stale_temporaries, write_json
from segdata.flags import FlagError, report_error

__all__ = ["CHECKPOINTS", "LAST", "RUN_FILES", "RunFolder", "default_run_name", "run_location", "run_name_of"]

LAST, BEST, ARGS, LOCK = "last.pth", "best.pth", "args.json", ".lock"
CHECKPOINTS = (LAST, BEST)
"""The files that make a folder hold a run."""
RUN_FILES = (*CHECKPOINTS, "history.csv", "per_class_iou.json", ARGS)
"""Every file of a run (what --overwrite replaces)."""


def default_run_name(backbone: str, output_stride: int) -> str:
    """``dlv3p_{backbone}_os{stride}``: the run name unless the user gives one."""
    return f"dlv3p_{backbone}_os{output_stride}"


def run_name_of(checkpoint: Path) -> str:
    """The run a checkpoint belongs to: its folder's name (outputs of the checkpoint are named after it)."""
    return Path(checkpoint).resolve().parent.name


def run_location(save_dir: Path | None, run_name: str | None, resume: Path | None, backbone: str,
                 output_stride: int) -> tuple[Path, str]:
    """(folder of runs, run name): as given, else a resumed run's own (it continues in its folder), else
    ``saved`` and :func:`default_run_name`."""
    if save_dir is None:
        save_dir = Path(resume).parent.parent if resume else Path("saved")
    if run_name is None:
        run_name = run_name_of(resume) if resume else default_run_name(backbone, output_stride)
    return Path(save_dir), run_name


class RunFolder:
    """``{save_dir}/{run_name}``, claimed before any work (see :meth:`claim`) and released when the run ends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.made: list[Path] = []
        self._lock: int | None = None

    @property
    def last(self) -> Path:
        return self.path / LAST

    def holds_a_run(self) -> bool:
        """Whether the folder holds a run: a checkpoint (a run that never wrote one is no run to keep)."""
        return any((self.path / name).exists() for name in CHECKPOINTS)

    @classmethod
    def claim(cls, save_dir: Path, run_name: str, resume: Path | None, overwrite: bool,
              lock: bool = True) -> RunFolder:
        """The run folder, checked and (with ``lock``, on the main process) locked before any work: a folder in use
        by another training is refused naming it; a folder that holds another run is continued with --resume,
        replaced only with --overwrite, and otherwise refused (FlagError naming the three ways on)."""
        path = output_folder(save_dir, "--save-dir") / run_name
        folder = cls(path)
        if lock:
            folder._take_lock()
        try:
            held = [name for name in RUN_FILES if (path / name).exists()]
            resuming_here = resume is not None and Path(resume).resolve().parent == path.resolve()
            if folder.holds_a_run() and not resuming_here and not overwrite:
                raise FlagError(f"{path}: already holds a run ({', '.join(held)}); continue it with --resume "
                                f"{path / LAST}, start another with --run-name NAME, or replace it with --overwrite")
        except BaseException:
            folder.release()
            raise
        return folder

    def _take_lock(self) -> None:
        """Make the folder (remembering what was made) and lock it, or FlagError naming the training that holds it."""
        self.made = missing_folders(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 200).decode(errors="replace").strip() or "another process"
            os.close(handle)
            raise FlagError(f"{self.path}: another training is using this run folder right now ({holder}); wait for "
                            "it to end, or start this one with --run-name NAME") from None
        os.ftruncate(handle, 0)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.write(handle, f"pid {os.getpid()}, started {started}".encode())
        self._lock = handle

    def release(self) -> None:
        """Drop the lock, and the folders :meth:`claim` made if nothing was written in them."""
        if self._lock is not None:
            (self.path / LOCK).unlink(missing_ok=True)
            os.close(self._lock)  # closing the file drops the lock
            self._lock = None
        remove_empty_folders(self.made)

    def prepare(self, replace: bool) -> None:
        """Make the folder, drop the temporaries of a run killed while writing, and the files of the run it replaces
        (``replace``: --overwrite) or of a start that never wrote a checkpoint."""
        self.made = self.made or missing_folders(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        if replace or not self.holds_a_run():
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.path / TB_DIR, ignore_errors=True)

    def record(self, settings: dict, resume: dict | None) -> None:
        """Write args.json: the settings the run uses. A resume keeps the first start's record, updated with the
        kept and length settings (and the validation protocol), and appends ``resume`` to its ``resumes``."""
        path = self.path / ARGS
        if resume is None or not path.exists():
            write_json(path, {**settings, "resumes": [] if resume is None else [resume]})
            return
        previous = json.loads(path.read_text())
        updated = {key: settings[key] for key in (*KEPT_DEFAULTS, *LENGTH_KEYS, "val_protocol") if key in settings}
        write_json(path, {**previous, **updated, "resumes": [*previous.get("resumes", []), resume]})

    def discard_unstarted(self) -> None:
        """A new run that stopped before its first checkpoint leaves nothing: its args.json, history, TensorBoard
        logs, temporaries and the folders it made."""
        if self.holds_a_run():
            return
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / TB_DIR, ignore_errors=True)
        remove_stale_temporaries(self.path)

    def report_stop(self, error: BaseException) -> int:
        """The one line of a run that stopped, and its exit status (see ``report_error``): 130 Ctrl-C, 1 a failure
        while running (a non-finite loss, a full disk), 2 bad data found on the way. ``--resume`` is advised only
        where a last.pth exists."""
        then = (f"continue with python train_dlv3p.py --resume {self.last}" if self.last.exists()
                else "no checkpoint was written yet: run the same command again")
        if isinstance(error, KeyboardInterrupt):
            held = load_checkpoint(self.last)["iteration"] if self.last.exists() else None
            return report_error(error, (f"{self.last} holds iteration {held}; " if held is not None else "") + then)
        return report_error(error, writing=self.path, write_advice="free space (or fix permissions), then "
                            + then.removeprefix("no checkpoint was written yet: "))
