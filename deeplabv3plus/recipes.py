"""Named recipes: every setting that defines a training run, and the test protocol that goes with it, as data.

``project`` is this project's own recipe (what runs without ``--recipe``). The ``mmseg-*`` recipes are
mmsegmentation 1.2.2's DeepLabV3+ Cityscapes configs (``mmseg/.mim/configs/deeplabv3plus/{config}`` over its
``_base_`` files), setting for setting, so that each row reads against its config line by line; the tests read
those files with mmengine's ``Config`` and compare (``tests/test_recipes.py``), and train three steps under both
codes from the same weights. The published figure is mmsegmentation's (its model zoo, Cityscapes val mIoU, single
scale / multi-scale + flip), not measured here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PROJECT_RECIPE", "RECIPES", "Recipe", "as_flags", "describe_recipes", "flag_of", "flag_value",
           "overrides_of", "published_protocol_note", "recipe_named", "recipe_settings"]


PROJECT_RECIPE = "project"
"""This project's own recipe: what runs without --recipe."""


@dataclass(frozen=True)
class Recipe:
    """A named set of every run-defining setting (flag names -> values) and its test protocol."""

    name: str
    summary: str
    settings: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    """test_dlv3p.py's flags of the protocol the recipe is scored with (flag names -> values), on the run's
    ``last.pth`` (mmsegmentation publishes the score of its last checkpoint, not the best of its validations)."""
    published: tuple[float, float] | None = None
    """(val mIoU, multi-scale + flip) as published; None: no published figure."""
    source: str = ""
    """The config file the recipe is."""
    memory_gb: float | None = None
    """Training memory per GPU at 2 images, as the publisher reports it."""


def _mmseg(depth: int, crop: tuple[int, int], iterations: int, published: tuple[float, float],
           memory_gb: float | None) -> Recipe:
    """``deeplabv3plus_r{depth}-d8_4xb2-{k}k_cityscapes-{crop}``: ``_base_/models/deeplabv3plus_r50-d8.py`` (ResNetV1c
    from ``open-mmlab://resnet{depth}_v1c``, dilations 1 1 2 4 (OS8), DepthwiseSeparableASPPHead of 512 channels,
    FCNHead auxiliary head with loss weight 0.4, cross-entropy averaged over every pixel), ``_base_/datasets/
    cityscapes{,_769x769}.py`` (RandomResize of ``scale`` x 0.5-2.0 keeping the ratio, RandomCrop with
    cat_max_ratio 0.75, RandomFlip 0.5, PhotoMetricDistortion; 4 GPUs x 2 images), ``_base_/schedules/
    schedule_{k}k.py`` (SGD lr 0.01, momentum 0.9, weight decay 5e-4 on every parameter, PolyLR power 0.9 down to
    1e-4, no warm-up, validation every tenth of the run); the 769x769 configs align corners and test in sliding
    windows."""
    wide = crop == (512, 1024)
    size = "512x1024" if wide else "769x769"
    settings = {
        "dataset": "cityscapes", "arch": "mmseg", "backbone": f"resnet{depth}", "output_stride": 8,
        "pretrained_backbone": "open-mmlab", "aux_loss_weight": 0.4, "align_corners": not wide,
        "pipeline": "mmseg", "crop_size": crop, "scale_range": (0.5, 2.0),
        "resize_scale": (2048, 1024) if wide else (2049, 1025), "crop_max_class_share": 0.75,
        "color_augmentation": "photometric", "loss_average": "all", "batch_size": 8,
        "lr": 0.01, "backbone_lr_multiplier": 1.0, "momentum": 0.9, "weight_decay": 5e-4, "norm_bias_decay": True,
        "power": 0.9, "min_lr": 1e-4, "warmup_iters": 0, "iters": iterations, "val_interval": iterations // 10,
        "amp": False,  # the published runs trained in float32 (--amp trades a little exactness for speed)
    }
    # scored on the polygon-drawn labelTrainIds (mmsegmentation's IoUMetric), whole frames or 769x769 windows
    test = {"mode": "whole"} if wide else {"mode": "slide", "crop": (769, 769), "stride": (513, 513),
                                           "test_scale": (2049, 1025)}
    test["ground_truth"] = "generated"
    k = f"{iterations // 1000}k"
    return Recipe(f"mmseg-r{depth}-d8-{size}-{k}",
                  f"mmsegmentation's DeepLabV3+ R-{depth}-D8, {size} crops, {k} iterations",
                  settings, test, published, f"deeplabv3plus_r{depth}-d8_4xb2-{k}_cityscapes-{size}.py", memory_gb)


RECIPES = {recipe.name: recipe for recipe in (
    Recipe(PROJECT_RECIPE, "this project's recipe: torchvision ResNet-50 (7x7 stem), dense ASPP and decoder, OS8, "
                           "768x768 crop-first, colour jitter, 80k iterations, warm-up 1000, loss over labelled "
                           "pixels"),
    _mmseg(50, (512, 1024), 40_000, (79.61, 81.01), 7.5),
    _mmseg(50, (512, 1024), 80_000, (80.09, 81.13), 7.5),
    _mmseg(101, (512, 1024), 40_000, (80.21, 81.82), 11.0),
    _mmseg(101, (512, 1024), 80_000, (80.97, 82.03), 11.0),
    _mmseg(50, (769, 769), 40_000, (78.97, 80.46), 8.5),
    _mmseg(50, (769, 769), 80_000, (79.83, 81.48), 8.5),
    _mmseg(101, (769, 769), 40_000, (79.46, 80.50), 12.5),
    _mmseg(101, (769, 769), 80_000, (80.65, 81.47), 12.5),
)}
"""Every recipe, by name."""


def recipe_named(name: str) -> Recipe:
    """The recipe of ``--recipe NAME`` (the parser's ``choices`` checked the name)."""
    return RECIPES[name]


def recipe_settings(name: str) -> dict:
    """A recipe's settings (what a new run's flags default to)."""
    return dict(RECIPES[name].settings)


def flag_value(value: object) -> str:
    """A setting's value as its flag takes it: ``(769, 769)`` -> ``769 769``."""
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def flag_of(key: str) -> str:
    """A setting's flag: ``crop_size`` -> ``--crop-size``."""
    return "--" + key.replace("_", "-")


def as_flags(values: dict, separator: str = " ") -> str:
    """``{"crop": (769, 769)}`` -> ``--crop 769 769``."""
    return separator.join(f"{flag_of(key)} {flag_value(value)}" for key, value in values.items())


def overrides_of(recipe: dict, given: dict, settings: dict) -> dict:
    """The recipe's settings a run changed (``given``: the flags, None where not given; ``settings``: the run's),
    names -> the run's values."""
    def plain(value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    return {key: settings[key] for key, value in recipe.items()
            if given.get(key) is not None and plain(settings[key]) != plain(value)}


def describe_recipes() -> str:
    """The recipes in words (``--list-recipes``): name, what it is, the published figure and the test command."""
    lines = []
    for recipe in RECIPES.values():  # name: summary; published figure; test command
        figure = (f"; published val mIoU {recipe.published[0]} (multi-scale + flip {recipe.published[1]})"
                  if recipe.published else "")
        lines.append(f"{recipe.name}: {recipe.summary}{figure}" + (
            f"\n    test with: test_dlv3p.py --model_weights_path saved/{recipe.name}/last.pth --split val "
            f"{as_flags(recipe.test)}" if recipe.test else ""))
    return "\n".join(lines)


def published_protocol_note(recipe_name: str | None, given: dict) -> str:
    """What test_dlv3p.py says when a run of a recipe is scored otherwise than its published figure was (``given``:
    the test's flags, names -> values): the flags that score it that way; "" when given, or without such a recipe."""
    recipe = RECIPES.get(recipe_name or "")
    if recipe is None or not recipe.published or all(given.get(key) == value for key, value in recipe.test.items()):
        return ""
    return f"{recipe.name}'s published figure was scored with {as_flags(recipe.test)}: add them to compare with it"
