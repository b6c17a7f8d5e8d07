"""The flags of train_dlv3p.py: one per :class:`~deeplabv3plus.config.RunConfig` setting, with its type, choices
and help. Flags a resumed run takes from its checkpoint default to None here (given or not is what counts); the
defaults their help states are the config's."""

from __future__ import annotations

import argparse
from pathlib import Path

from deeplabv3plus import cli
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.config import DEFAULT_ITERATIONS, RunConfig
from deeplabv3plus.datasets import DATA_ROOT_HELP, DATASETS
from deeplabv3plus.loss import LOSS_AVERAGES
from deeplabv3plus.model import ARCHITECTURES
from deeplabv3plus.recipes import RECIPES, describe_recipes
from segdata.transforms import COLOR_AUGMENTATIONS

PIPELINES = ("crop-first", "mmseg")

__all__ = ["training_parser"]

DEFAULTS = RunConfig()


def default_of(setting: str) -> str:
    """`` (default: X, or the resumed run's)`` of a setting a resumed run takes from its checkpoint."""
    value = getattr(DEFAULTS, setting)
    return f" (default: {list(value) if isinstance(value, tuple) else value}, or the resumed run's)"


class _ListRecipes(argparse.Action):
    """``--list-recipes``: print the recipes and exit."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(describe_recipes())
        parser.exit()


def class_share(text: str) -> float:
    """A share of a crop's labelled pixels: more than 0, at most 1."""
    value = cli.positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a share from 0 to 1, got {text}")
    return value


def training_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags of a training run, grouped (Recipe, Data, Model, Optimization, Runtime, Distributed)."""
    parser = cli.Parser(prog=prog, description=description)
    recipe = parser.add_argument_group("Recipe")
    recipe.add_argument("--recipe", choices=list(RECIPES), default=None,
                        help="a named set of every run-defining setting (and its test protocol), e.g. one of "
                             "mmsegmentation's published DeepLabV3+ configs; flags given beside it override it, each "
                             "said once" + default_of("recipe"))
    recipe.add_argument("--list-recipes", action=_ListRecipes, nargs=0,
                        help="list the recipes with their published figures and test commands, and exit")
    data = parser.add_argument_group("Data")
    data.add_argument("--dataset", choices=DATASETS, default=None,
                      help="cityscapes, PASCAL voc 2012, or a folder of your own (with --classes)"
                      + default_of("dataset"))
    data.add_argument("--data-root", "--data_root", type=Path, default=None,
                      help=DATA_ROOT_HELP + default_of("data_root"))
    data.add_argument("--classes", type=Path, default=None,
                      help="class table (JSON or CSV) of --dataset folder; see docs/own-data.md")
    data.add_argument("--train-split", default=None,
                      help="the split trained on, e.g. aug for VOC's augmented set" + default_of("train_split"))
    data.add_argument("--crop-size", "--crop_size", type=cli.crop_side, nargs="+", default=None, metavar="SIZE",
                      help="training crop: one size (square) or height width" + default_of("crop_size"))
    data.add_argument("--scale-range", "--scale_range", type=cli.positive_float, nargs=2, default=None,
                      metavar=("MIN", "MAX"), help="random scale range of training images" + default_of("scale_range"))
    data.add_argument("--workers", type=cli.non_negative_int, default=None,
                      help="loader processes per training process (default: on a GPU, the CPUs this process may use "
                           "less one, at most 16, shared among the machine's training processes; 1 on the CPU)")
    data.add_argument("--jitter-on-device", action=argparse.BooleanOptionalAction, default=None,
                      help="colour jitter and normalisation of each batch on the training device instead of in the "
                           "loader workers (default: on for CUDA; the same random draws either way)")
    data.add_argument("--cache", action="store_true",
                      help="read training frames from the decoded cache (python -m cityscapes.cache, or segdata.cache "
                           "for other data sets) instead of decoding the files")
    data.add_argument("--class-weights", default=None, metavar="{none,median-frequency,inverse-frequency,FILE}",
                      help="weigh each class's pixels in the loss: median-frequency balancing (SegNet's), inverse "
                           "frequency, both counted once on the train masks, or a file of one weight per class"
                           + default_of("class_weights"))
    data.add_argument("--pipeline", choices=list(PIPELINES), default=None,
                      help="crop-first: this project's training transform (only the crop's pixels resized, padded "
                           "before normalising); mmseg: mmsegmentation's, exactly (the whole frame resized by OpenCV "
                           "to --resize-scale x the drawn ratio, padded after normalising)" + default_of("pipeline"))
    data.add_argument("--resize-scale", type=cli.positive_int, nargs=2, default=None, metavar=("W", "H"),
                      help="--pipeline mmseg: the scale mmsegmentation's RandomResize multiplies by the drawn ratio "
                           "(default: 2048 1024 with --pipeline mmseg)")
    data.add_argument("--crop-max-class-share", type=class_share, default=None,
                      help="re-draw a crop (up to 10 times) while one class covers this share of its labelled pixels "
                           "or more (mmsegmentation's cat_max_ratio; 1: no rule)" + default_of("crop_max_class_share"))
    data.add_argument("--color-augmentation", choices=list(COLOR_AUGMENTATIONS), default=None,
                      help="jitter: colour jitter of brightness, contrast and saturation (+-25%%); photometric: "
                           "mmsegmentation's PhotoMetricDistortion, exactly" + default_of("color_augmentation"))
    data.add_argument("--batch-size", "--batch_size", type=cli.positive_int, default=None,
                      help="training batch size in total, split over the processes" + default_of("batch_size"))
    data.add_argument("--val-batch-size", "--val_batch_size", type=cli.positive_int, default=DEFAULTS.val_batch_size,
                      help="validation batch per process")

    model = parser.add_argument_group("Model")
    model.add_argument("--arch", choices=list(ARCHITECTURES), default=None,
                       help="deeplabv3plus: torchvision ResNet, dense ASPP and decoder; mmseg: mmsegmentation's "
                            "deeplabv3plus_r*-d8 (ResNetV1c deep stem, depthwise-separable ASPP head)"
                       + default_of("arch"))
    model.add_argument("--backbone", choices=list(BACKBONES), default=None,
                       help="ResNet depth" + default_of("backbone"))
    model.add_argument("--output-stride", "--output_stride", type=int, choices=sorted(DILATION_BY_OUTPUT_STRIDE),
                       default=None, help="backbone output stride" + default_of("output_stride"))
    model.add_argument("--aux-loss-weight", "--aux_loss_weight", type=cli.non_negative_float, default=None,
                       help="weight of the auxiliary FCN head's loss on layer3 (training only; 0: no auxiliary head)"
                       + default_of("aux_loss_weight"))
    model.add_argument("--init-weights", "--init_weights", type=Path, default=None,
                       help="fine-tune from a checkpoint's weights (ours or converted, e.g. mmsegmentation's)")
    model.add_argument("--pretrained-backbone", "--pretrained_backbone", default=None,
                       help="'imagenet' (torchvision's ImageNet ResNet, downloaded), 'open-mmlab' (mmsegmentation's "
                            "ImageNet ResNetV1c for --arch mmseg, downloaded and converted once), 'none', or a path "
                            "to a ResNet state dict" + default_of("pretrained_backbone"))
    model.add_argument("--align-corners", action=argparse.BooleanOptionalAction, default=None,
                       help="align corners in every bilinear resize after the backbone (mmsegmentation's 769x769 "
                            "configs)" + default_of("align_corners"))

    optimization = parser.add_argument_group("Optimization")
    length = optimization.add_mutually_exclusive_group()
    length.add_argument("--iters", type=cli.positive_int, default=None,
                        help=f"training iterations (default {DEFAULT_ITERATIONS}, or the resumed run's; more on "
                             "--resume makes the run longer, the poly LR computed for the new length)")
    length.add_argument("--epochs", type=cli.positive_int, default=None, help="training epochs instead of --iters")
    optimization.add_argument(
        "--lr", type=cli.positive_float, default=None, help="peak learning rate of the head" + default_of("lr")
    )
    optimization.add_argument("--backbone-lr-multiplier", type=cli.non_negative_float, default=None,
                              help="backbone LR = lr x this" + default_of("backbone_lr_multiplier"))
    optimization.add_argument(
        "--momentum", type=cli.non_negative_float, default=None, help="SGD momentum" + default_of("momentum")
    )
    optimization.add_argument("--weight-decay", "--weight_decay", type=cli.non_negative_float, default=None,
                              help="weight decay (on norm weights and biases too with --norm-bias-decay)"
                              + default_of("weight_decay"))
    optimization.add_argument("--norm-bias-decay", action=argparse.BooleanOptionalAction, default=None,
                              help="weight decay on norm weights and biases as well (mmsegmentation's configs)"
                              + default_of("norm_bias_decay"))
    optimization.add_argument("--min-lr", type=cli.non_negative_float, default=None,
                              help="the LR the poly schedule ends at (mmengine's PolyLR eta_min)"
                              + default_of("min_lr"))
    optimization.add_argument("--loss-average", choices=list(LOSS_AVERAGES), default=None,
                              help="average the pixels' cross-entropy over the labelled pixels, or over all pixels "
                                   "of the batch with ignored ones counting zero (as mmsegmentation's configs)"
                              + default_of("loss_average"))
    optimization.add_argument("--power", type=cli.positive_float, default=None,
                              help="poly LR power" + default_of("power"))
    optimization.add_argument("--warmup-iters", type=cli.non_negative_int, default=None,
                              help="linear LR warm-up iterations" + default_of("warmup_iters"))
    cli.add_precision_flags(optimization, "; or the resumed run's")

    runtime = parser.add_argument_group("Runtime")
    runtime.add_argument("--device", type=cli.device, default=cli.default_device(), help="cuda, cuda:N or cpu")
    runtime.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                         help="channels_last memory format (default: on a GPU that runs bfloat16 natively, or the "
                              "resumed run's)")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the model")
    runtime.add_argument("--deterministic", action="store_true",
                         help="deterministic kernels (slower; no cuDNN autotuning)")
    runtime.add_argument(
        "--seed", type=int, default=None, help="random seed (data order, augmentation, init)" + default_of("seed")
    )
    runtime.add_argument("--save-dir", "--save_dir", type=Path, default=None,
                         help="folder of runs (default: saved, or the resumed run's parent folder)")
    runtime.add_argument("--run-name", "--run_name", default=None,
                         help="run folder name (default dlv3p_{backbone}_os{stride}, or the resumed run's)")
    runtime.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from (saved/{run}/last.pth)")
    runtime.add_argument("--overwrite", action="store_true",
                         help="replace the run already in the run folder (without it, such a run is never touched)")
    runtime.add_argument("--val-frames", type=cli.positive_int, default=None,
                         help="validate during training on this many val frames, spread evenly over the split and "
                              "the same each time (default: all; test_dlv3p.py scores the whole split), or the "
                              "resumed run's")
    validation = runtime.add_mutually_exclusive_group()
    validation.add_argument("--val-every", "--val_every", type=cli.positive_int, default=None,
                            help="validate every N epochs (and at the end)" + default_of("val_every"))
    validation.add_argument("--val-interval", "--val_interval", type=cli.positive_int, default=None,
                            help="validate every N iterations instead (at the end of the epoch that reaches each "
                                 "multiple of N), e.g. 8000 as mmsegmentation's 80k schedule")
    runtime.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                         help="write TensorBoard logs to {run}/tb (default: on when the tensorboard package is "
                              "installed: pip install -r requirements-tensorboard.txt)")
    runtime.add_argument("--preview-frames", type=cli.non_negative_int, default=DEFAULTS.preview_frames,
                         help="val frames shown as image | prediction | ground truth in TensorBoard at each validation")
    runtime.add_argument("--log-every", "--log_every", type=cli.positive_int, default=DEFAULTS.log_every,
                         help="look at the loss (progress bar, non-finite check) every N iterations")

    distributed = parser.add_argument_group("Distributed (launch with torchrun)")
    distributed.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=DEFAULTS.sync_bn,
                             help="SyncBatchNorm when training on several CUDA devices")
    return parser
