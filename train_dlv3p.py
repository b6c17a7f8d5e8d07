"""Train DeepLabV3+ on Cityscapes, PASCAL VOC or your own data (or the synthetic demo set).

    python train_dlv3p.py --backbone resnet50 --output_stride 8
    torchrun --nproc_per_node 4 train_dlv3p.py --backbone resnet50 --output_stride 8

Defaults follow the common ResNet DeepLabV3+ Cityscapes recipe: 80k iterations,
batch 8 (in total, over all processes), 768x768 crops of images scaled by
0.5-2.0, SGD lr 0.01 momentum 0.9 weight decay 5e-4, poly LR (power 0.9) after
a linear warm-up, ImageNet-pretrained backbone, SyncBN on multiple GPUs; the
model predicts the classes of the data set's class table (Cityscapes: 19).
Small data sets want a shorter recipe: docs/own-data.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from deeplabv3plus import cli, datasets, run, training
from deeplabv3plus.backbone import BACKBONES, DILATION_BY_OUTPUT_STRIDE
from deeplabv3plus.checkpoint import checkpoint_classes
from deeplabv3plus.distributed import DistributedContext, init_distributed_mode
from deeplabv3plus.engine import FitConfig, TrainState, fit
from deeplabv3plus.model import ARCHITECTURES
from deeplabv3plus.precision import fast_by_default, precision_from_flags
from deeplabv3plus.run_folder import RunFolder, run_location
from segdata.flags import ignoring_interrupts, log_to_terminal
from segdata.loading import default_workers

log = logging.getLogger("train_dlv3p")


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(prog="train_dlv3p.py", description=__doc__.splitlines()[0])
    recipe = lambda key: f" (default: {run.RUN_DEFAULTS[key]}, or the resumed run's)"  # noqa: E731
    kept = lambda key: f" (default: {run.KEPT_DEFAULTS[key]}, or the resumed run's)"  # noqa: E731
    data = parser.add_argument_group("Data")
    data.add_argument("--dataset", choices=datasets.DATASETS, default=None,
                      help="cityscapes, PASCAL voc 2012, or a folder of your own (with --classes)" + recipe("dataset"))
    data.add_argument("--data-root", "--data_root", type=Path, default=None,
                      help=datasets.DATA_ROOT_HELP + kept("data_root"))
    data.add_argument("--classes", type=Path, default=None,
                      help="class table (JSON or CSV) of --dataset folder; see docs/own-data.md")
    data.add_argument("--train-split", default=None,
                      help="the split trained on, e.g. aug for VOC's augmented set" + recipe("train_split"))
    data.add_argument("--crop-size", "--crop_size", type=cli.crop_side, nargs="+", default=None, metavar="SIZE",
                      help="training crop: one size (square) or height width" + recipe("crop_size"))
    data.add_argument("--scale-range", "--scale_range", type=cli.positive_float, nargs=2, default=None,
                      metavar=("MIN", "MAX"), help="random scale range of training images" + recipe("scale_range"))
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
                           + recipe("class_weights"))
    data.add_argument("--batch-size", "--batch_size", type=cli.positive_int, default=None,
                      help="training batch size in total, split over the processes" + recipe("batch_size"))
    data.add_argument("--val-batch-size", "--val_batch_size", type=cli.positive_int, default=1,
                      help="validation batch per process")

    model = parser.add_argument_group("Model")
    model.add_argument("--arch", choices=list(ARCHITECTURES), default=None,
                       help="deeplabv3plus: torchvision ResNet, dense ASPP and decoder; mmseg: mmsegmentation's "
                            "deeplabv3plus_r*-d8 (ResNetV1c deep stem, depthwise-separable ASPP head)" + recipe("arch"))
    model.add_argument("--backbone", choices=list(BACKBONES), default=None, help="ResNet depth" + recipe("backbone"))
    model.add_argument("--output-stride", "--output_stride", type=int, choices=sorted(DILATION_BY_OUTPUT_STRIDE),
                       default=None, help="backbone output stride" + recipe("output_stride"))
    model.add_argument("--aux-loss-weight", "--aux_loss_weight", type=cli.non_negative_float, default=None,
                       help="weight of the auxiliary FCN head's loss on layer3 (training only; 0: no auxiliary head)"
                       + recipe("aux_loss_weight"))
    model.add_argument("--init-weights", "--init_weights", type=Path, default=None,
                       help="fine-tune from a checkpoint's weights (ours or converted, e.g. mmsegmentation's)")
    model.add_argument("--pretrained-backbone", "--pretrained_backbone", default=None,
                       help="'imagenet' (torchvision download), 'none', or a path to a ResNet state dict"
                       + kept("pretrained_backbone"))

    optimization = parser.add_argument_group("Optimization")
    length = optimization.add_mutually_exclusive_group()
    length.add_argument("--iters", type=cli.positive_int, default=None,
                        help=f"training iterations (default {run.DEFAULT_ITERATIONS}, or the resumed run's; more on "
                             "--resume makes the run longer, the poly LR computed for the new length)")
    length.add_argument("--epochs", type=cli.positive_int, default=None, help="training epochs instead of --iters")
    optimization.add_argument(
        "--lr", type=cli.positive_float, default=None, help="peak learning rate of the head" + recipe("lr")
    )
    optimization.add_argument("--backbone-lr-multiplier", type=cli.non_negative_float, default=None,
                              help="backbone LR = lr x this" + recipe("backbone_lr_multiplier"))
    optimization.add_argument(
        "--momentum", type=cli.non_negative_float, default=None, help="SGD momentum" + recipe("momentum")
    )
    optimization.add_argument("--weight-decay", "--weight_decay", type=cli.non_negative_float, default=None,
                              help="weight decay (not applied to norm weights and biases)" + recipe("weight_decay"))
    optimization.add_argument("--power", type=cli.positive_float, default=None, help="poly LR power" + recipe("power"))
    optimization.add_argument("--warmup-iters", type=cli.non_negative_int, default=None,
                              help="linear LR warm-up iterations" + recipe("warmup_iters"))
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
        "--seed", type=int, default=None, help="random seed (data order, augmentation, init)" + recipe("seed")
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
                            help="validate every N epochs (and at the end)" + kept("val_every"))
    validation.add_argument("--val-interval", "--val_interval", type=cli.positive_int, default=None,
                            help="validate every N iterations instead (at the end of the epoch that reaches each "
                                 "multiple of N), e.g. 8000 as mmsegmentation's 80k schedule")
    runtime.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                         help="write TensorBoard logs to {run}/tb (default: on when the tensorboard package is "
                              "installed: pip install -r requirements-tensorboard.txt)")
    runtime.add_argument("--preview-frames", type=cli.non_negative_int, default=4,
                         help="val frames shown as image | prediction | ground truth in TensorBoard at each validation")
    runtime.add_argument("--log-every", "--log_every", type=cli.positive_int, default=20,
                         help="look at the loss (progress bar, non-finite check) every N iterations")

    distributed = parser.add_argument_group("Distributed (launch with torchrun)")
    distributed.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=True,
                             help="SyncBatchNorm when training on several CUDA devices")
    return parser


def resolve_args(args: argparse.Namespace, context: DistributedContext,
                 checkpoint: dict | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The run's settings (see deeplabv3plus.run) filled into ``args``, checked against each other (FlagError
    names the flag and the fix); also what a resume changed, in words."""
    keys = [*run.RUN_DEFAULTS, *run.KEPT_DEFAULTS, *run.LENGTH_KEYS]
    settings, changes = run.resolve_run_settings({key: getattr(args, key) for key in keys}, checkpoint, args.resume,
                                                 run.FAST_DEFAULTS if fast_by_default(context.device) else None)
    vars(args).update(settings)
    args.data_root = Path(args.data_root).resolve()  # recorded absolute: --resume alone works from any folder
    args.init_weights = None if args.init_weights is None else Path(args.init_weights)
    args.classes = None if args.classes is None else Path(args.classes)
    args.scale_range = list(cli.scale_range(args.scale_range))
    run.check_batch_size(args.batch_size, context.world_size)
    training.check_tensorboard(args.tensorboard)
    if args.jitter_on_device is None:
        args.jitter_on_device = context.device.type == "cuda"
    if args.workers is None:
        args.workers = default_workers(context.device.type, context.local_world_size)
    args.save_dir, args.run_name = run_location(args.save_dir, args.run_name, args.resume, args.backbone,
                                                args.output_stride)
    return args, changes


def build_criterion(args: argparse.Namespace) -> torch.nn.Module:
    """The loss: cross-entropy over labelled pixels (weighted per class with --class-weights), plus --aux-loss-weight
    x the auxiliary head's."""
    return training.build_criterion(args.aux_loss_weight, args.class_weight_values)


def main(args: argparse.Namespace) -> int:
    log_to_terminal("train_dlv3p")
    context = init_distributed_mode(args.device)
    folder = None
    try:
        checkpoint = training.load_resume_point(args.resume) if args.resume else None
        given = cli.given_flags(args, get_args_parser())
        args, changes = resolve_args(args, context, checkpoint)
        precision = precision_from_flags(args.amp, args.amp_dtype, args.device)  # decided once, passed down
        args.amp_dtype = precision.name
        folder = RunFolder.claim(args.save_dir, args.run_name, args.resume, args.overwrite, lock=context.is_main)
        classes = datasets.class_table(args.dataset, args.classes, checkpoint and checkpoint_classes(checkpoint),
                                       args.resume)
        train_set, val_set = datasets.open_training_splits(args.dataset, args.data_root, args.train_split, classes,
                                                           args.crop_size, args.scale_range, args.jitter_on_device,
                                                           args.cache)
        fresh = not args.resume
        if fresh:  # a resumed run keeps its crop
            args.crop_size = list(training.crop_for_frames(args.crop_size, train_set.image_sizes(), args.scale_range,
                                                           "crop_size" in given))
            train_set.transforms.crop_size = tuple(args.crop_size)
        args.class_weight_values = (training.class_weights(args.class_weights, train_set, args.workers) if fresh
                                    else checkpoint["args"].get("class_weight_values"))
        log.info("data: %s; %s", training.describe_split(train_set), training.describe_split(val_set))
        validated = training.validation_frames(val_set, args.val_frames)
        train_loader, val_loader = training.build_loaders(train_set, validated, args.batch_size, args.val_batch_size,
                                                          args.workers, args.seed, context)
        total_iterations = args.iters if args.iters is not None else args.epochs * len(train_loader)
        args.warmup_iters = training.clamp_warmup(args.warmup_iters, total_iterations)
        torch.manual_seed(args.seed)
        model = training.build_training_model(
            vars(args), classes.num_classes, args.pretrained_backbone if fresh and not args.init_weights else None,
            args.init_weights if fresh else None, context, args.sync_bn, args.channels_last)
        optimizer, scheduler, scaler = training.build_optimizer(model, vars(args), total_iterations, context.device,
                                                                precision)
        state = TrainState() if fresh else training.resume_state(checkpoint, args.resume, model, optimizer,
                                                                 scheduler, scaler)
    except (FileNotFoundError, ValueError, RuntimeError, KeyboardInterrupt) as error:
        with ignoring_interrupts():
            if folder is not None:
                folder.release()
            return cli.report_error(error)
    try:
        return train(args, context, folder, (train_set, val_set), (train_loader, val_loader), classes,
                     (model, optimizer, scheduler, scaler), state, precision, given, changes, total_iterations)
    finally:
        folder.release()


def train(args: argparse.Namespace, context: DistributedContext, folder: RunFolder, splits: tuple, loaders: tuple,
          classes, parts: tuple, state: TrainState, precision, given: dict, changes: list[str],
          total_iterations: int) -> int:
    """The run itself, in its claimed folder: record it, fit, report. Any stop before the first checkpoint leaves
    nothing (a second Ctrl-C included); a stop after it leaves last.pth to continue from."""
    (train_set, val_set), (train_loader, val_loader), (model, optimizer, scheduler, scaler) = splits, loaders, parts
    fresh = not args.resume
    training.configure_kernels(context.device, args.deterministic)
    training_log = None
    try:
        if context.is_main:
            folder.prepare(replace=args.overwrite and fresh)
            protocol = training.validation_protocol(val_loader.dataset, args.output_stride, args.amp_dtype,
                                                    args.channels_last, datasets.ground_truth_of(args.dataset),
                                                    len(val_set))
            folder.record({**cli.plain_values(args), "val_protocol": protocol.as_dict(),
                           "class_table": classes.as_dict()},
                          None if fresh else run.resume_record(given, state.iteration, changes))
            for change in changes:
                log.info("resumed with a change: %s", change)
            log.info("run %s: %d iterations (%d per epoch), batch %d on %d process(es), device %s (%s, %s, %d loader "
                     "workers), from %s", folder.path, total_iterations, len(train_loader), args.batch_size,
                     context.world_size, context.device, precision.name or "float32",
                     "channels_last" if args.channels_last else "contiguous", args.workers,
                     "the start" if fresh else f"iteration {state.iteration}")
            training_log = training.open_training_log(folder.path, args.tensorboard, state.iteration)
        eval_model, train_model = training.wrap_for_training(model, args.compile, context)
        config = FitConfig(
            total_iterations=total_iterations, run_dir=folder.path, num_classes=classes.num_classes,
            class_names=classes.names, val_every=args.val_every, val_interval=args.val_interval, seed=args.seed,
            rank=context.rank, precision=precision, channels_last=args.channels_last, log_every=args.log_every,
            batch_transform=train_set.transforms.batch_step() if args.jitter_on_device else None,
            checkpoint_extra={"args": cli.plain_values(args), "classes": classes.as_dict()},
            on_log=None if training_log is None else training_log.training,
            on_validation=None if training_log is None else training.show_validation(
                training_log, val_set, args.preview_frames, classes, context.device, precision.dtype))
        state = fit(train_model, build_criterion(args), optimizer, scheduler, scaler, train_loader, val_loader,
                    context.device, config, state)
    except BaseException as error:
        with ignoring_interrupts():
            if training_log is not None:
                training_log.close()
                training_log = None
            if context.is_main and fresh:
                folder.discard_unstarted()
            if isinstance(error, (FloatingPointError, OSError, ValueError, KeyboardInterrupt)) or (
                    isinstance(error, RuntimeError) and "DataLoader worker" in str(error)):
                return folder.report_stop(error)
            raise
    finally:
        if training_log is not None:
            training_log.close()
        if context.enabled:
            torch.distributed.destroy_process_group()
    if context.is_main and state.history:
        training.report_finished(state, folder.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
