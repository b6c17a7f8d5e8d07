"""A training run's settings: resolved from the flags, the recipe and, on resume, the run being continued.

Settings are plain dicts (flag name -> value, ``None`` where a flag was not
given), so the rules test without a model or a checkpoint file. Three kinds:

- **run-defining** (``RUN_DEFAULTS``): the model, the data pipeline and the
  optimizer. A resumed run takes them from its checkpoint and refuses a flag
  that contradicts them (its weights and optimizer could not honour it).
- **kept** (``KEPT_DEFAULTS``): where the data is, how often to validate (``--val-every`` epochs or
  ``--val-interval`` iterations; giving one on resume replaces the other). A
  resumed run keeps them unless given again (a data set that moved); a change
  is said and recorded.
- **the length** (``--iters`` / ``--epochs``): a resumed run may be made longer
  (or shorter, down to where it is): the poly LR is then computed for the new
  length from the current iteration on, as mmsegmentation does when its
  ``max_iters`` changes; the change is said and recorded.

Everything else (device, workers, channels_last, ...) belongs to one
invocation and is neither taken from nor checked against the run.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from deeplabv3plus.checkpoint import model_config
from deeplabv3plus.cli import FlagError, crop_size
from segdata.transforms import RECIPE_CROP_SIZE, RECIPE_SCALE_RANGE

__all__ = ["DEFAULT_ITERATIONS", "FAST_DEFAULTS", "KEPT_DEFAULTS", "RUN_DEFAULTS", "ResumeRecord", "check_batch_size",
           "resolve_run_settings", "resume_record", "saved_settings"]

RUN_DEFAULTS = {
    "backbone": "resnet50", "output_stride": 8, "crop_size": list(RECIPE_CROP_SIZE),
    "scale_range": list(RECIPE_SCALE_RANGE), "batch_size": 8,
    "lr": 0.01, "backbone_lr_multiplier": 1.0, "momentum": 0.9, "weight_decay": 5e-4, "power": 0.9,
    "warmup_iters": 1000, "amp": False, "amp_dtype": None, "seed": 0, "aux_loss_weight": 0.4, "arch": "deeplabv3plus",
    "dataset": "cityscapes", "train_split": "train", "class_weights": "none",
}
"""The recipe's value of every flag that defines a run."""
KEPT_DEFAULTS = {"data_root": "data", "val_every": 10, "val_interval": None, "pretrained_backbone": "imagenet",
                 "init_weights": None, "classes": None, "channels_last": False, "val_frames": None}
"""Settings a resumed run keeps unless they are given again."""
FAST_DEFAULTS = {"amp": True, "channels_last": True}
"""The defaults of a new run on a GPU that runs bfloat16 natively: autocast (bfloat16, see
``deeplabv3plus.precision``) and channels_last."""
DEFAULT_ITERATIONS = 80_000
LENGTH_KEYS = ("iters", "epochs")

ResumeRecord = dict
"""One resume as args.json records it: ``time``, ``from_iteration``, ``given`` (flags given), ``changed``."""


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def saved_settings(checkpoint: dict) -> dict:
    """The settings a checkpoint was trained with, the model's from its config (older checkpoints lack some)."""
    saved = dict(checkpoint.get("args", {}))
    config = model_config(checkpoint)
    saved.update({key: config[key] for key in ("backbone", "output_stride")})
    # checkpoints written before the auxiliary head and the --arch presets existed
    saved.setdefault("aux_loss_weight", RUN_DEFAULTS["aux_loss_weight"] if config["aux_head"] else 0.0)
    saved.setdefault("arch", "mmseg" if config["stem"] == "deep" else "deeplabv3plus")
    saved.setdefault("dataset", "cityscapes")  # checkpoints written before other data sets
    return saved


def _resolve_length(
    given: dict, saved: dict | None, progress: tuple[int, int], source: Path | None
) -> tuple[dict, list]:
    """``{"iters": ..., "epochs": ...}`` (one of them None) and the notes of a changed length."""
    if saved is None:
        if given.get("iters") is None and given.get("epochs") is None:
            return {"iters": DEFAULT_ITERATIONS, "epochs": None}, []
        return {key: given.get(key) for key in LENGTH_KEYS}, []
    unit = "iters" if saved.get("iters") is not None else "epochs"
    other = "epochs" if unit == "iters" else "iters"
    if given.get(other) is not None:
        raise FlagError(f"argument {_flag(other)}: the run in {source} counts its length in {unit}; give "
                        f"{_flag(unit)} to change it")
    length = {unit: saved[unit], other: None}
    wanted = given.get(unit)
    if wanted is None or wanted == saved[unit]:
        return length, []
    done = progress[1] if unit == "iters" else progress[0]
    if wanted <= done:
        raise FlagError(f"argument {_flag(unit)}: the run in {source} is at {done} {unit} already; give more than "
                        f"that, or drop the flag")
    length[unit] = wanted
    return length, [f"{_flag(unit)}: {saved[unit]} -> {wanted} (the poly LR is computed for the new length from "
                    f"iteration {progress[1]} on)"]


def resolve_run_settings(given: dict, checkpoint: dict | None = None, source: Path | None = None,
                         new_run_defaults: dict | None = None) -> tuple[dict, list]:
    """The run-defining, kept and length settings of ``given`` (flags; None: not given) filled from the resumed
    ``checkpoint`` (read from ``source``) or, for a new run, from ``new_run_defaults`` (e.g. :data:`FAST_DEFAULTS` on
    a GPU) and the recipe. ``--amp-dtype`` alone implies ``--amp``. Returns ``(settings, notes)``: notes say what a
    resume changed. FlagError names a flag that contradicts the run being resumed."""
    saved = saved_settings(checkpoint) if checkpoint is not None else None
    if given.get("amp_dtype") is not None and given.get("amp") is None:
        given = {**given, "amp": True}
    fresh = new_run_defaults if saved is None and new_run_defaults else {}
    settings, notes = {}, []
    for key, default in RUN_DEFAULTS.items():
        default = fresh.get(key, default)
        value = given.get(key)
        if key == "crop_size" and value is not None:
            value = list(crop_size(value))
        if saved is not None and key in saved:
            if value is not None and value != saved[key]:
                other_data = (f"; to train its weights on the {value} data, start a new run from them: --init-weights "
                              f"{source} --run-name NAME" if key == "dataset" else "")
                raise FlagError(f"argument {_flag(key)}: {value} differs from {saved[key]} of the run in {source}; a "
                                "resumed run keeps its settings: drop the flag, or start a new run with --run-name"
                                + other_data)
            value = saved[key]
        settings[key] = default if value is None else value
    for key, default in KEPT_DEFAULTS.items():
        default = fresh.get(key, default)
        value = given.get(key)
        if key == "data_root" and value is not None:
            value = str(Path(value).resolve())  # recorded absolute: --resume alone works from any folder
        if saved is not None and key in saved:
            if value is None:
                value = saved[key]
            elif str(value) != str(saved[key]):
                notes.append(f"{_flag(key)}: {saved[key]} -> {value}")
        settings[key] = default if value is None else value
    if given.get("val_every") is not None and given.get("val_interval") is None:
        settings["val_interval"] = None  # validation by epochs given anew replaces the run's by iterations
    progress = (checkpoint.get("epoch", 0), checkpoint.get("iteration", 0)) if checkpoint is not None else (0, 0)
    length, length_notes = _resolve_length(given, saved, progress, source)
    settings.update(length)
    return settings, notes + length_notes


def resume_record(given: dict, from_iteration: int, notes: list) -> ResumeRecord:
    """What args.json appends for one resume: when, from which iteration, the flags given and what changed."""
    return {"time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "from_iteration": from_iteration, "given": given, "changed": notes}


def check_batch_size(batch_size: int, world_size: int) -> None:
    """FlagError unless the batch splits evenly over the processes, at least 2 images each (batch norm)."""
    if batch_size % world_size:
        raise FlagError(f"argument --batch-size: {batch_size} must divide evenly over {world_size} processes")
    if batch_size // world_size < 2:
        raise FlagError("argument --batch-size: each process needs at least 2 images per batch (batch norm); raise it")
