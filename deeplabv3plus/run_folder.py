"""A training run's folder, ``saved/{run}/``: its file names, claiming it, its args.json record, and what a run
that stops leaves behind. A run is the parent folder of its checkpoints; its name names its outputs.

A folder holds a run when it holds a checkpoint (last.pth or best.pth) or the record of one (history.csv,
per_class_iou.json, a resumed args.json, or any file this project does not write there at a start): such a folder
is continued with --resume or replaced with --overwrite, never otherwise. Only what a start that stopped before its
first validation leaves (a new run's args.json, TensorBoard events, temporaries) is replaced by the next start.
While a training uses the folder it holds an exclusive lock on ``{run}/.lock`` (a POSIX record lock: the system
drops it when the process ends, however it ends, and the loader workers it forks do not hold it), so a second
training on the same run name stops at once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.cli import output_folder
from deeplabv3plus.config import LENGTHS, RESTORED
from deeplabv3plus.tensorboard_log import TB_DIR
from segdata.files import (
    TEMPORARY_SUFFIX,
    LockBusy,
    LockFile,
    OutputError,
    missing_folders,
    remove_empty_folders,
    remove_stale_temporaries,
    write_json,
)
from segdata.flags import FlagError, report_error

__all__ = ["CHECKPOINTS", "LAST", "RUN_FILES", "RunFolder"]

LAST, BEST, ARGS, LOCK = "last.pth", "best.pth", "args.json", ".lock"
CHECKPOINTS = (LAST, BEST)
"""The files that make a folder hold a run."""
RUN_FILES = (*CHECKPOINTS, "history.csv", "per_class_iou.json", ARGS)
"""Every file of a run (what --overwrite replaces)."""


def _is_a_new_runs_record(path: Path) -> bool:
    """Whether ``path`` is the args.json a new run writes at its start (never resumed), and nothing else."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and not record.get("resumes")


def _elsewhere(resume: Path | None, lead: str = "") -> str:
    """How a resumed run goes on where its folder cannot be written ("" for a new run)."""
    if resume is None:
        return ""
    return (f"{lead}continue the run in a writable folder with --resume {resume} --save-dir DIR (its history and "
            "state travel in the checkpoint)")


class RunFolder:
    """``{save_dir}/{run_name}``, claimed before any work (see :meth:`claim`) and released when the run ends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.made: list[Path] = []
        self._lock = LockFile(self.path / LOCK)

    @property
    def last(self) -> Path:
        return self.path / LAST

    def holds_a_run(self) -> bool:
        """Whether the folder holds a checkpoint of a run."""
        return any((self.path / name).exists() for name in CHECKPOINTS)

    def entries(self) -> list[str]:
        """What the folder holds (folders with a trailing /), its lock and temporaries aside."""
        if not self.path.is_dir():
            return []
        return [entry.name + ("/" if entry.is_dir() else "") for entry in sorted(self.path.iterdir())
                if entry.name != LOCK and not (entry.name.startswith(".") and entry.name.endswith(TEMPORARY_SUFFIX))]

    def foreign_entries(self) -> list[str]:
        """What the folder holds beyond the leftovers of a start that stopped before its first validation (a new
        run's args.json, TensorBoard events, the lock, temporaries): the names of a run's record or of anyone's files,
        which a new start must not replace."""
        if not self.path.is_dir():
            return []
        foreign = []
        for entry in sorted(self.path.iterdir()):
            if entry.name == LOCK or (entry.name.startswith(".") and entry.name.endswith(TEMPORARY_SUFFIX)):
                continue
            if entry.name == ARGS and entry.is_file() and _is_a_new_runs_record(entry):
                continue
            if entry.name == TB_DIR and (entry.is_file() or all(  # a file there: TensorBoard's check names it
                    item.is_file() and item.name.startswith("events.out.tfevents.") for item in entry.iterdir())):
                continue
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
        return foreign

    @classmethod
    def claim(cls, save_dir: Path, run_name: str, resume: Path | None, overwrite: bool,
              lock: bool = True) -> RunFolder:
        """The run folder, checked and (with ``lock``, on the main process) locked before any work: a folder in use
        by another training is refused naming it; a folder that holds a run (or its record) is continued with
        --resume, replaced only with --overwrite, and otherwise refused (FlagError naming the three ways on)."""
        try:
            path = output_folder(save_dir, "--save-dir") / run_name
        except FlagError as error:
            raise FlagError(str(error) + _elsewhere(resume, ": ")) from None
        folder = cls(path)
        if lock:
            folder._take_lock(resume)
        try:
            resuming_here = resume is not None and Path(resume).resolve().parent == path.resolve()
            if folder.foreign_entries() and not resuming_here and not overwrite:
                contents = ", ".join(folder.entries())
                if folder.holds_a_run():
                    raise FlagError(f"{path}: already holds a run ({contents}); continue it with --resume "
                                    f"{path / LAST}, start another with --run-name NAME, or replace it with "
                                    "--overwrite")
                raise FlagError(f"{path}: holds files of a run without its checkpoints ({contents}); they are kept: "
                                "start this run with --run-name NAME, or replace them with --overwrite")
        except BaseException:
            folder.release()
            raise
        return folder

    def _take_lock(self, resume: Path | None) -> None:
        """Make the folder (remembering what was made) and lock it, or FlagError naming the training that holds it,
        or why the folder cannot be used."""
        self.made = missing_folders(self.path)
        try:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise OutputError(f"{self.path}: cannot be written ({error.strerror})") from None
            self._lock.take()
        except LockBusy as busy:
            raise FlagError(f"{self.path}: another training is using this run folder right now ({busy.holder}); "
                            "wait for it to end, or start this one with --run-name NAME") from None
        except OutputError as error:
            remove_empty_folders(self.made)
            if self._lock.path.is_dir():
                raise FlagError(str(error)) from None
            raise FlagError(f"{error}; a training writes its checkpoints there: "
                            + (_elsewhere(resume) or "choose a writable --save-dir")) from None

    def release(self) -> None:
        """Drop the lock, and the folders :meth:`claim` made if nothing was written in them."""
        self._lock.release()
        remove_empty_folders(self.made)

    def prepare(self, replace: bool) -> None:
        """Make the folder, drop the temporaries of a run killed while writing, and the files of the run it replaces
        (``replace``: --overwrite) or the leftovers of a start that stopped before its first validation (what
        :meth:`claim` let through)."""
        self.made = self.made or missing_folders(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        if replace or not self.holds_a_run():
            self._remove_run_files()

    def _remove_run_files(self) -> None:
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / TB_DIR, ignore_errors=True)

    def record(self, settings: dict, resume: dict | None) -> None:
        """Write args.json: the settings the run uses. A resume keeps the first start's record, updated with the
        restored and length settings (and the recipe's overrides and the validation protocol that name them), and
        appends ``resume`` to its ``resumes``."""
        path = self.path / ARGS
        if resume is None or not path.exists():
            write_json(path, {**settings, "resumes": [] if resume is None else [resume]})
            return
        previous = json.loads(path.read_text())
        updated = {key: settings[key] for key in (*RESTORED, *LENGTHS, "recipe_overrides", "val_protocol")
                   if key in settings}
        write_json(path, {**previous, **updated, "resumes": [*previous.get("resumes", []), resume]})

    def discard_unstarted(self) -> None:
        """A new run that stopped before its first checkpoint leaves nothing: its args.json, history, TensorBoard
        logs, temporaries and the folders it made (the folder held nothing else: see :meth:`claim`)."""
        if self.holds_a_run():
            return
        self._remove_run_files()
        remove_stale_temporaries(self.path)

    def report_stop(self, error: BaseException) -> int:
        """The one line of a run that stopped, and its exit status (see ``report_error``): 130 Ctrl-C, 1 a failure
        while running (a non-finite loss, a full disk), 2 bad data found on the way. ``--resume`` is advised only
        where a last.pth exists."""
        then = (f"continue with python train_dlv3p.py --resume {self.last}" if self.last.exists()
                else "no checkpoint was written yet: run the same command again")
        if isinstance(error, KeyboardInterrupt):
            iteration = load_checkpoint(self.last)["iteration"] if self.last.exists() else None
            return report_error(error, (f"{self.last} holds iteration {iteration}; " if iteration is not None else "")
                                + then)
        return report_error(error, writing=self.path, write_advice="free space (or fix permissions), then "
                            + then.removeprefix("no checkpoint was written yet: "))
