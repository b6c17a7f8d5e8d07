"""A training run's configuration: one frozen :class:`RunConfig`, the one home of every setting's default.

Each setting has one of four kinds (a field's ``kind``):

- **hyperparameter**: the model, the data pipeline, the loss, the optimizer. A resumed run takes them from its
  checkpoint and refuses a flag that contradicts them (its weights and optimizer could not honour it).
- **restored**: where the data is, how often to validate, the memory format. A resumed run restores them unless
  given again (a data set that moved); a change is said and recorded (``--val-every`` epochs and ``--val-interval``
  iterations: giving one on resume replaces the other).
- **length**: ``--iters`` / ``--epochs``. A resumed run may be made longer (or shorter, down to where it is): the
  poly LR is then computed for the new length from the current iteration on, as mmsegmentation does when its
  ``max_iters`` changes; the change is said and recorded.
- **invocation**: device, workers, logging: one command's, neither taken from nor checked against the run.

:meth:`RunConfig.from_flags` resolves flags, checkpoint and device once (the rules, on plain dicts, are
:func:`resolve_settings`); :meth:`RunConfig.fitted_to` is the one step that needs the data (the crop fitted to small
frames, the warm-up clamped, the class weights counted); nothing changes a config afterwards. ``args.json`` and the
checkpoint's ``args`` are :meth:`RunConfig.as_record`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deeplabv3plus.checkpoint import model_config, run_name_of
from deeplabv3plus.distributed import DistributedContext
from deeplabv3plus.precision import AMP_DTYPES, Precision, native_bfloat16, precision_from_flags
from deeplabv3plus.recipes import PROJECT_RECIPE, flag_of, flag_value, overrides_of, recipe_settings
from deeplabv3plus.setting_values import check_batch_size, crop_for_frames, crop_size, scale_range
from segdata.flags import FlagError

__all__ = ["DEFAULT_ITERATIONS", "DEVICE_DEFAULTS", "HYPERPARAMETERS", "LENGTHS", "RESTORED", "ResumeRecord",
           "RunConfig", "default_run_name", "resolve_settings", "resume_record", "run_location", "saved_settings"]

log = logging.getLogger(__name__)

HYPERPARAMETER, RESTORED_KIND, LENGTH, INVOCATION = "hyperparameter", "restored", "length", "invocation"
DEFAULT_ITERATIONS = 80_000


def setting(default: object, kind: str) -> object:
    """A RunConfig field: its default and its kind (see the module docstring)."""
    return field(default=default, metadata={"kind": kind})


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a training run (the flags' names), with its default and kind; frozen once resolved."""

    # data
    dataset: str = setting("cityscapes", HYPERPARAMETER)
    data_root: str = setting("data", RESTORED_KIND)
    classes: str | None = setting(None, RESTORED_KIND)
    train_split: str = setting("train", HYPERPARAMETER)
    crop_size: tuple[int, int] = setting((768, 768), HYPERPARAMETER)  # the DeepLabV3+ Cityscapes recipe's
    scale_range: tuple[float, float] = setting((0.5, 2.0), HYPERPARAMETER)
    workers: int | None = setting(None, INVOCATION)  # None: from the device (segdata.loading.default_workers)
    jitter_on_device: bool | None = setting(None, INVOCATION)  # None: on for CUDA
    cache: bool = setting(False, INVOCATION)
    class_weights: str = setting("none", HYPERPARAMETER)
    batch_size: int = setting(8, HYPERPARAMETER)
    val_batch_size: int = setting(1, INVOCATION)
    # model
    arch: str = setting("deeplabv3plus", HYPERPARAMETER)
    backbone: str = setting("resnet50", HYPERPARAMETER)
    output_stride: int = setting(8, HYPERPARAMETER)
    aux_loss_weight: float = setting(0.4, HYPERPARAMETER)
    init_weights: str | None = setting(None, RESTORED_KIND)
    pretrained_backbone: str = setting("imagenet", RESTORED_KIND)
    # optimization
    iters: int | None = setting(None, LENGTH)  # neither given: DEFAULT_ITERATIONS
    epochs: int | None = setting(None, LENGTH)
    lr: float = setting(0.01, HYPERPARAMETER)
    backbone_lr_multiplier: float = setting(1.0, HYPERPARAMETER)
    momentum: float = setting(0.9, HYPERPARAMETER)
    weight_decay: float = setting(5e-4, HYPERPARAMETER)
    power: float = setting(0.9, HYPERPARAMETER)
    warmup_iters: int = setting(1000, HYPERPARAMETER)
    amp: bool = setting(False, HYPERPARAMETER)
    amp_dtype: str | None = setting(None, HYPERPARAMETER)  # resolved: the autocast dtype's name, None for float32
    # runtime
    device: str = setting("cpu", INVOCATION)
    channels_last: bool = setting(False, RESTORED_KIND)
    compile: bool = setting(False, INVOCATION)
    deterministic: bool = setting(False, INVOCATION)
    seed: int = setting(0, HYPERPARAMETER)
    save_dir: str = setting("saved", INVOCATION)
    run_name: str | None = setting(None, INVOCATION)  # None: dlv3p_{backbone}_os{stride}
    resume: str | None = setting(None, INVOCATION)
    overwrite: bool = setting(False, INVOCATION)
    val_frames: int | None = setting(None, RESTORED_KIND)
    val_every: int = setting(10, RESTORED_KIND)
    val_interval: int | None = setting(None, RESTORED_KIND)
    tensorboard: bool | None = setting(None, INVOCATION)  # None: on where the package is installed
    preview_frames: int = setting(4, INVOCATION)
    log_every: int = setting(20, INVOCATION)
    sync_bn: bool = setting(True, INVOCATION)
    # recipes (deeplabv3plus.recipes) and the settings that make mmsegmentation's: see train_flags for each
    recipe: str = setting(PROJECT_RECIPE, HYPERPARAMETER)
    pipeline: str = setting("crop-first", HYPERPARAMETER)
    resize_scale: tuple[int, int] | None = setting(None, HYPERPARAMETER)
    crop_max_class_share: float = setting(1.0, HYPERPARAMETER)
    color_augmentation: str = setting("jitter", HYPERPARAMETER)
    loss_average: str = setting("labelled", HYPERPARAMETER)
    min_lr: float = setting(0.0, HYPERPARAMETER)
    norm_bias_decay: bool = setting(False, HYPERPARAMETER)
    align_corners: bool = setting(False, HYPERPARAMETER)
    # derived once and kept on resume: the class weights counted from the data (fitted_to), the recipe's overrides
    class_weight_values: tuple[float, ...] | None = setting(None, HYPERPARAMETER)
    recipe_overrides: dict | None = setting(None, HYPERPARAMETER)

    @property
    def is_new_run(self) -> bool:
        return self.resume is None

    @property
    def precision(self) -> Precision:
        """The autocast dtype (``amp_dtype``'s, None for float32) and whether a GradScaler runs (float16 on CUDA)."""
        dtype = None if self.amp_dtype is None else AMP_DTYPES[self.amp_dtype]
        return Precision(dtype, use_scaler=dtype == torch.float16 and torch.device(self.device).type == "cuda")

    def total_iterations(self, iterations_per_epoch: int) -> int:
        """The run's length in iterations (``--epochs`` counts epochs of ``iterations_per_epoch``)."""
        return self.iters if self.iters is not None else self.epochs * iterations_per_epoch

    def as_record(self) -> dict:
        """Plain values (lists, strings): what args.json and a checkpoint's ``args`` hold."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def defaults(cls, kind: str) -> dict:
        """``{setting: default}`` of the settings of one kind."""
        return {item.name: item.default for item in dataclasses.fields(cls) if item.metadata["kind"] == kind}

    @classmethod
    def from_flags(cls, args: argparse.Namespace, context: DistributedContext,
                   checkpoint: dict | None = None) -> tuple[RunConfig, list[str]]:
        """The config of ``args`` (the flags; None: not given) for a new run, or for the run of ``checkpoint`` being
        resumed; and what a resume changed, in words. FlagError names a flag that contradicts the run, or another
        flag."""
        from segdata.loading import default_workers  # the loader's rule for its own workers

        flags = vars(args)
        given = {key: flags.get(key) for key in (*HYPERPARAMETERS, *RESTORED, *LENGTHS)}
        saved = {} if checkpoint is None else checkpoint.get("args", {})
        recipe = recipe_settings((saved.get("recipe") if checkpoint else given["recipe"]) or PROJECT_RECIPE)
        settings, notes = resolve_settings(given, checkpoint, args.resume, DEVICE_DEFAULTS if native_bfloat16(
            context.device) else None, {} if checkpoint else recipe)
        # what differs from the recipe: the flags of a new run, or those of the run resumed and what its resume changed
        flagged = {key: value for key, value in given.items() if value is not None}
        overrides = overrides_of(recipe, {**(saved.get("recipe_overrides") or {}), **flagged}, settings)
        for key, value in overrides.items() if checkpoint is None else ():
            log.info("recipe %s: %s %s instead of its %s", settings["recipe"], flag_of(key), flag_value(value),
                     flag_value(recipe[key]))
        precision = precision_from_flags(settings["amp"], settings["amp_dtype"], args.device)  # decided once
        check_batch_size(settings["batch_size"], context.world_size)
        invocation = {key: flags[key] for key in cls.defaults(INVOCATION) if key in flags}
        invocation.update(
            jitter_on_device=context.device.type == "cuda" if args.jitter_on_device is None else args.jitter_on_device,
            workers=default_workers(context.device.type, context.local_world_size) if args.workers is None
            else args.workers,
            resume=None if args.resume is None else str(args.resume))
        save_dir, run_name = run_location(args.save_dir, args.run_name, args.resume,
                                          default_run_name(settings["backbone"], settings["output_stride"],
                                                           settings["recipe"]))
        invocation.update(save_dir=str(save_dir), run_name=run_name)
        weights = saved.get("class_weight_values")
        config = cls(**{**settings, **invocation, "amp_dtype": precision.name,
                        "data_root": str(Path(settings["data_root"]).resolve()),  # --resume alone works from anywhere
                        **{key: None if settings[key] is None else tuple(settings[key])
                           for key in ("crop_size", "scale_range", "resize_scale")},
                        "class_weight_values": None if weights is None else tuple(weights),
                        "recipe_overrides": overrides or None})
        return config, notes

    def fitted_to(self, train_set, iterations_per_epoch: int, crop_given: bool) -> RunConfig:
        """This config made to fit the data, before anything is built from it: a new run's crop fitted to frames
        smaller than it (a ``crop_given`` too large is refused), the warm-up clamped to the run, and the class
        weights of --class-weights counted on the train masks (a resumed run keeps its own)."""
        from deeplabv3plus.optimizer import clamp_warmup
        from segdata.class_weights import weights_for

        changes: dict = {"warmup_iters": clamp_warmup(self.warmup_iters, self.total_iterations(iterations_per_epoch))}
        if self.is_new_run:  # a resumed run keeps its crop and weights
            changes["crop_size"] = crop_for_frames(self.crop_size, train_set.image_sizes(), self.scale_range,
                                                   crop_given)
            weights = weights_for(self.class_weights, train_set, self.workers)
            changes["class_weight_values"] = None if weights is None else tuple(weights)
        return dataclasses.replace(self, **changes)


DERIVED = ("class_weight_values", "recipe_overrides")
"""Hyperparameters no flag gives: derived once (from the data, from the recipe and the flags) and kept."""
HYPERPARAMETERS = {key: list(value) if isinstance(value, tuple) else value
                   for key, value in RunConfig.defaults(HYPERPARAMETER).items() if key not in DERIVED}
"""The default of every flag that defines a run."""
RESTORED = RunConfig.defaults(RESTORED_KIND)
"""Settings a resumed run restores unless they are given again."""
LENGTHS = ("iters", "epochs")
DEVICE_DEFAULTS = {"amp": True, "channels_last": True}
"""The defaults of a new run on a GPU that runs bfloat16 natively: autocast (bfloat16, see
``deeplabv3plus.precision``) and channels_last."""

ResumeRecord = dict
"""One resume as args.json records it: ``time``, ``from_iteration``, ``given`` (flags given), ``changed``."""


def default_run_name(backbone: str, output_stride: int, recipe: str = PROJECT_RECIPE) -> str:
    """The run name unless the user gives one: the recipe's name, or ``dlv3p_{backbone}_os{stride}`` for this
    project's own."""
    return recipe if recipe != PROJECT_RECIPE else f"dlv3p_{backbone}_os{output_stride}"


def run_location(save_dir: Path | None, run_name: str | None, resume: Path | None,
                 new_run_name: str) -> tuple[Path, str]:
    """(folder of runs, run name): as given, else a resumed run's own (it continues in its folder), else ``saved``
    and ``new_run_name``."""
    if save_dir is None:
        save_dir = Path(resume).parent.parent if resume else Path("saved")
    if run_name is None:
        run_name = run_name_of(resume) if resume else new_run_name
    return Path(save_dir), run_name


def saved_settings(checkpoint: dict) -> dict:
    """The settings a checkpoint was trained with, the model's from its config (older checkpoints lack some)."""
    saved = dict(checkpoint.get("args", {}))
    config = model_config(checkpoint)
    saved.update({key: config[key] for key in ("backbone", "output_stride")})
    # checkpoints written before the auxiliary head and the --arch presets existed
    saved.setdefault("aux_loss_weight", HYPERPARAMETERS["aux_loss_weight"] if config["aux_head"] else 0.0)
    saved.setdefault("arch", "mmseg" if config["stem"] == "deep" else "deeplabv3plus")
    saved.setdefault("dataset", "cityscapes")  # checkpoints written before other data sets
    return saved


def _resolve_length(given: dict, saved: dict | None, progress: tuple[int, int], source: Path | None,
                    default: int = DEFAULT_ITERATIONS) -> tuple[dict, list]:
    """``{"iters": ..., "epochs": ...}`` (one of them None; a new run's ``default`` iterations unless given) and the
    notes of a changed length."""
    if saved is None:
        if given.get("iters") is None and given.get("epochs") is None:
            return {"iters": default, "epochs": None}, []
        return {key: given.get(key) for key in LENGTHS}, []
    unit = "iters" if saved.get("iters") is not None else "epochs"
    other = "epochs" if unit == "iters" else "iters"
    if given.get(other) is not None:
        raise FlagError(f"argument {flag_of(other)}: the run in {source} counts its length in {unit}; give "
                        f"{flag_of(unit)} to change it")
    length = {unit: saved[unit], other: None}
    wanted = given.get(unit)
    if wanted is None or wanted == saved[unit]:
        return length, []
    done = progress[1] if unit == "iters" else progress[0]
    if wanted <= done:
        raise FlagError(f"argument {flag_of(unit)}: the run in {source} is at {done} {unit} already; give more than "
                        f"that, or drop the flag")
    length[unit] = wanted
    return length, [f"{flag_of(unit)}: {saved[unit]} -> {wanted} (the poly LR is computed for the new length from "
                    f"iteration {progress[1]} on)"]


def resolve_settings(given: dict, checkpoint: dict | None = None, source: Path | None = None,
                     device_defaults: dict | None = None, recipe: dict | None = None) -> tuple[dict, list]:
    """The hyperparameters, restored settings and length of ``given`` (flags; None: not given), filled from the
    resumed ``checkpoint`` (read from ``source``) or, for a new run, from the ``recipe``'s settings, then
    ``device_defaults`` (e.g. :data:`DEVICE_DEFAULTS` on a GPU) and the defaults. ``--amp-dtype`` alone implies
    ``--amp``. Returns ``(settings, notes)``: notes say what a resume changed. FlagError names a flag that contradicts
    the run."""
    saved = saved_settings(checkpoint) if checkpoint is not None else None
    if given.get("amp_dtype") is not None and given.get("amp") is None:
        given = {**given, "amp": True}
    new_run_defaults = {**(device_defaults or {}), **(recipe or {})} if saved is None else {}
    settings, notes = {}, []
    for key, default in HYPERPARAMETERS.items():
        default = new_run_defaults.get(key, default)
        value = given.get(key)
        if key == "crop_size" and value is not None:
            value = list(crop_size(value))
        if key == "scale_range" and value is not None:
            value = list(scale_range(value))
        if saved is not None and key in saved:
            if value is not None and value != saved[key]:
                other_data = (f"; to train its weights on the {value} data, start a new run from them: --init-weights "
                              f"{source} --run-name NAME" if key == "dataset" else "")
                raise FlagError(f"argument {flag_of(key)}: {value} differs from {saved[key]} of the run in {source}; a "
                                "resumed run keeps its settings: drop the flag, or start a new run with --run-name"
                                + other_data)
            value = saved[key]
        settings[key] = default if value is None else value
    for key, default in RESTORED.items():
        default = new_run_defaults.get(key, default)
        value = given.get(key)
        if key == "data_root" and value is not None:
            value = str(Path(value).resolve())  # recorded absolute: --resume alone works from any folder
        if saved is not None and key in saved:
            if value is None:
                value = saved[key]
            elif str(value) != str(saved[key]):
                notes.append(f"{flag_of(key)}: {saved[key]} -> {value}")
        settings[key] = default if value is None else value
    if given.get("val_every") is not None and given.get("val_interval") is None:
        settings["val_interval"] = None  # validation by epochs given anew replaces the run's by iterations
    progress = (checkpoint.get("epoch", 0), checkpoint.get("iteration", 0)) if checkpoint is not None else (0, 0)
    length, length_notes = _resolve_length(given, saved, progress, source,
                                           new_run_defaults.get("iters", DEFAULT_ITERATIONS))
    settings.update(length)
    settings.update({key: None if settings[key] is None else str(settings[key])
                     for key in ("classes", "init_weights", "pretrained_backbone")})
    return settings, notes + length_notes


def resume_record(given: dict, from_iteration: int, notes: list) -> ResumeRecord:
    """What args.json appends for one resume: when, from which iteration, the flags given and what changed."""
    return {"time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "from_iteration": from_iteration, "given": given, "changed": notes}
