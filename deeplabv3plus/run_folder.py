"""A training run's folder, ``saved/{run}/``: its file names, claiming it, its args.json record, and what a run
that stops leaves behind. A run is the parent folder of its checkpoints; its name names its outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deeplabv3plus.checkpoint import load_checkpoint
from deeplabv3plus.cli import output_folder
from deeplabv3plus.run import KEPT_DEFAULTS, LENGTH_KEYS
from deeplabv3plus.tensorboard_log import TB_DIR
from segdata.files import missing_folders, remove_empty_folders, remove_stale_temporaries, write_json
from segdata.flags import FlagError, report_error

__all__ = ["LAST", "RUN_FILES", "RunFolder", "default_run_name", "run_location", "run_name_of"]

LAST, BEST, ARGS = "last.pth", "best.pth", "args.json"
RUN_FILES = (LAST, BEST, "history.csv", "per_class_iou.json", ARGS)
"""The files that make a folder hold a run."""


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
    """``{save_dir}/{run_name}``, claimed before any work (see :meth:`claim`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.made: list[Path] = []

    @property
    def last(self) -> Path:
        return self.path / LAST

    @classmethod
    def claim(cls, save_dir: Path, run_name: str, resume: Path | None, overwrite: bool) -> RunFolder:
        """The run folder, checked before any work: a folder that holds another run is continued with --resume,
        replaced only with --overwrite, and otherwise refused (FlagError naming the three ways on)."""
        path = output_folder(save_dir, "--save-dir") / run_name
        held = [name for name in RUN_FILES if (path / name).exists()]
        resuming_here = resume is not None and Path(resume).resolve().parent == path.resolve()
        if held and not resuming_here and not overwrite:
            raise FlagError(f"{path}: already holds a run ({', '.join(held)}); continue it with --resume "
                            f"{path / LAST}, start another with --run-name NAME, or replace it with --overwrite")
        return cls(path)

    def prepare(self, replace: bool) -> None:
        """Make the folder (remembering the folders made, for :meth:`discard_unstarted`), drop the temporaries of a
        run killed while writing, and the previous run's files when ``replace``."""
        self.made = missing_folders(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        if replace:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)

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
        """A new run that stopped before its first checkpoint leaves nothing: its args.json, TensorBoard logs and
        the folders it made."""
        if self.last.exists():
            return
        (self.path / ARGS).unlink(missing_ok=True)
        shutil.rmtree(self.path / TB_DIR, ignore_errors=True)
        remove_empty_folders(self.made)

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
